"""Exercise 8e: does MC dropout beat the deterministic prediction of a trained dropout network?

    python experiments/mc_dropout_report.py --ckpt logs/.../checkpoints/best-*.ckpt \\
        --config configs/cifar10/alpha_dropout.yaml \\
        --data.dataset image_folder --data.data_dir /work/shared/data/cifar10-jpeg \\
        [--samples 10 30 100] [--seeds 0 1 2]

Scores the validation split (the config's split: same seed, same 5,000 images as in
training) with the deterministic forward and with MC dropout at each T, over several
mask seeds (mean ± std across seeds), and prints a Markdown table: accuracy, NLL,
Brier, ECE (15 bins) and mean predictive entropy, plus the MC prediction time of the
vectorized path and of T separate forward passes on these images.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from deeptrain.nn.mc_dropout import mc_dropout_mode, mc_predict
from deeptrain.tools.prune import datamodule_from_config
from deeptrain.training.module import Classifier
from deeptrain.training.uncertainty import METRIC_NAMES, uncertainty_metrics


def scores(probs: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    metrics = uncertainty_metrics(probs.shape[1])
    metrics.update(probs, target)
    return {k: float(v) for k, v in metrics.compute().items()}


@torch.no_grad()
def deterministic_probs(model: Classifier, x: torch.Tensor, batch: int = 5000) -> torch.Tensor:
    return torch.cat([model(part).softmax(dim=-1) for part in x.split(batch)])


@torch.no_grad()
def loop_probs(model: Classifier, x: torch.Tensor, samples: int) -> torch.Tensor:
    """T separate forward passes over the whole set (the seeds' recipe, BN left in eval)."""
    with mc_dropout_mode(model):
        return torch.stack([deterministic_probs(model, x) for _ in range(samples)]).mean(0)


def timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--config", required=True, help="training config (for the data); --data.* overrides may follow")
    parser.add_argument("--samples", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args, overrides = parser.parse_known_args()

    data = datamodule_from_config(args.config, overrides)
    val = data.split("val")
    x, y = val.images, val.labels
    model = Classifier.load_from_checkpoint(args.ckpt, map_location="cpu").eval()
    print(f"checkpoint {args.ckpt}: epoch {torch.load(args.ckpt, map_location='cpu', weights_only=True)['epoch']}; "
          f"validation split: {len(x)} images; MC seeds {args.seeds}")

    rows = [("deterministic", scores(deterministic_probs(model, x), y), None)]
    for t in args.samples:
        runs, seconds = [], []
        for seed in args.seeds:
            (mean, _), dt = timed(lambda: mc_predict(model, x, samples=t, seed=seed))
            runs.append(scores(mean, y))
            seconds.append(dt)
        merged = {k: [r[k] for r in runs] for k in METRIC_NAMES}
        rows.append((f"MC dropout, T = {t}", merged, min(seconds)))

    print("\n| prediction | " + " | ".join(METRIC_NAMES) + " | images/s |")
    print("|---|" + "---|" * (len(METRIC_NAMES) + 1))
    for name, values, seconds in rows:
        cells = [cell(v if isinstance(v, list) else [v]) for v in (values[k] for k in METRIC_NAMES)]
        speed = f"{len(x) / seconds:,.0f}" if seconds else ""
        print(f"| {name} | " + " | ".join(cells) + f" | {speed} |")

    print("\nMC prediction time on these images, vectorized (shared prefix) vs T separate forward passes:")
    for t in args.samples:
        _, fast = timed(lambda: mc_predict(model, x, samples=t, seed=0))
        slow_probs, slow = timed(lambda: loop_probs(model, x, t))
        print(f"T = {t:>3}: vectorized {fast:6.2f} s ({len(x) / fast:>8,.0f} images/s), loop {slow:6.2f} s "
              f"({len(x) / slow:>8,.0f} images/s), speed-up {slow / fast:.1f}x; loop acc {scores(slow_probs, y)['acc']:.4f}")


if __name__ == "__main__":
    main()
