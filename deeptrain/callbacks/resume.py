"""What a checkpoint needs beyond Lightning's own state for a bitwise-exact resume.

Lightning restores the weights, the optimizer and scheduler states, the loop counters,
the callbacks' states (early stopping, checkpointing) and the train loader's position
(our :class:`~deeptrain.data.loader.InMemoryLoader` is stateful). Two things are missing:

1. The global RNG states (dropout, RReLU, augmentation draw from them).
2. The ``ReduceLROnPlateau`` step of the epoch a checkpoint was taken in. Lightning skips
   that step on the first epoch after a mid-epoch resume (``FitLoop.on_advance_end`` only
   steps plateau schedulers ``if not self.restarting``, because metrics are not in the
   checkpoint), and after resuming from a checkpoint taken at the end of an epoch it never
   runs that epoch's end again. Either way the schedule silently falls one step behind.
"""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn

from deeptrain.callbacks.rng_state import capture_rng_state, restore_rng_state


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _plateau_configs(trainer: L.Trainer) -> list[Any]:
    return [c for c in trainer.lr_scheduler_configs if c.reduce_on_plateau and c.interval == "epoch"]


def _epoch_done(trainer: L.Trainer) -> bool:
    """The training epoch ran its last batch (what ``FitLoop.on_advance_end`` tests before stepping
    epoch schedulers), from the loop's public progress counters."""
    progress = trainer.fit_loop.epoch_loop.batch_progress
    return progress.current.ready == trainer.num_training_batches or progress.is_last_batch


class ExactResume(L.Callback):
    """Saves the RNG states and the metrics in each checkpoint; on resume restores both and takes
    the plateau step that Lightning skips.

    With it, a fit interrupted anywhere (a kill after a periodic checkpoint, Ctrl-C, SIGTERM)
    and resumed with ``ckpt_path="last"`` ends with the same weights as an uninterrupted run,
    bitwise on CPU with ``Trainer(deterministic=True)``, whatever the schedule.

    - RNG: every rank's torch (CPU and CUDA), numpy and Python states are saved with each
      checkpoint (gathered under DDP) and restored in ``on_train_start``, just before the first
      resumed batch, so nothing between loading and training draws from them.
    - Metrics: the scalar ``callback_metrics`` are saved and put back where missing, so that a
      resume which skips a validation (from a checkpoint taken at its end) still has its values.
    - ``ReduceLROnPlateau`` (epoch interval): when Lightning is about to skip an epoch's plateau
      step because of the resume, this callback takes it, with the value of that epoch.

    Examples:
        >>> trainer = L.Trainer(callbacks=[ExactResume()], deterministic=True)  # doctest: +SKIP
        >>> trainer.fit(model, datamodule=dm, ckpt_path="last")  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._trainer: Optional[L.Trainer] = None
        self._loaded: Optional[dict[str, Any]] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer  # state_dict() gets no trainer argument

    # ---- saving ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        rng = capture_rng_state()
        if _world_size() > 1:
            # every rank dumps the checkpoint (rank 0 writes it), so this collective is matched
            ranks: list[Any] = [None] * _world_size()
            dist.all_gather_object(ranks, rng)
        else:
            ranks = [rng]
        return {"rng": ranks, "metrics": self._metrics()}

    def _metrics(self) -> dict[str, float]:
        """The scalar ``callback_metrics`` (val_loss, ...): what plateau schedulers and early stopping read."""
        if self._trainer is None:
            return {}
        return {k: float(v) for k, v in self._trainer.callback_metrics.items()
                if isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1)}

    # ---- resuming ----------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict  # applied in on_train_start: setup after loading may draw

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._loaded is None:
            return
        for key, value in self._loaded.get("metrics", {}).items():
            # as the uninterrupted run had them: a resume that skips a validation still has its values
            trainer.callback_metrics.setdefault(key, torch.tensor(value))
        self._restore_rng(trainer, self._loaded["rng"])
        self._loaded = None
        if trainer.fit_loop.resumed_on_epoch_end:  # saved after an epoch's last hook: its step is pending
            self._step_plateau(trainer, epoch=trainer.current_epoch - 1)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loop = trainer.fit_loop
        if loop.restarting and _epoch_done(trainer):  # Lightning will skip this step
            self._step_plateau(trainer, epoch=trainer.current_epoch)

    @staticmethod
    def _restore_rng(trainer: L.Trainer, ranks: list[dict[str, Any]]) -> None:
        if len(ranks) != trainer.world_size:
            rank_zero_warn(f"ExactResume: the checkpoint holds the RNG states of {len(ranks)} processes but this run "
                           f"has {trainer.world_size}; every rank resumes with rank 0's states")
        restore_rng_state(ranks[trainer.global_rank] if len(ranks) == trainer.world_size else ranks[0])

    @staticmethod
    def _step_plateau(trainer: L.Trainer, epoch: int) -> None:
        """What ``FitLoop.on_advance_end`` does for plateau schedulers at the end of ``epoch``."""
        for config in _plateau_configs(trainer):
            if (epoch + 1) % config.frequency:
                continue
            value = trainer.callback_metrics.get(config.monitor)
            if value is None:
                rank_zero_warn(f"ExactResume: {config.monitor!r} is not available after the resume; "
                               "the ReduceLROnPlateau step of this epoch is skipped")
                continue
            trainer.lightning_module.lr_scheduler_step(config.scheduler, value)
