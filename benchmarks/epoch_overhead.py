"""One training epoch of the CIFAR-10 baseline network: deeptrain's Trainer path vs a plain loop.

Both paths use the same in-memory uint8 tensors (45,000 x 3 x 32 x 32), the same model
(20 x 100 ELU, He init), torch.optim.NAdam and the same per-batch normalization; the
plain loop has no Lightning at all. Runs alternate and the best of ``--repeats`` is kept.

    python benchmarks/epoch_overhead.py --batch-sizes 32 1000 [--data-dir ../shared/data/cifar10-jpeg]

Without ``--data-dir`` the tensors are random bytes of the same size (speed does not
depend on pixel values).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from deeptrain.data.loader import InMemoryLoader
from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.module import Classifier

NET = MLPConfig(depth=20, width=100, activation="elu", kernel_init="he_normal")
BN_NET = MLPConfig(depth=20, width=100, activation="elu", kernel_init="he_normal", norm="batch", input_norm=True)


def load_tensors(data_dir: str | None, n: int = 45_000) -> tuple[torch.Tensor, torch.Tensor]:
    if data_dir:
        from deeptrain.data.datamodule import ImageDataModule

        dm = ImageDataModule("image_folder", data_dir=data_dir, val_size=50_000 - n)
        dm.setup("fit")
        loader = dm.train_dataloader()
        return loader.images, loader.labels
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


def new_model(net: MLPConfig, images: torch.Tensor) -> Classifier:
    torch.manual_seed(0)
    model = Classifier(net, input_shape=(3, 32, 32), num_classes=10, optimizer=torch.optim.NAdam)
    x = images[:5000].float()
    model.normalizer.set_stats(x.mean(0), x.std(0).clamp_min(1.0))
    return model


def plain_epoch(net: MLPConfig, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    model = new_model(net, images).train()
    optimizer = torch.optim.NAdam(model.parameters())
    loader = InMemoryLoader(images, labels, batch_size, shuffle=True, seed=0)
    start = time.perf_counter()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


class EpochTimer(L.Callback):
    def on_train_epoch_start(self, trainer, module):
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.seconds = time.perf_counter() - self.start


def trainer_epoch(net: MLPConfig, images: torch.Tensor, labels: torch.Tensor, batch_size: int, tmp: Path) -> float:
    """The Trainer as the CLI configures it (TensorBoard logger, LR monitor, checkpoint), without validation."""
    model = new_model(net, images)
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=1, default_root_dir=tmp, limit_val_batches=0, num_sanity_val_steps=0,
        logger=L.pytorch.loggers.TensorBoardLogger(tmp, default_hp_metric=False),
        callbacks=[timer, L.pytorch.callbacks.LearningRateMonitor("step")],
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, train_dataloaders=InMemoryLoader(images, labels, batch_size, shuffle=True, seed=0))
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 1000])
    parser.add_argument("--nets", nargs="+", default=["baseline"], choices=["baseline", "batchnorm"])
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 image folder (default: random bytes)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the table here")
    args = parser.parse_args()

    import tempfile

    images, labels = load_tensors(args.data_dir)
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(images)} training images")
    print(f"{'net':<10}{'batch':>6}{'plain s':>10}{'trainer s':>11}{'ratio':>8}")
    for name in args.nets:
        net = NET if name == "baseline" else BN_NET
        for batch_size in args.batch_sizes:
            plain, lightning = [], []
            with tempfile.TemporaryDirectory() as tmp:
                for _ in range(args.repeats):
                    plain.append(plain_epoch(net, images, labels, batch_size))
                    lightning.append(trainer_epoch(net, images, labels, batch_size, Path(tmp)))
            row = {"net": name, "batch_size": batch_size, "plain_s": min(plain), "trainer_s": min(lightning)}
            row["ratio"] = row["trainer_s"] / row["plain_s"]
            rows.append(row)
            print(f"{name:<10}{batch_size:>6}{row['plain_s']:>10.2f}{row['trainer_s']:>11.2f}{row['ratio']:>8.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
