"""Commands built on the library (``deeptrain <tool>``): diagnose, lr-find, schedules, ..."""
