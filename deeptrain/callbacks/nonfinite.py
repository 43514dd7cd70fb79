"""Stop (or skip the batch) at the first NaN/inf training loss, before it reaches the weights.

The check reads the loss on the host (``loss.item()``) before ``backward``: one device sync
per step. On the CPU that costs nothing measurable; on a GPU it is one sync per step, the
same as the progress bar's ``train_loss`` already causes, and it is what makes the guard
exact: a non-finite loss never produces a step, and a non-finite model is never saved.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from deeptrain.training.checkpoint_io import wait_for_checkpoints
from deeptrain.training.runs import newest_file

ACTIONS = ("stop", "skip")


class NonFiniteLossError(FloatingPointError):
    """The training loss (or, at a checkpoint, a weight) became NaN or infinite."""


def _last_good_checkpoint(trainer: L.Trainer) -> Optional[str]:
    """The newest checkpoint file of the trainer's ``ModelCheckpoint`` callbacks, if any exists."""
    wait_for_checkpoints(trainer)  # the last save may still be in the writer's queue
    newest = newest_file(p for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)
                         for p in (cb.last_model_path, cb.best_model_path))
    return str(newest) if newest else None


def advice(trainer: L.Trainer, what: str) -> str:
    checkpoint = _last_good_checkpoint(trainer)
    kept = (f"the last good checkpoint, {checkpoint}, is kept (resume with --ckpt_path last)" if checkpoint
            else "no checkpoint was written yet")
    return (
        f"{what} at global step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
        f"{trainer.fit_loop.epoch_loop.batch_idx} of the epoch); training stopped and {kept}. Likely causes: "
        "(1) the learning rate is too high: find a good one with `deeptrain lr_find --config <your config>` or "
        "lower --model.optimizer.init_args.lr; (2) exploding gradients: clip them with --trainer.gradient_clip_val 1.0 "
        "(or add batch norm, --model.net.norm batch); (3) NaN or inf in the inputs. "
        "To skip such batches instead: --nonfinite.action skip"
    )


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether no element of ``tensors`` is NaN or infinite, read on the host once."""
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


class NonFiniteLossGuard(L.Callback):
    """Stops training at the first NaN/inf loss, or skips such batches and counts them.

    ``stop`` raises :class:`NonFiniteLossError` before ``backward``: the weights and the
    optimizer are untouched, nothing is saved, so ``last.ckpt`` stays the last good state; the
    message names the step, the epoch and the likely causes. ``skip`` lets ``backward`` run,
    then drops the gradients (``zero_grad(set_to_none=True)``) so the optimizer step leaves
    every parameter and its optimizer state (momentum, Adam moments) as they were; the batch
    still counts as a step for the LR schedule. Skipped batches are counted, logged as
    ``nonfinite_skipped`` and saved in checkpoints; more than ``max_skipped`` of them stops
    training. Under DDP the ranks agree (one rank's NaN makes every rank stop or skip).

    Whatever the action, a checkpoint is refused when a weight is not finite (a finite loss
    with infinite gradients can still blow the weights up), so no NaN model overwrites
    ``last.ckpt``.

    Args:
        action: ``stop`` or ``skip``.
        max_skipped: with ``skip``, stop when more batches than this were skipped (None: never).

    Examples:
        >>> trainer = L.Trainer(callbacks=[NonFiniteLossGuard("skip", max_skipped=100)])  # doctest: +SKIP
    """

    def __init__(self, action: Literal["stop", "skip"] = "stop", max_skipped: Optional[int] = None):
        if action not in ACTIONS:
            raise ValueError(f"nonfinite.action = {action!r} is not valid; valid choices: {', '.join(ACTIONS)}")
        if max_skipped is not None and (not isinstance(max_skipped, int) or max_skipped < 0):
            raise ValueError(f"nonfinite.max_skipped must be None or an int >= 0, got {max_skipped!r}")
        self.action, self.max_skipped = action, max_skipped
        self.skipped = 0
        self._drop_step = False  # a non-finite loss since the last optimizer step (sticky over accumulation)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        value = loss.detach()
        # the one host sync per step; .item() on the scalar is ~4x cheaper in a training loop than isfinite()
        value = value.item() if value.numel() == 1 else value.float().abs().sum().item()
        bad = trainer.strategy.reduce_boolean_decision(not math.isfinite(value), all=False)  # any rank
        if not bad:
            return
        what = f"non-finite training loss ({value if not math.isfinite(value) else 'on another rank'})"
        if self.action == "stop":
            raise NonFiniteLossError(advice(trainer, what))
        self._drop_step = True

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if not self._drop_step:
            return
        self._drop_step = False
        optimizer.zero_grad(set_to_none=True)  # torch optimizers skip parameters without a gradient
        self.skipped += 1
        message = (f"skipped a batch with a non-finite loss at global step {trainer.global_step} "
                   f"(epoch {trainer.current_epoch}); {self.skipped} skipped so far")
        (rank_zero_warn if self.skipped == 1 else rank_zero_info)(message)
        if self.max_skipped is not None and self.skipped > self.max_skipped:
            raise NonFiniteLossError(advice(trainer, f"more than nonfinite.max_skipped = {self.max_skipped} batches "
                                                     "with a non-finite loss"))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.action == "skip":
            pl_module.log("nonfinite_skipped", float(self.skipped), on_step=False, on_epoch=True, reduce_fx="max")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # one pass over the weights per save, not per step, and one host sync, not one per tensor
        if not all_finite([p.detach() for p in pl_module.parameters()]):
            raise NonFiniteLossError(advice(trainer, "non-finite weights (the checkpoint was not written)"))

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
