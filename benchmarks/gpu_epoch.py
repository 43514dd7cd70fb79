"""The device-resident training path on a GPU: seconds per CIFAR-10 epoch, Trainer vs plain loop.

What runs is deeptrain's own path: an :class:`ImageDataModule` whose splits move to the GPU
once as uint8 (random bytes of CIFAR-10's size by default, or the JPEG folder with
``--data-dir``), batches sliced on the device, normalization inside the model, the
Classifier (20 x 100 ELU, NAdam) under a Trainer configured as the CLI does (TensorBoard
logger, per-step LR monitor; no progress bar, no validation). The plain loop trains the same
model on the same device tensors with no Lightning. Epoch times are taken between
``torch.cuda.synchronize()`` calls; variants take turns, best of ``--repeats``.

Part 2, at ``--small-batch`` (32), where per-step Python and kernel-launch overhead dominate:
the plain loop eager, with ``torch.compile`` (forward + backward), ``torch.compile(mode=
"reduce-overhead")`` (CUDA graphs), and compiled forward + optimizer; and the Trainer with
``Classifier(compile=True)``.

    python benchmarks/gpu_epoch.py                       # on a GPU machine
    python benchmarks/gpu_epoch.py --device cpu --images 2000 --repeats 1   # smoke check anywhere

Targets (issue 7, H100-class GPU): < 0.1 s per epoch at batch 1000, Trainer within 1.2x of the
plain loop there. Measured on an H200 (not met: ~6 ms per step, launch-bound): benchmarks/README.md, "GPU".
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from common import add_common_args, alternate, machine, new_classifier, print_table, setup_threads, write_json
from deeptrain.data.datamodule import ImageDataModule
from deeptrain.data.loader import InMemoryLoader
from deeptrain.data.sources import DatasetSplits, ImageArrays


class RandomCifar(ImageDataModule):
    """The real DataModule with random bytes of CIFAR-10's shape instead of files."""

    def __init__(self, images: int, **kwargs):
        super().__init__("cifar10", data_dir="unused", download=False, **kwargs)
        self.n_images = images

    def _load(self) -> DatasetSplits:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (self.n_images, 3, 32, 32), dtype=torch.uint8, generator=g)
        return DatasetSplits(ImageArrays(x, torch.randint(0, 10, (self.n_images,), generator=g)), None,
                             [str(i) for i in range(10)])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SyncedEpochTimer(L.Callback):
    def __init__(self):
        self.epochs = []

    def on_train_epoch_start(self, trainer, module):
        sync(module.device)
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        sync(module.device)
        self.epochs.append(time.perf_counter() - self.start)


def datamodule(args, batch_size: int) -> ImageDataModule:
    kwargs = dict(batch_size=batch_size, val_size=5000, normalize="scale")
    if args.data_dir:
        return ImageDataModule("image_folder", data_dir=args.data_dir, **kwargs)
    return RandomCifar(args.images + 5000, **kwargs)


def trainer_epoch(args, dm: ImageDataModule, batch_size: int, tmp: Path, epochs: int = 2, **model_kwargs) -> float:
    """Seconds of the last of ``epochs`` epochs of a fresh model (the first pays CUDA and compile warm-up)."""
    dm.batch_size = batch_size
    model = new_classifier("baseline", dm.split("train").images, **model_kwargs)
    timer = SyncedEpochTimer()
    trainer = L.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu", devices=1, max_epochs=epochs, default_root_dir=tmp,
        limit_val_batches=0, num_sanity_val_steps=0, precision=args.precision,
        logger=L.pytorch.loggers.TensorBoardLogger(tmp, default_hp_metric=False),
        callbacks=[timer, L.pytorch.callbacks.LearningRateMonitor("step")],
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )
    trainer.fit(model, datamodule=dm)
    return timer.epochs[-1]


def plain_setup(args, images: torch.Tensor, compile_mode: str | None = None, compile_optimizer: bool = False):
    device = torch.device(args.device)
    model = new_classifier("baseline", images.cpu()).to(device)
    optimizer = torch.optim.NAdam(model.parameters(), lr=5e-5)
    if compile_mode:
        model.compile(mode=None if compile_mode == "default" else compile_mode, dynamic=False)
    step = torch.compile(optimizer.step) if compile_optimizer else optimizer.step
    return model, optimizer, step


def plain_epoch(args, setup, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    model, optimizer, step = setup
    dtype = torch.bfloat16 if args.precision == "bf16-mixed" else None
    loader = InMemoryLoader(images, labels, batch_size, shuffle=True, seed=0)  # tensors already on the device
    sync(images.device)
    start = time.perf_counter()
    for x, y in loader:
        ctx = torch.autocast(x.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with ctx:
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        step()
    sync(images.device)
    return time.perf_counter() - start


def device_tensors(dm: ImageDataModule, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    train = dm.split("train")
    return train.images.to(device), train.labels.to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[128, 1000], help="part 1 (none: skip it)")
    parser.add_argument("--small-batch", type=int, default=32, help="batch size of part 2 (0: skip it)")
    parser.add_argument("--images", type=int, default=45_000, help="training images per epoch (random data)")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 image folder (default: random bytes)")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--matmul-precision", default="highest", choices=["highest", "high", "medium"],
                        help="torch.set_float32_matmul_precision (high: TF32 on Ampere and later)")
    add_common_args(parser)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or pass --device cpu for a smoke check")
    setup_threads(args.threads)
    torch.set_float32_matmul_precision(args.matmul_precision)
    print(machine())
    dm = datamodule(args, (args.batch_sizes or [args.small_batch])[0])
    images, labels = device_tensors(dm, args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch_size in args.batch_sizes:
            plain = plain_setup(args, images)
            best = alternate({"plain": lambda: plain_epoch(args, plain, images, labels, batch_size),
                              "trainer": lambda: trainer_epoch(args, dm, batch_size, Path(tmp))}, args.repeats, warmup=1)
            rows.append({"part": "epoch", "batch_size": batch_size, "variant": "trainer/plain", "plain_s": best["plain"],
                         "s_per_epoch": best["trainer"], "ratio": best["trainer"] / best["plain"]})
            print_table(rows[-1:], list(rows[-1]))
            save(args, rows)  # each part as it ends: a lease that runs out keeps what finished
        if args.small_batch:
            b = args.small_batch
            setups = {"eager": plain_setup(args, images), "compile": plain_setup(args, images, "default"),
                      "reduce-overhead": plain_setup(args, images, "reduce-overhead"),
                      "compile+opt": plain_setup(args, images, "default", compile_optimizer=True)}
            runs = {name: (lambda s=s: plain_epoch(args, s, images, labels, b)) for name, s in setups.items()}
            runs["trainer"] = lambda: trainer_epoch(args, dm, b, Path(tmp))
            runs["trainer+compile"] = lambda: trainer_epoch(args, dm, b, Path(tmp), compile=True)
            best = alternate(runs, args.repeats, warmup=1)  # the warm-up epoch pays the compilations
            for name, seconds in best.items():
                rows.append({"part": "small batch", "batch_size": b, "variant": name, "plain_s": best["eager"],
                             "s_per_epoch": seconds, "ratio": seconds / best["eager"]})
            print_table(rows[-len(best):], list(rows[-1]))
            save(args, rows)
    print()
    print_table(rows, list(rows[0]))


def save(args, rows: list[dict]) -> None:
    write_json(args.json, rows, benchmark="gpu_epoch", repeats=args.repeats, device=args.device,
               precision=args.precision, images=args.images)


if __name__ == "__main__":
    main()
