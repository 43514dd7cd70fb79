"""One training epoch of the CIFAR-10 baseline network: deeptrain's Trainer path vs a plain loop.

Both paths use the same in-memory uint8 tensors (45,000 x 3 x 32 x 32), the same model
(20 x 100 ELU, He init), torch.optim.NAdam with the same update (``foreach``, as the
Classifier's) and the same per-batch normalization; the plain loop has no Lightning at all.
Runs alternate and the best of ``--repeats`` is kept.

    python benchmarks/epoch_overhead.py --batch-sizes 32 1000 [--data-dir ../shared/data/cifar10-jpeg]

Without ``--data-dir`` the tensors are random bytes of the same size (speed does not
depend on pixel values).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from common import LAST_RUNS, NETS, add_common_args, alternate, load_tensors, machine, new_classifier, print_table, setup_threads, write_json
from deeptrain.data.loader import InMemoryLoader


def new_model(net: str, images: torch.Tensor, **kwargs):
    return new_classifier(net, images, optimizer=torch.optim.NAdam, **kwargs)


def plain_epoch(net: str, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    model = new_model(net, images).train()
    optimizer = torch.optim.NAdam(model.parameters(), foreach=True)  # the Classifier's update: only Lightning differs
    loader = InMemoryLoader(images, labels, batch_size, shuffle=True, seed=0)
    start = time.perf_counter()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


class EpochTimer(L.Callback):
    def __init__(self):
        self.epochs = []  # seconds of each training epoch

    def on_train_epoch_start(self, trainer, module):
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.epochs.append(time.perf_counter() - self.start)

    def on_train_end(self, trainer, module):
        LAST_FIT["metrics"] = {k: float(v) for k, v in trainer.callback_metrics.items()}


LAST_FIT: dict = {}  # the callback metrics at the end of the last trainer_epoch run


def trainer_epoch(net: str, images: torch.Tensor, labels: torch.Tensor, batch_size: int, tmp: Path,
                  model_kwargs: dict | None = None, epochs: int = 1, **trainer_kwargs) -> float:
    """The Trainer as the CLI configures it (TensorBoard logger, LR monitor, checkpoint), without validation.

    ``model_kwargs`` go to the Classifier (e.g. ``compile=True``), ``trainer_kwargs`` to the Trainer
    (e.g. ``precision="bf16-mixed"``). Returns the seconds of the last of ``epochs`` epochs (2: the
    first one, which pays any compilation, is not timed)."""
    model = new_model(net, images, **(model_kwargs or {}))
    timer = EpochTimer()
    trainer = L.Trainer(**{
        "max_epochs": epochs, "default_root_dir": tmp, "limit_val_batches": 0, "num_sanity_val_steps": 0,
        "logger": L.pytorch.loggers.TensorBoardLogger(tmp, default_hp_metric=False),
        "callbacks": [timer, L.pytorch.callbacks.LearningRateMonitor("step")],
        "enable_progress_bar": False, "enable_model_summary": False, **trainer_kwargs,
    })
    trainer.fit(model, train_dataloaders=InMemoryLoader(images, labels, batch_size, shuffle=True, seed=0))
    return timer.epochs[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 1000])
    parser.add_argument("--nets", nargs="+", default=["baseline"], choices=sorted(NETS))
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 image folder (default: random bytes)")
    parser.add_argument("--images", type=int, default=45_000, help="training images per epoch")
    add_common_args(parser)
    args = parser.parse_args()
    setup_threads(args.threads)

    images, labels = load_tensors(args.data_dir, args.images)
    rows, runs = [], {}
    print(f"{machine()}, {len(images)} training images, best of {args.repeats}")
    for name in args.nets:
        for batch_size in args.batch_sizes:
            with tempfile.TemporaryDirectory() as tmp:
                best = alternate({
                    "plain": lambda: plain_epoch(name, images, labels, batch_size),
                    "trainer": lambda: trainer_epoch(name, images, labels, batch_size, Path(tmp)),
                }, args.repeats)
            rows.append({"net": name, "batch_size": batch_size, "plain_s": best["plain"], "trainer_s": best["trainer"],
                         "ratio": best["trainer"] / best["plain"]})
            print_table(rows[-1:], list(rows[-1]))
            runs[(name, batch_size)] = dict(LAST_RUNS)
            print("  all runs (s):", {k: [round(t, 2) for t in v] for k, v in LAST_RUNS.items()})
    print()
    print_table(rows, list(rows[0]))
    write_json(args.json, rows, benchmark="epoch_overhead", repeats=args.repeats,
               all_runs=[{"net": n, "batch_size": b, **r} for (n, b), r in runs.items()])


if __name__ == "__main__":
    main()
