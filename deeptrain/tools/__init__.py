"""Commands built on the library (``deeptrain <tool>``): diagnose, lr_find, schedules, ..."""
