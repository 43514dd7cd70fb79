"""``deeptrain lr-find``: the chapter's learning-rate range test, with Lightning's ``Tuner.lr_find``.

Train for ``num_training`` steps while the learning rate grows exponentially from ``min_lr``
to ``max_lr`` (1e-5 to 10 over 500 steps, as in the chapter), and plot the smoothed loss
against the learning rate on a log axis. Two readings are printed:

- Lightning's suggestion: the learning rate where the loss falls fastest (steepest slope);
- the chapter's rule: about 10 times below the learning rate where the loss turns and starts
  to climb, taken here as the minimum of the smoothed loss.

The model and data come from the same YAML config as ``fit``; the sweep leaves the model
as it was (weights, optimizer state and ``model.lr``).

    deeptrain lr-find --config configs/cifar10/baseline.yaml --out lr_find.png \\
        --data.dataset image_folder --data.data_dir ../shared/data/cifar10-jpeg
"""

from __future__ import annotations

import argparse
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
from lightning.pytorch.tuner import Tuner

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


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="deeptrain lr-find", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Any other argument (--config, --model.*, --data.*, --trainer.*) "
                                            "goes to the same parser as `deeptrain fit`.")
    parser.add_argument("--out", default="lr_find.png", help="PNG to write")
    parser.add_argument("--min-lr", type=float, default=1e-5)
    parser.add_argument("--max-lr", type=float, default=10.0)
    parser.add_argument("--num-training", type=int, default=500, help="steps of the sweep")
    parser.add_argument("--early-stop-threshold", type=float, default=4.0,
                        help="stop when the loss exceeds this multiple of the best (<= 0: never)")
    return parser.parse_known_args(list(argv))


def last_config(args: Sequence[str]) -> tuple[int, str]:
    """(index just past the last ``--config`` option, its path)."""
    found = [i for i, a in enumerate(args) if a == "--config" or a.startswith("--config=")]
    if not found or (args[found[-1]] == "--config" and found[-1] + 1 == len(args)):
        raise SystemExit("deeptrain lr-find: --config is required (the same YAML as for `deeptrain fit`)")
    i = found[-1]
    return (i + 2, args[i + 1]) if args[i] == "--config" else (i + 1, args[i].split("=", 1)[1])


def without_logger(args: list[str]) -> list[str]:
    """``args`` with ``--trainer.logger=false`` right after the last ``--config``: a sweep needs no
    TensorBoard run, but an explicit ``--trainer.logger`` given later still wins."""
    end, _ = last_config(args)
    return args[:end] + ["--trainer.logger=false"] + args[end:]


def main(argv: Sequence[str] = ()) -> LRFindResult:
    from deeptrain.cli import build_cli

    args, rest = parse_args(argv)
    with warnings.catch_warnings():  # `deeptrain lr-find ...` hands build_cli the rest of sys.argv on purpose
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python")
        cli = build_cli(without_logger(rest), run=False, save_config_callback=None)
    result = find_lr(cli.trainer, cli.model, cli.datamodule, args.min_lr, args.max_lr, args.num_training,
                     args.early_stop_threshold if args.early_stop_threshold > 0 else None)
    print(result.report())
    config = Path(last_config(rest)[1])
    figure = plot_result(result, title=f"LR range test of {config.parent.name}/{config.name}: {len(result.lrs)} steps")
    figure.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return result
