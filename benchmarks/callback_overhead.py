"""Cost of the diagnostic callbacks on one training epoch of the CIFAR-10 baseline network.

Same tensors (45,000 x 3 x 32 x 32 uint8), same model (20 x 100 ELU, He init, NAdam, batch
32 by default), the Trainer as the CLI configures it (TensorBoard logger, per-step LR
monitor), with and without the callback. Variants run in alternation and the best of
``--repeats`` epochs is kept, so a busy machine inflates both sides alike.

    python benchmarks/callback_overhead.py --repeats 5 [--data-dir ../shared/data/cifar10-jpeg] [--threads 1]

Variants: ``none``; ``grad_norms`` (GradientNormLogger, every 50 steps); ``clip`` (gradient
clipping by norm at 1.0) and ``clip+grad_norms`` (which also counts clipping every step);
``activations`` (ActivationStatistics: a 512-image probe at train start and epoch end).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from common import load_tensors, time_hooks
from deeptrain.callbacks.activation_stats import ActivationStatistics
from deeptrain.callbacks.grad_norms import GradientNormLogger
from deeptrain.data.loader import InMemoryLoader
from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.module import Classifier

NET = MLPConfig(depth=20, width=100, activation="elu", kernel_init="he_normal")
VARIANTS = ("none", "grad_norms", "clip", "clip+grad_norms", "activations")


class EpochTimer(L.Callback):
    """Times the training epoch, and the part of it spent in ``diagnostic``'s (timed) hooks."""

    def __init__(self, diagnostic: L.Callback | None = None):
        self.diagnostic = diagnostic

    def _in_hooks(self) -> float:
        return getattr(self.diagnostic, "hook_seconds", 0.0)

    def on_train_epoch_start(self, trainer, module):
        self.start, self.hooks_at_start = time.perf_counter(), self._in_hooks()

    def on_train_epoch_end(self, trainer, module):
        self.seconds = time.perf_counter() - self.start
        self.hook_seconds = self._in_hooks() - self.hooks_at_start


def epoch_seconds(variant: str, images: torch.Tensor, labels: torch.Tensor, batch_size: int, tmp: Path) -> tuple[float, float]:
    """(seconds of the epoch, seconds spent inside the diagnostic callback's hooks during it)."""
    torch.manual_seed(0)
    model = Classifier(NET, input_shape=(3, 32, 32), num_classes=10, optimizer=torch.optim.NAdam)
    x = images[:5000].float()
    model.normalizer.set_stats(x.mean(0), x.std(0).clamp_min(1.0))
    callbacks = [L.pytorch.callbacks.LearningRateMonitor("step")]
    diagnostic = None
    if "grad_norms" in variant:
        diagnostic = time_hooks(GradientNormLogger())
    if variant == "activations":  # the epoch-end probe runs inside the timed epoch; the start one before it
        diagnostic = time_hooks(ActivationStatistics(probe=images[:512]))
    callbacks += [diagnostic] if diagnostic else []
    timer = EpochTimer(diagnostic)
    trainer = L.Trainer(
        max_epochs=1, default_root_dir=tmp, limit_val_batches=0, num_sanity_val_steps=0,
        logger=L.pytorch.loggers.TensorBoardLogger(tmp, default_hp_metric=False),
        callbacks=callbacks + [timer], enable_progress_bar=False, enable_model_summary=False,
        gradient_clip_val=1.0 if variant.startswith("clip") else None,
    )
    trainer.fit(model, train_dataloaders=InMemoryLoader(images, labels, batch_size, shuffle=True, seed=0))
    return timer.seconds, timer.hook_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 image folder (default: random bytes)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    images, labels = load_tensors(args.data_dir)
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    hooks: dict[str, list[float]] = {v: [] for v in args.variants}  # fraction of the epoch inside the hooks
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for variant in args.variants:  # alternate: every variant sees the same machine load
                seconds, in_hooks = epoch_seconds(variant, images, labels, args.batch_size, Path(tmp))
                times[variant].append(seconds)
                hooks[variant].append(in_hooks / seconds)
            print(f"repeat {r + 1}: " + ", ".join(f"{v} {times[v][-1]:.2f}s" for v in args.variants), flush=True)
    best = {v: min(t) for v, t in times.items()}
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {len(images)} images, batch {args.batch_size}")
    print(f"{'variant':<18}{'best s':>8}{'vs ref':>9}{'in hooks (median)':>19}")
    for variant, seconds in best.items():
        ref = best.get("clip" if variant.startswith("clip") else "none")
        overhead = f"{100 * (seconds / ref - 1):+.1f}%" if ref and variant not in ("none", "clip") else ""
        in_hooks = f"{100 * sorted(hooks[variant])[len(hooks[variant]) // 2]:.2f}%" if variant not in ("none", "clip") else ""
        print(f"{variant:<18}{seconds:>8.2f}{overhead:>9}{in_hooks:>19}")
    if args.json:
        Path(args.json).write_text(json.dumps({"best": best, "all": times, "hook_fraction": hooks}, indent=2))


if __name__ == "__main__":
    main()
