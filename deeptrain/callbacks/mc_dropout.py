"""Deterministic vs MC-dropout predictions, scored side by side during validation and test."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torchmetrics import MetricCollection

from deeptrain.nn.mc_dropout import has_dropout, mc_predict
from deeptrain.training.uncertainty import METRIC_NAMES, uncertainty_metrics

MODES = ("det", "mc")


class MCDropoutEvaluation(L.Callback):
    """Scores the deterministic and the MC-dropout predictions of the same batches.

    For each mode, ``acc``, ``nll`` (``-log p_y``), ``brier`` (``sum_c (p_c - y_c)^2``),
    ``ece`` (15 equal-width confidence bins) and ``entropy`` (mean predictive entropy,
    nats), logged as ``val_det/acc``, ``val_mc/acc``, ... at the end of every
    ``every_n_epochs``-th validation and as ``test_det/...``, ``test_mc/...`` at test,
    where a side-by-side table is also printed. MC predictions come from
    :func:`~deeptrain.nn.mc_dropout.mc_predict` on the same batch, so the model's
    modes, weights and BN statistics are not disturbed.

    Args:
        every_n_epochs: evaluate MC dropout at the validation of every n-th epoch (0: never).
        val_samples: T at validation.
        test_samples: T at test.
        n_bins: confidence bins of the ECE.
        chunk_size: rows per forward pass of :func:`mc_predict` (the memory bound; default: its own).
        seed: if set, batch ``i`` draws its masks from seed ``seed + i`` (repeatable scores).

    Example (YAML, under ``trainer.callbacks``)::

        - class_path: deeptrain.callbacks.mc_dropout.MCDropoutEvaluation
          init_args: {every_n_epochs: 5, val_samples: 30, test_samples: 100}
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        val_samples: int = 30,
        test_samples: int = 100,
        n_bins: int = 15,
        chunk_size: Optional[int] = None,
        seed: Optional[int] = None,
    ):
        for key, value, low in (("every_n_epochs", every_n_epochs, 0), ("val_samples", val_samples, 1),
                                ("test_samples", test_samples, 1), ("n_bins", n_bins, 1), ("chunk_size", chunk_size, 1)):
            if value is not None and value < low:
                raise ValueError(f"{key} must be >= {low}, got {value}")
        self.every_n_epochs, self.val_samples, self.test_samples = every_n_epochs, val_samples, test_samples
        self.n_bins, self.chunk_size, self.seed = n_bins, chunk_size, seed
        self._metrics: Optional[dict[str, MetricCollection]] = None
        self._running = False
        self.results: dict[str, dict[str, float]] = {}  # the last scores of each stage, e.g. results["test"]["mc/acc"]

    # ---- stage control ----------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not has_dropout(pl_module):
            name = type(pl_module).__name__
            rank_zero_warn(f"MCDropoutEvaluation: {name} has no dropout layer with p > 0; it does nothing")

    def _start(self, pl_module: L.LightningModule, active: bool) -> None:
        self._running = active and has_dropout(pl_module)
        self._metrics = None  # built at the first batch, when the number of classes is known

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        due = self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        self._start(pl_module, due and not trainer.sanity_checking)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(pl_module, True)

    # ---- accumulation ---------------------------------------------------------------------------
    def _update(self, pl_module: L.LightningModule, batch: Any, batch_idx: int, samples: int) -> None:
        x, y = batch[0], batch[1]
        det = pl_module(x).float().softmax(dim=-1)  # the loop put the module in eval mode: dropout is off
        seed = None if self.seed is None else self.seed + batch_idx
        mc, _ = mc_predict(pl_module, x, samples=samples, chunk_size=self.chunk_size, seed=seed)
        if self._metrics is None:
            self._metrics = {mode: uncertainty_metrics(det.shape[-1], self.n_bins).to(det.device) for mode in MODES}
        self._metrics["det"].update(det, y)
        self._metrics["mc"].update(mc, y)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._running:
            self._update(pl_module, batch, batch_idx, self.val_samples)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._running:
            self._update(pl_module, batch, batch_idx, self.test_samples)

    # ---- reporting --------------------------------------------------------------------------------
    def _finish(self, pl_module: L.LightningModule, stage: str) -> Optional[dict[str, float]]:
        if not self._running or self._metrics is None:
            return None
        scores = {f"{mode}/{k}": float(v) for mode in MODES for k, v in self._metrics[mode].compute().items()}
        # compute() has already reduced over processes
        pl_module.log_dict({f"{stage}_{k}": v for k, v in scores.items()}, sync_dist=False)
        self.results[stage] = scores
        self._running = False
        return scores

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        scores = self._finish(pl_module, "test")
        if scores is not None:
            rank_zero_info(format_table(scores, f"MC dropout, T = {self.test_samples} (test)"))


def format_table(scores: dict[str, float], title: str) -> str:
    """A deterministic | MC | change table of ``{"det/acc": ..., "mc/acc": ...}``."""
    lines = [title, f"{'metric':<8} {'deterministic':>13} {'MC dropout':>11} {'change':>8}"]
    for name in METRIC_NAMES:
        det, mc = scores[f"det/{name}"], scores[f"mc/{name}"]
        lines.append(f"{name:<8} {det:>13.4f} {mc:>11.4f} {mc - det:>+8.4f}")
    return "\n".join(lines)
