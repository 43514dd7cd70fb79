"""Gradual magnitude pruning during training, on top of Lightning's ``ModelPruning``."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import ModelPruning
from lightning.pytorch.utilities import rank_zero_info
from torch.nn.utils import prune

from deeptrain.nn.sparsity import SCOPES, prunable_weights, sparsity_report


def _masked(module: Any) -> int:
    return int((module.weight_mask == 0).sum()) if hasattr(module, "weight_mask") else 0


def effective_numel(module: Any) -> int:
    return getattr(module, "weight_orig", module.weight).numel()


def cubic_sparsity(epoch: int, sparsity: float, start_epoch: int, pruning_epochs: int) -> float:
    """Target sparsity during epoch ``epoch`` (Zhu & Gupta, 2017):
    ``s_f * (1 - (1 - t/n)^3)`` with ``t = epoch - start_epoch + 1`` clipped to [0, n]:
    fast at first, when many weights are redundant, then slower."""
    t = min(max(epoch - start_epoch + 1, 0), pruning_epochs)
    return sparsity * (1.0 - (1.0 - t / pruning_epochs) ** 3)


class MagnitudePruning(ModelPruning):
    """Prunes the smallest-magnitude Linear weights a little more at the start of each epoch,
    up to ``sparsity`` after ``pruning_epochs`` epochs, and trains the survivors in between.

    Lightning's ``ModelPruning`` with the settings a sparse MLP wants: weights only (no
    biases, no normalization parameters), no lottery-ticket rewinding (its default resets
    the surviving weights to their initial values), a YAML-friendly cubic schedule, and
    pruning at the *start* of an epoch, so that the validation, the checkpoints and
    :class:`~deeptrain.callbacks.early_stopping.EarlyStopping` of that epoch see the same
    weights (``ModelPruning`` prunes at the end of the epoch, after validation). Masks
    stay on during training; checkpoints and the module after ``fit`` have plain weights.

    Each epoch's step prunes an absolute number of weights, ``round(s_e * N)`` minus those
    already masked, so a resumed run (whose checkpoint has no masks, only zeros) still
    lands on the scheduled sparsity. Logs ``sparsity`` (global, over the pruned layers).

    Args:
        sparsity: final fraction of zero weights in [0, 1).
        start_epoch: first epoch that prunes.
        pruning_epochs: number of epochs over which sparsity rises to ``sparsity``.
        scope: ``global`` (one magnitude threshold over all layers; big layers lose more)
            or ``layer`` (every layer at the same sparsity).
        include_head: prune the output layer too.
        verbose: 0, 1 (log overall sparsity) or 2 (per layer), as ``ModelPruning``; with
            ``scope: layer``, 1 and 2 log the overall sparsity.

    Note:
        Best-epoch selection (``EarlyStopping`` / ``ModelCheckpoint`` on ``val_loss``) may
        pick an epoch before the schedule ends, i.e. a less sparse model; let pruning end
        well before ``max_epochs`` or turn ``early_stopping.restore_best_weights`` off.

    Example (YAML, under ``trainer.callbacks``)::

        - class_path: deeptrain.callbacks.pruning.MagnitudePruning
          init_args: {sparsity: 0.8, start_epoch: 2, pruning_epochs: 5}
    """

    def __init__(
        self,
        sparsity: float = 0.8,
        start_epoch: int = 0,
        pruning_epochs: int = 5,
        scope: Literal["global", "layer"] = "global",
        include_head: bool = True,
        verbose: int = 0,
    ):
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        if scope not in SCOPES:
            raise ValueError(f"scope = {scope!r} is not valid; valid choices: {', '.join(SCOPES)}")
        if start_epoch < 0 or pruning_epochs < 1:
            raise ValueError(f"need start_epoch >= 0 and pruning_epochs >= 1, got {start_epoch} and {pruning_epochs}")
        super().__init__(
            pruning_fn="l1_unstructured",
            parameter_names=["weight"],
            use_global_unstructured=scope == "global",
            amount=self._amount,
            use_lottery_ticket_hypothesis=False,
            make_pruning_permanent=True,
            verbose=verbose,
        )
        self.sparsity, self.start_epoch, self.pruning_epochs = sparsity, start_epoch, pruning_epochs
        self.scope, self.include_head, self.verbose = scope, include_head, verbose
        self._layers: list[tuple[str, Any]] = []
        self._pending: list[int] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._layers = prunable_weights(pl_module, include_head=self.include_head)
        if not self._layers:
            raise ValueError(f"MagnitudePruning: {type(pl_module).__name__} has no Linear or Conv layer to prune")
        super().setup(trainer, pl_module, stage)

    def filter_parameters_to_prune(self, parameters_to_prune: Any = ()) -> list[tuple[Any, str]]:
        """The layers' weights only (ModelPruning's hook for choosing what to prune)."""
        return [(m, "weight") for _, m in self._layers]

    def _shortfall(self, epoch: int) -> list[int]:
        """Per layer, how many more weights the scheduled sparsity asks to mask (layer scope)."""
        target = cubic_sparsity(epoch, self.sparsity, self.start_epoch, self.pruning_epochs)
        return [max(0, round(target * effective_numel(m)) - _masked(m)) for _, m in self._layers]

    def _amount(self, epoch: int) -> int:
        """How many more weights to mask now, over all layers (ModelPruning's ``amount``)."""
        if self.scope == "layer":
            self._pending = self._shortfall(epoch)
            return sum(self._pending)
        target = cubic_sparsity(epoch, self.sparsity, self.start_epoch, self.pruning_epochs)
        total = sum(effective_numel(m) for _, m in self._layers)
        return max(0, round(target * total) - sum(_masked(m) for _, m in self._layers))

    def apply_pruning(self, amount: float) -> None:
        if self.scope == "global":
            return super().apply_pruning(amount)
        # ModelPruning would mask the same count in every layer; each layer needs its own
        for (_, module), count in zip(self._layers, self._pending):
            prune.l1_unstructured(module, name="weight", amount=count)
        if self.verbose:
            rank_zero_info(f"MagnitudePruning: sparsity {sparsity_report(self._layers)[1].sparsity:.2%}")

    # Prune before the epoch trains, not after it validated (see the class docstring).
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        amount = self._amount(pl_module.current_epoch)
        if amount:
            self.apply_pruning(amount)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _, total = sparsity_report(self._layers)
        pl_module.log("sparsity", total.sparsity, on_epoch=True)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass
