"""``deeptrain lr_find``: the chapter's learning-rate range test, with Lightning's ``Tuner.lr_find``.

Train for ``num_training`` steps while the learning rate grows exponentially from ``min_lr``
to ``max_lr`` (1e-5 to 10 over 500 steps, as in the chapter), and plot the smoothed loss
against the learning rate on a log axis. Two readings are printed:

- Lightning's suggestion: the learning rate where the loss falls fastest (steepest slope);
- the chapter's rule: about 10 times below the learning rate where the loss turns and starts
  to climb, taken here as the minimum of the smoothed loss.

The model and data come from the same YAML config as ``fit``; the sweep leaves the model
as it was (weights, optimizer state and ``model.lr``).

    deeptrain lr_find --config configs/cifar10/baseline.yaml --out lr_find.png \\
        --data.dataset image_folder --data.data_dir ../shared/data/cifar10-jpeg
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
from lightning.pytorch.tuner import Tuner

from deeptrain.training.module import Classifier

CHAPTER_FACTOR = 10.0
SMOOTHING_BETA = 0.98  # Lightning's _LRCallback(beta=0.98)
SKIP_BEGIN = 10  # first sweep points left out of both readings (Lightning's default for its suggestion)  # "typically about 10 times lower than the turning point"


@dataclass
class LRFindResult:
    """The sweep and its readings."""

    lrs: list[float]
    losses: list[float]  # the smoothed training loss (exponential moving average, beta = 0.98)
    suggestion: Optional[float]  # steepest descent (Lightning)
    turning_lr: Optional[float]  # where the smoothed loss is lowest, before it climbs
    chapter_lr: Optional[float]  # turning_lr / 10

    def report(self) -> str:
        def fmt(value: Optional[float]) -> str:
            return "n/a (too few points)" if value is None else f"{value:.3g}"

        return (
            f"steps: {len(self.lrs)}, lr {self.lrs[0]:.3g} -> {self.lrs[-1]:.3g}\n"
            f"suggested lr (Lightning, steepest descent of the loss): {fmt(self.suggestion)}\n"
            f"loss turns up at lr:                                    {fmt(self.turning_lr)}\n"
            f"chapter's rule (10x below the turning point):           {fmt(self.chapter_lr)}"
        )


def turning_point(lrs: Sequence[float], losses: Sequence[float], skip_begin: int = 0) -> Optional[float]:
    """The learning rate at the minimum of the (already smoothed) loss, ignoring non-finite values
    and the first ``skip_begin`` points (an average of a few batches is still one batch's noise)."""
    finite = [(loss, lr) for lr, loss in list(zip(lrs, losses))[skip_begin:] if math.isfinite(loss)]
    return min(finite)[1] if finite else None


def debias(losses: Sequence[float], start_step: int = 0, beta: float = SMOOTHING_BETA) -> list[float]:
    """Lightning's smoothed losses with the bias correction of an exponential moving average.

    Lightning (2.x) divides its running average at sweep step ``t`` (from 0) by
    ``1 - beta^(global_step + 1)`` where ``global_step = start_step + t + 1`` has already
    advanced, instead of by ``1 - beta^(t + 1)``: its first points come out low (x 0.505 at
    the first step, x 0.93 at the tenth), which draws a rise at the start of every curve. A
    test pins this formula, so a change in Lightning shows up as a failure, not as a wrong plot.
    """
    return [loss * (1 - beta ** (start_step + t + 2)) / (1 - beta ** (t + 1)) for t, loss in enumerate(losses)]


def find_lr(trainer: L.Trainer, model: L.LightningModule, datamodule: Optional[L.LightningDataModule] = None,
            min_lr: float = 1e-5, max_lr: float = 10.0, num_training: int = 500,
            early_stop_threshold: Optional[float] = 4.0, **loaders: Any) -> LRFindResult:
    """Run Lightning's LR range test and leave ``model`` as it was before.

    ``Tuner.lr_find`` restores the weights and optimizer from a checkpoint it takes first. It
    is called with ``update_attr=False``: with ``True`` it would write its own suggestion into
    ``model.lr``, which the Classifier then applies over the optimizer's lr in every later
    ``fit``. ``model.lr`` is put back anyway, should anything else change it.

    Args:
        trainer, model, datamodule: as for ``trainer.fit`` (or ``train_dataloaders=...``).
        min_lr, max_lr: ends of the exponential sweep.
        num_training: steps of the sweep.
        early_stop_threshold: stop once the smoothed loss exceeds this multiple of the best
            loss (None: never).
    """
    lr_before, start_step = getattr(model, "lr", None), trainer.global_step
    try:
        finder = Tuner(trainer).lr_find(
            model, datamodule=datamodule, min_lr=min_lr, max_lr=max_lr, num_training=num_training,
            early_stop_threshold=early_stop_threshold, update_attr=False, **loaders,
        )
    finally:
        if hasattr(model, "lr"):
            model.lr = lr_before
    if finder is None:
        raise RuntimeError("the LR finder did not run (it is skipped under trainer.fast_dev_run)")
    lrs = list(finder.results["lr"])
    losses = finder.results["loss"] = debias(finder.results["loss"], start_step)
    skip_begin = min(SKIP_BEGIN, max(0, len(lrs) - 3))  # for short sweeps too
    turning = turning_point(lrs, losses, skip_begin)
    suggestion = finder.suggestion(skip_begin=skip_begin) if len(lrs) > 2 else None
    return LRFindResult(lrs, losses, suggestion, turning, turning / CHAPTER_FACTOR if turning else None)


def plot_result(result: LRFindResult, title: str = "") -> Any:
    """Loss against learning rate (log axis) with the suggestion, the turning point and the chapter's rule."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.2))  # no pyplot: no global backend switch, nothing to close
    ax = figure.subplots()
    ax.plot(result.lrs, result.losses, lw=1.5, color="C0", label="smoothed training loss")
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss", title=title)
    finite = [loss for loss in result.losses if math.isfinite(loss)]
    if finite:  # show the descent in full, and only the start of the divergence
        low = min(finite)
        high = max(finite[: finite.index(low) + 1])
        ax.set_ylim(low - 0.05 * (high - low + 1e-3), high + 0.25 * (high - low + 1e-3))
    if result.suggestion:
        i = result.lrs.index(result.suggestion)
        ax.plot(result.suggestion, result.losses[i], "o", color="red", ms=8,
                label=f"Lightning's suggestion (steepest): {result.suggestion:.2g}")
    if result.turning_lr:
        ax.axvline(result.turning_lr, color="grey", ls=":", label=f"loss turns up: {result.turning_lr:.2g}")
        ax.axvline(result.chapter_lr, color="green", ls="--", label=f"chapter's rule (10x below): {result.chapter_lr:.2g}")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.2)
    figure.tight_layout()
    return figure


def lr_find(trainer: L.Trainer, model: Classifier, datamodule: L.LightningDataModule, min_lr: float = 1e-5,
            max_lr: float = 10.0, num_training: int = 500, early_stop_threshold: Optional[float] = 4.0,
            out: str = "lr_find.png") -> LRFindResult:
    """The learning-rate range test: loss against an exponentially growing learning rate, plotted.

    Trains the config's model for ``num_training`` steps while the learning rate grows from
    ``min_lr`` to ``max_lr``, prints Lightning's suggestion and the chapter's rule (10x below the
    turning point), and writes the plot. The model and data come from ``--config`` as for ``fit``.

    Args:
        min_lr: learning rate of the first step (> 0).
        max_lr: learning rate of the last step (> min_lr).
        num_training: steps of the sweep (>= 3).
        early_stop_threshold: stop once the smoothed loss exceeds this multiple of the best (None: never).
        out: PNG file to write.
    """
    if not 0 < min_lr < max_lr:
        raise ValueError(f"lr_find: need 0 < min_lr < max_lr, got min_lr={min_lr:g}, max_lr={max_lr:g}")
    if num_training < 3:
        raise ValueError(f"lr_find: num_training must be >= 3 steps, got {num_training}")
    if early_stop_threshold is not None and early_stop_threshold <= 1:
        raise ValueError(f"lr_find: early_stop_threshold must be > 1 (a multiple of the best loss) or null, "
                         f"got {early_stop_threshold:g}")
    result = find_lr(trainer, model, datamodule, min_lr, max_lr, num_training, early_stop_threshold)
    print(result.report())
    figure = plot_result(result, title=f"LR range test: {len(result.lrs)} steps")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)
    print(f"wrote {out}")
    return result
