"""Cost of the reliability defaults on one training epoch of the chapter's Fashion-MNIST network.

Same tensors (55,000 x 1 x 28 x 28 uint8), same model (300-100 ELU, He init, NAdam, batch 32),
with and without what the CLI adds for reliability: ``NonFiniteLossGuard`` (one host sync per
step), ``ExactResume`` (RNG states in each checkpoint), ``PeriodicCheckpoint`` (``last.ckpt``
every 500 steps and at the epoch end) written by ``AtomicCheckpointIO`` (fsync + rename), and
``InterruptCheckpoint``. Variants alternate and the best of ``--repeats`` epochs is kept. The
time spent inside the callbacks' hooks, as a share of the epoch, is printed too: load on the
machine slows hooks and epoch alike, so that share is the steadier figure.

Then one checkpoint of this model (weights + NAdam state, 2.1 MB) is saved 20 times by
Lightning's ``TorchCheckpointIO`` and by ``AtomicCheckpointIO`` (median times).

    python benchmarks/reliability_overhead.py --repeats 3 [--data-dir ../shared/data] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO

from deeptrain.callbacks.checkpointing import InterruptCheckpoint, PeriodicCheckpoint
from deeptrain.callbacks.nonfinite import NonFiniteLossGuard
from deeptrain.callbacks.resume import ExactResume
from deeptrain.data.loader import InMemoryLoader
from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.checkpoint_io import AtomicCheckpointIO
from deeptrain.training.module import Classifier

NET = MLPConfig(widths=[300, 100], activation="elu", kernel_init="he_normal")


def load_tensors(data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    if data_dir:
        from deeptrain.data.datamodule import ImageDataModule

        split = ImageDataModule("fashion_mnist", data_dir=data_dir, val_size=5000).split("train")
        return split.images, split.labels
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (55_000, 1, 28, 28), dtype=torch.uint8, generator=g), torch.randint(0, 10, (55_000,), generator=g)


def time_hooks(callback: L.Callback) -> L.Callback:
    """Make ``callback.hook_seconds`` sum the time spent in its hooks (and its state_dict)."""
    callback.hook_seconds = 0.0
    for name in [n for n in dir(callback) if n.startswith("on_") or n == "state_dict"]:
        fn = getattr(callback, name)
        if not callable(fn):
            continue

        def timed(*args, _fn=fn, **kwargs):
            start = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                callback.hook_seconds += time.perf_counter() - start

        setattr(callback, name, timed)
    return callback


def epoch(images: torch.Tensor, labels: torch.Tensor, reliable: bool, folder: Path) -> tuple[float, float]:
    """(seconds of one epoch, seconds inside the reliability callbacks)."""
    L.seed_everything(0, verbose=False)
    model = Classifier(NET, input_shape=(1, 28, 28), num_classes=10)
    model.normalizer.set_stats(images.float().mean(0), images.float().std(0).clamp_min(1.0))
    callbacks = [time_hooks(c) for c in (NonFiniteLossGuard(), ExactResume(), PeriodicCheckpoint(folder, 500),
                                         InterruptCheckpoint(folder))] if reliable else []
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=reliable, limit_val_batches=0, callbacks=callbacks,
                        plugins=[AtomicCheckpointIO()] if reliable else None)
    loader = InMemoryLoader(images, labels, batch_size=32, shuffle=True, seed=0)
    start = time.perf_counter()
    trainer.fit(model, loader)
    return time.perf_counter() - start, sum(c.hook_seconds for c in callbacks)


def save_times(folder: Path, n: int = 20) -> dict[str, float]:
    model = Classifier(NET, input_shape=(1, 28, 28), num_classes=10)
    optimizer = torch.optim.NAdam(model.parameters())
    model(torch.zeros(2, 1, 28, 28)).sum().backward()
    optimizer.step()
    checkpoint = {"state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()]}
    out = {}
    for name, io in (("TorchCheckpointIO", TorchCheckpointIO()), ("AtomicCheckpointIO", AtomicCheckpointIO())):
        times = []
        for _ in range(n):
            start = time.perf_counter()
            io.save_checkpoint(checkpoint, folder / "last.ckpt")
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times)
    out["MB"] = (folder / "last.ckpt").stat().st_size / 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=None, help="folder with FashionMNIST/raw (default: random tensors)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images, labels = load_tensors(args.data_dir)
    best = {False: float("inf"), True: float("inf")}
    hooks = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for reliable in (False, True):
                seconds, inside = epoch(images, labels, reliable, Path(tmp))
                best[reliable] = min(best[reliable], seconds)
                if reliable:
                    hooks = min(hooks, inside / seconds)
        saves = save_times(Path(tmp))
    print(f"one epoch, 1719 steps, best of {args.repeats}: plain {best[False]:.2f} s, with the reliability "
          f"callbacks {best[True]:.2f} s (x{best[True] / best[False]:.3f}); time inside their hooks: {hooks:.2%}")
    print(f"one save of {saves['MB']:.1f} MB (median of 20): Lightning TorchCheckpointIO "
          f"{saves['TorchCheckpointIO'] * 1e3:.1f} ms, AtomicCheckpointIO {saves['AtomicCheckpointIO'] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
