"""A cheaper stand-in for Lightning's default profiler, swapped in by the CLI.

Lightning opens its profiler around every hook call, about 100 times per training step; its
default, ``PassThroughProfiler``, profiles nothing but still builds a generator-based context
manager each time (~1.4 us on a 2-core EPYC). At batch 32 that is ~1.8 % of a step of the
CIFAR-10 baseline (benchmarks/README.md, "Paired steps"); on a GPU, where the step itself is
short, a bigger share. (The CLI's other per-step saving of this kind, the progress bar redrawn
every 10th step, is the ``TQDM_MINITERS`` default in :func:`deeptrain.cli.build_cli`.)
"""

from __future__ import annotations

import contextlib

import lightning as L
from lightning.pytorch.profilers import PassThroughProfiler


class NoProfiler(PassThroughProfiler):
    """Lightning's default profiler (profiles nothing), handing out one shared no-op context."""

    _NOTHING = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return self._NOTHING


def swap_in_no_profiler(trainer: L.Trainer) -> None:
    """Replace the trainer's profiler by :class:`NoProfiler` if it is Lightning's default (never one the user chose)."""
    if type(trainer.profiler) is PassThroughProfiler:
        trainer.profiler = NoProfiler()
