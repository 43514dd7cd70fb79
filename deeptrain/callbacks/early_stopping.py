"""Early stopping that hands back the best weights (Keras' ``restore_best_weights``)."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping as _LightningEarlyStopping
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from deeptrain._lightning import CachedStateKey
from deeptrain.nn.sparsity import load_state_dict_any_, plain_state_dict
from deeptrain.training.checkpoint_io import wait_for_checkpoints


class EarlyStopping(CachedStateKey, _LightningEarlyStopping):
    """Lightning's ``EarlyStopping``, and at the end of ``fit`` the module holds the weights of
    the best monitored epoch, not the last one.

    Whenever the monitored metric improves (by ``min_delta``, as for stopping), a copy of the
    module's state dict (weights, BN statistics, normalizer buffers) is kept on the CPU; at
    ``on_fit_end`` it is loaded back. Unlike Keras, which restores only when it stops early,
    the weights are restored however ``fit`` ends (patience, ``max_epochs``, a threshold),
    so that a ``trainer.test(model, ...)`` right after ``fit`` always sees the best model.

    After a resume (``ckpt_path=...``) the in-memory copy is gone; if no later epoch
    improves, the weights come from the ``ModelCheckpoint`` that monitors the same
    metric (its ``best_model_path``), else they are left as they are, with a warning.

    Pruning masks (``ModelPruning``) are folded into the copy, so it loads whether or not
    the module is still pruned at the end.

    Args:
        restore_best_weights: keep and restore the best weights (False: Lightning's behaviour).
        monitor, **kwargs: Lightning's ``EarlyStopping`` (``patience``, ``mode``, ``min_delta``, ...).

    Examples:
        >>> early_stopping = EarlyStopping(monitor="val_loss", patience=20)
        >>> trainer = L.Trainer(callbacks=[early_stopping])  # doctest: +SKIP
        >>> trainer.fit(model, datamodule=dm)  # doctest: +SKIP
        >>> early_stopping.best_epoch  # the epoch whose weights the model now holds  # doctest: +SKIP
    """

    def __init__(self, monitor: str = "val_loss", restore_best_weights: bool = True, **kwargs: Any):
        super().__init__(monitor=monitor, **kwargs)
        self.restore_best_weights = restore_best_weights
        self.best_epoch: Optional[int] = None
        self._best_state: Optional[dict[str, torch.Tensor]] = None

    # Lightning checks in one of these two hooks (which one: check_on_train_epoch_end)
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        previous = self.best_score
        super().on_validation_end(trainer, pl_module)
        self._keep_if_improved(trainer, previous)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        previous = self.best_score
        super().on_train_epoch_end(trainer, pl_module)
        self._keep_if_improved(trainer, previous)

    def _keep_if_improved(self, trainer: L.Trainer, previous: torch.Tensor) -> None:
        # Lightning rebinds best_score exactly when the metric improves (by min_delta)
        if self.best_score is not previous:
            self.best_epoch = trainer.current_epoch
            if self.restore_best_weights:
                self._best_state = _cpu_copy(trainer.lightning_module.state_dict())

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.restore_best_weights:
            return
        state, source = self._best_state, f"epoch {self.best_epoch}"
        if state is None:
            state, source = self._state_from_checkpoint(trainer)
        if state is None:
            rank_zero_warn(f"EarlyStopping: no best weights to restore ({self.monitor} never improved in this fit); "
                           "the module keeps its last weights")
            return
        load_state_dict_any_(pl_module, state)
        rank_zero_info(f"EarlyStopping: restored the best weights ({source}, {self.monitor} = {float(self.best_score):.4f})")

    def _state_from_checkpoint(self, trainer: L.Trainer) -> tuple[Optional[dict[str, torch.Tensor]], str]:
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.monitor == self.monitor and callback.best_model_path:
                wait_for_checkpoints(trainer)  # it may still be in the background writer's queue
                checkpoint = torch.load(callback.best_model_path, map_location="cpu", weights_only=True)
                return checkpoint["state_dict"], callback.best_model_path
        return None, ""

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best_epoch = state_dict.get("best_epoch")


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in plain_state_dict(state).items()}
