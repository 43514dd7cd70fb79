"""Checkpoints for resuming: ``last.ckpt`` every N steps and at every epoch end, and one on Ctrl-C / SIGTERM.

Why not ``ModelCheckpoint(monitor="val_loss", save_last=True)`` alone: since Lightning 2.6
it writes ``last.ckpt`` only when it also writes a top-k file, i.e. when the monitored metric
improves, so ``--ckpt_path last`` resumes from the best epoch rather than the last one.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any, Optional, Union

import lightning as L
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from deeptrain._lightning import CachedStateKey, request_graceful_stop, save_last_checkpoint

PathLike = Union[str, Path]  # as Lightning's own _PATH


class PeriodicCheckpoint(CachedStateKey, ModelCheckpoint):
    """Writes ``last.ckpt`` every ``every_n_train_steps`` optimizer steps and at the end of every epoch.

    A kill loses at most ``every_n_train_steps`` steps (and each write is atomic with
    :class:`~deeptrain.training.checkpoint_io.AtomicCheckpointIO`). The step that ends an
    epoch is not saved at batch end: Lightning resumes from such a checkpoint by skipping that
    epoch's validation (so early stopping and ``ReduceLROnPlateau`` would miss an epoch); the
    epoch-end save, after validation and early stopping, takes its place.

    Args:
        dirpath: folder of ``last.ckpt`` (default: Lightning's, ``<log_dir>/checkpoints``).
        every_n_train_steps: steps between saves; 0 saves at epoch ends only.

    Examples:
        >>> trainer = L.Trainer(callbacks=[PeriodicCheckpoint(every_n_train_steps=200)])  # doctest: +SKIP
        >>> trainer.fit(model, datamodule=dm, ckpt_path="last")  # resumes where it stopped  # doctest: +SKIP
    """

    def __init__(self, dirpath: Optional[PathLike] = None, every_n_train_steps: int = 500):
        if not isinstance(every_n_train_steps, int) or every_n_train_steps < 0:
            raise ValueError(f"last_checkpoint.every_n_train_steps must be an int >= 0 (0: epoch ends only), "
                             f"got {every_n_train_steps!r}")
        # save_top_k=0: only last.ckpt; no version counter: always the same file, overwritten
        super().__init__(dirpath=dirpath, save_last=True, save_top_k=0, every_n_train_steps=every_n_train_steps,
                         enable_version_counter=False)
        self.every_n_train_steps = every_n_train_steps

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        if not self.every_n_train_steps or trainer.global_step % self.every_n_train_steps:
            return  # not a saving step: the common case, decided before Lightning's own checks
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # saved at on_train_epoch_end, after validation
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Checkpoint callbacks run after EarlyStopping here, so its counters are up to date.
        save_last_checkpoint(self, trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass  # the epoch-end save follows; mid-epoch validations add nothing to resume from

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.fast_dev_run:  # Lightning 2.6 saves last.ckpt here even under fast_dev_run
            super().on_train_end(trainer, pl_module)


class InterruptCheckpoint(Checkpoint):
    """On Ctrl-C or SIGTERM, finishes the current batch, saves ``last-interrupted.ckpt`` and stops.

    Lightning turns SIGTERM into a stop at the next batch boundary (``SIGTERMException``);
    this callback does the same for the first Ctrl-C (a second one stops at once, without a
    checkpoint) and saves only on such a stop, so the checkpoint is taken between two steps
    and resumes exactly. Other exceptions (a bug, a non-finite loss) save nothing: the last
    periodic checkpoint stays the one to resume from. ``--ckpt_path last`` picks the newest of
    ``last*.ckpt``, so it finds this one; a later fit that completes removes it.

    Unlike Lightning's ``OnExceptionCheckpoint`` (which it otherwise resembles), its presence
    does not turn ``fit(ckpt_path=None)`` into ``ckpt_path="last"``: a run resumes only when asked.

    Args:
        dirpath: folder of the checkpoint (default: the ``ModelCheckpoint``'s folder).
        filename: file name without ``.ckpt``; it must start with ``last`` for ``ckpt_path="last"``.
        catch_sigint: make the first Ctrl-C a graceful stop.
    """

    def __init__(self, dirpath: Optional[PathLike] = None, filename: str = "last-interrupted", catch_sigint: bool = True):
        if not filename.startswith("last"):
            raise ValueError(f"interrupt.filename must start with 'last' (so that --ckpt_path last finds it), got {filename!r}")
        self._dirpath, self.filename = dirpath, filename
        self.dirpath: Optional[PathLike] = dirpath  # resolved when training starts
        self.catch_sigint = catch_sigint
        self._trainer: Optional[L.Trainer] = None
        self._previous_sigint: Any = None
        self.signum = signal.SIGTERM  # what stopped the run: Lightning's handler, or ours for SIGINT
        self.saved_path: Optional[str] = None

    @property
    def ckpt_path(self) -> Optional[str]:
        return None if self.dirpath is None else os.path.join(str(self.dirpath), self.filename + ".ckpt")

    def _resolve_dirpath(self, trainer: L.Trainer) -> None:
        folder = next((cb.dirpath for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)), None)
        self.dirpath = self._dirpath or folder or os.path.join(trainer.default_root_dir, "checkpoints")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trainer, self.signum = trainer, signal.SIGTERM
        self._resolve_dirpath(trainer)
        if self.catch_sigint and threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        trainer = self._trainer
        if trainer is None or trainer.received_sigterm:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        rank_zero_info("\nCtrl-C: stopping after this batch and saving a checkpoint (Ctrl-C again stops at once)")
        request_graceful_stop(trainer)  # the loops stop at the next batch boundary
        self.signum = signal.SIGINT

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_sigint()

    def on_exception(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._restore_sigint()
        exception = args[-1] if args else kwargs.get("exception")
        if not isinstance(exception, SIGTERMException) or trainer.sanity_checking:
            return
        if self.dirpath is None:
            self._resolve_dirpath(trainer)
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)  # full state: the run resumes from it
        self.saved_path = self.ckpt_path
        # read by deeptrain.cli.main to print where to resume from and pick the exit code
        exception.checkpoint_path = self.ckpt_path  # type: ignore[attr-defined]
        exception.signum = self.signum  # type: ignore[attr-defined]
        rank_zero_info(f"interrupted: saved {self.ckpt_path}; resume with the same command and --ckpt_path last")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # a fit that ran to its end superseded the interrupted state (teardown is not called on exceptions)
        if stage == "fit" and self.ckpt_path is not None:
            trainer.strategy.remove_checkpoint(self.ckpt_path)
