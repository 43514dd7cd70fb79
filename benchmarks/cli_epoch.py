"""The user's path: an epoch of ``deeptrain fit`` against a plain PyTorch loop, and what each default costs.

``deeptrain fit`` side: the command line's machinery, ``build_cli([...], run=False)`` on
configs/cifar10/baseline.yaml, then ``cli.trainer.fit(cli.model, datamodule=cli.datamodule)``
with every default: TensorBoard logger, per-step LR monitor, progress bar (drawn into
``os.devnull``), validation every epoch, early stopping (best weights kept), the best checkpoint,
``last.ckpt`` every 500 steps and at each epoch end (``AtomicCheckpointIO``), the Ctrl-C/SIGTERM
checkpoint, the exact-resume state and the non-finite loss guard.

Plain side: the same network (a copy of the CLI model's initial weights), the same in-memory
uint8 tensors served by the same :class:`~deeptrain.data.loader.InMemoryLoader`, NAdam with the
config's learning rate, and a validation pass over the validation split (loss and accuracy)
after every epoch; no Lightning at all. Two plain loops: ``plain`` with torch's default update
(what ``torch.optim.NAdam(params, lr=lr)`` gives: a per-tensor loop on a CPU), the loop a user
would write, and ``plain_foreach`` with the update deeptrain's modules use (``foreach=True``,
:func:`~deeptrain.training.compile.foreach_by_default_`). ``ratio`` is the CLI against the first;
``same_update_ratio`` against the second, the cost of Lightning and the defaults alone.

An epoch is the time from one epoch's start to the next one's (to the end of training for the
last): its training steps, its validation and whatever runs at its end (checkpoints, logging).
Three clocks: wall time (what a user waits for), CPU time of the main thread (the critical path's
own work; it hardly moves with the machine's load) and CPU time of the whole process (the work
moved to other threads included). Each run trains ``--epochs`` epochs and keeps the fastest of
epochs 2..N, as ``deeptrain compare`` does; the variants take turns for ``--repeats`` rounds and
each keeps its fastest, so the background load hits all of them alike (every round is printed).

Breakdown (``--breakdown``): the CLI with one default switched off at a time; the cost of a
feature is the default epoch minus the epoch without it. ``validation`` is
``--trainer.limit_val_batches 0`` without early stopping and the best checkpoint (which need
it); ``logger`` takes the LR monitor with it (it has nothing to write to); ``bare`` is all of
them off at once (a Trainer with no callbacks, no logger, no validation); ``atomic_io`` is
Lightning's own ``TorchCheckpointIO`` instead of the CLI's writer. ``--saves N`` times one
checkpoint save (until ``save_checkpoint`` returns) with each writer.

    python benchmarks/cli_epoch.py --batch_sizes 32 128 1000 --train_size 20000 --epochs 3 --repeats 3 --threads 1
    python benchmarks/cli_epoch.py --batch_sizes --breakdown 1000 --train_size 5000 --epochs 6 --repeats 3 \
        --threads 1 --saves 20 --json cli_epoch.json

Paired steps (``--paired``): one ``deeptrain fit`` in which, before each of its training steps, a
callback runs one step of the plain loop (same network, data and optimizer settings), so every CLI
step has a plain step beside it in time. The medians of the two step times (epochs 2..N, the
epochs' last steps, validation and epoch ends left out) give the per-step overhead in
microseconds, which on a machine shared with other jobs is far steadier than a ratio of epochs
timed apart (their rounds spread by 10 % or more; paired runs repeat within 1 %). The plain steps
use the CLI's update (``foreach``), so the overhead is Lightning's and the defaults' alone.

    python benchmarks/cli_epoch.py --batch_sizes --paired 32 128 1000 --train_size 10000 --epochs 3 --threads 1

``--train_size`` keeps a random slice of the 45,000 training images (``--data.train_size``) for
a quicker run. Data: the CIFAR-10 JPEG folder (``--data_dir``, decoded once into
``$DEEPTRAIN_CACHE_DIR``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

from common import add_common_args, machine, print_table, setup_threads, time_hooks, write_json
from deeptrain.callbacks.checkpointing import InterruptCheckpoint, PeriodicCheckpoint
from deeptrain.callbacks.early_stopping import EarlyStopping
from deeptrain.callbacks.nonfinite import NonFiniteLossGuard
from deeptrain.callbacks.resume import ExactResume
from deeptrain.cli import build_cli
from deeptrain.data.loader import InMemoryLoader
from deeptrain.training.checkpoint_io import AtomicCheckpointIO

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cifar10" / "baseline.yaml"


def _is_best_checkpoint(callback: L.Callback) -> bool:
    return isinstance(callback, ModelCheckpoint) and not isinstance(callback, PeriodicCheckpoint)


# Each feature: CLI arguments that switch it off, and the callbacks to take out of the trainer.
FEATURES: dict[str, tuple[list[str], Callable[[L.Callback], bool]]] = {
    "last_checkpoint": ([], lambda c: isinstance(c, PeriodicCheckpoint)),
    "best_checkpoint": ([], _is_best_checkpoint),
    "early_stopping": ([], lambda c: isinstance(c, EarlyStopping)),
    "interrupt": ([], lambda c: isinstance(c, InterruptCheckpoint)),
    "exact_resume": ([], lambda c: isinstance(c, ExactResume)),
    "nonfinite": ([], lambda c: isinstance(c, NonFiniteLossGuard)),
    "lr_monitor": ([], lambda c: isinstance(c, LearningRateMonitor)),
    "logger": (["--trainer.logger", "false"], lambda c: False),  # the CLI drops the LR monitor with it
    "progress_bar": (["--trainer.enable_progress_bar", "false"], lambda c: False),
    "validation": (["--trainer.limit_val_batches", "0"], lambda c: isinstance(c, EarlyStopping) or _is_best_checkpoint(c)),
    "atomic_io": ([], lambda c: False),  # Lightning's TorchCheckpointIO writes instead (see cli_run)
}


def clocks() -> tuple[float, float, float]:
    """(wall, CPU of this thread, CPU of the whole process) in seconds. On a machine shared with other
    jobs the CPU times hardly move with the load; the wall time is what a user waits for."""
    return time.perf_counter(), time.thread_time(), time.process_time()


class EpochClock(L.Callback):
    """Wall, main-thread CPU and process CPU seconds of each epoch, from its start to the next epoch's
    start (to the end of fit for the last)."""

    def __init__(self) -> None:
        self.starts: list[tuple[float, ...]] = []
        self.epochs: list[tuple[float, ...]] = []

    def _tick(self) -> None:
        now = clocks()
        if self.starts:
            self.epochs.append(tuple(b - a for a, b in zip(self.starts[-1], now)))
        self.starts.append(now)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tick()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tick()


def cli_args(data: list[str], batch_size: int, epochs: int, folder: Path, off: list[str]) -> list[str]:
    args = ["--config", str(CONFIG), *data, "--data.batch_size", str(batch_size), "--trainer.max_epochs", str(epochs),
            f"--trainer.default_root_dir={folder}", f"--trainer.logger.init_args.save_dir={folder}"]
    for feature in off:
        args += FEATURES[feature][0]
    if "logger" in off:  # no logger: its save_dir option does not exist any more
        args = [a for a in args if not a.startswith("--trainer.logger.init_args")]
    return args


def cli_run(data: list[str], batch_size: int, epochs: int, off: list[str] = ()) -> list[tuple[float, ...]]:
    """(wall, thread CPU, process CPU) seconds of each epoch of ``deeptrain fit`` with the features ``off`` switched off."""
    with tempfile.TemporaryDirectory() as tmp:
        cli = build_cli(cli_args(data, batch_size, epochs, Path(tmp), list(off)), run=False)
        drop = [FEATURES[f][1] for f in off]
        cli.trainer.callbacks = [c for c in cli.trainer.callbacks if not any(d(c) for d in drop)]
        if "atomic_io" in off:
            cli.trainer.strategy.checkpoint_io = TorchCheckpointIO()
        clock = EpochClock()
        cli.trainer.callbacks.insert(0, clock)
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # the progress bar draws on stdout
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return clock.epochs


def hook_times(data: list[str], batch_size: int, epochs: int) -> list[dict[str, Any]]:
    """Main-thread CPU milliseconds per epoch (epochs 2..N) spent inside each callback's hooks, in one default run."""
    with tempfile.TemporaryDirectory() as tmp:
        cli = build_cli(cli_args(data, batch_size, epochs, Path(tmp), []), run=False)
        callbacks = [time_hooks(c, time.thread_time) for c in cli.trainer.callbacks]
        marks: list[list[float]] = []
        clock = EpochClock()
        tick = clock._tick
        clock._tick = lambda: (tick(), marks.append([c.hook_seconds for c in callbacks]))
        cli.trainer.callbacks.insert(0, clock)
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    epoch = sum(t[1] for t in clock.epochs[1:]) / (len(clock.epochs) - 1)
    rows = [{"batch_size": batch_size, "callback": type(c).__name__, "ms_per_epoch": 1e3 * (marks[-1][i] - marks[1][i]) / (len(marks) - 2)}
            for i, c in enumerate(callbacks)]
    rows = [r for r in rows if r["ms_per_epoch"] >= 0.05]
    for r in rows:
        r["share"] = f"{r['ms_per_epoch'] / 1e3 / epoch:.2%}"
    return rows


def plain_model(data: list[str], batch_size: int) -> tuple[torch.nn.Module, Any, float]:
    """The CLI's initial network (normalizer + MLP) as a plain module, its data module, and its learning rate."""
    cli = build_cli(cli_args(data, batch_size, 1, Path(tempfile.gettempdir()), ["logger"]), run=False)
    dm, model = cli.datamodule, cli.model
    dm.setup("fit")
    model.normalizer.set_stats(*dm.input_stats())
    net = torch.nn.Sequential(copy.deepcopy(model.normalizer), copy.deepcopy(model.net))
    lr = model.configure_optimizers().param_groups[0]["lr"]
    return net, dm, lr


def plain_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One step of the plain loop: forward, cross-entropy, backward, update; returns the loss."""
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


# The plain loops: torch's default update (a per-tensor loop on a CPU), and the one deeptrain's modules use.
PLAIN_UPDATES: dict[str, dict[str, Any]] = {"plain": {}, "plain_foreach": {"foreach": True}}


def plain_run(template: torch.nn.Module, dm: Any, lr: float, epochs: int, **update: Any) -> list[tuple[float, ...]]:
    """(wall, thread CPU, process CPU) seconds of each epoch of a plain loop: train over the shuffled split, then validate."""
    model = copy.deepcopy(template)
    optimizer = torch.optim.NAdam(model.parameters(), lr=lr, **update)
    train, val = dm.split("train"), dm.split("val")
    loader = InMemoryLoader(train.images, train.labels, dm.batch_size, shuffle=True, seed=0)
    val_loader = InMemoryLoader(val.images, val.labels, dm.eval_batch_size)
    times = []
    for _ in range(epochs):
        start = clocks()
        model.train()
        train_loss = torch.zeros(())
        for x, y in loader:
            train_loss += plain_step(model, optimizer, x, y).detach() * len(y)
        model.eval()
        val_loss, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
        with torch.inference_mode():
            for x, y in val_loader:
                logits = model(x)
                val_loss += F.cross_entropy(logits, y, reduction="sum")
                correct += (logits.argmax(1) == y).sum()
        float(train_loss), float(val_loss), int(correct)  # what a loop prints: one host sync per epoch
        times.append(tuple(b - a for a, b in zip(start, clocks())))
    return times


def compare(data: list[str], batch_size: int, epochs: int, repeats: int,
            variants: dict[str, list[str] | None]) -> dict[str, dict[str, Any]]:
    """Per variant (None: a plain loop of PLAIN_UPDATES; else the CLI features to switch off), taking turns for ``repeats``
    rounds: the fastest wall, thread-CPU and process-CPU seconds over epochs 2..N of all rounds, and the
    spread of the rounds' fastest wall times."""
    template = plain_model(data, batch_size) if None in variants.values() else None
    rounds: dict[str, list[tuple[float, ...]]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, off in variants.items():
            times = cli_run(data, batch_size, epochs, off) if off is not None else plain_run(*template, epochs, **PLAIN_UPDATES[name])
            best = tuple(min(column) for column in zip(*(times[1:] or times)))
            rounds[name].append(best)
            print(f"  batch {batch_size} {name}: wall {best[0]:.3f} s, cpu {best[1]:.3f} s, process cpu {best[2]:.3f} s",
                  flush=True)
    return {name: {"wall": min(r[0] for r in runs), "cpu": min(r[1] for r in runs), "process_cpu": min(r[2] for r in runs),
                   "spread": f"{min(r[0] for r in runs):.2f}-{max(r[0] for r in runs):.2f}"}
            for name, runs in rounds.items()}


class PairedSteps(L.Callback):
    """Runs one plain step before each CLI step and times both: the CLI step from the end of the
    plain step to the start of the next batch."""

    def __init__(self, plain_step: Callable[[], None]) -> None:
        self.plain_step, self.cli, self.plain, self.epoch = plain_step, [], [], 0
        self._plain_end: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch, self._plain_end = trainer.current_epoch, None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        start = time.perf_counter()
        if self._plain_end is not None and self.epoch > 0:  # epoch 1 warms up
            self.cli.append(start - self._plain_end)
        self.plain_step()
        self._plain_end = time.perf_counter()
        if self.epoch > 0:
            self.plain.append(self._plain_end - start)


def paired_steps(data: list[str], batch_size: int, epochs: int) -> dict[str, Any]:
    """Median microseconds of a CLI training step and of a plain one, interleaved one for one in one fit."""
    net, dm, lr = plain_model(data, batch_size)
    optimizer = torch.optim.NAdam(net.parameters(), lr=lr, **PLAIN_UPDATES["plain_foreach"])
    train = dm.split("train")
    loader = InMemoryLoader(train.images, train.labels, dm.batch_size, shuffle=True, seed=0)
    batches = itertools.chain.from_iterable(itertools.repeat(loader))  # epoch after epoch, reshuffled
    pairs = PairedSteps(lambda: plain_step(net, optimizer, *next(batches)))
    with tempfile.TemporaryDirectory() as tmp:
        cli = build_cli(cli_args(data, batch_size, epochs, Path(tmp), []), run=False)
        cli.trainer.callbacks.insert(0, pairs)
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cli_us, plain_us = 1e6 * statistics.median(pairs.cli), 1e6 * statistics.median(pairs.plain)
    return {"batch_size": batch_size, "steps": len(pairs.cli), "plain_step_us": plain_us, "cli_step_us": cli_us,
            "overhead_us": cli_us - plain_us, "step_ratio": cli_us / plain_us}


def save_times(data: list[str], saves: int) -> list[dict[str, Any]]:
    """Milliseconds until ``save_checkpoint`` returns (what the training loop waits for), fastest and median
    of ``saves``, for the CLI's real checkpoint after one epoch: Lightning's writer, the atomic writer
    inline, and the atomic writer in the background (the wait for the previous write is not timed)."""
    with tempfile.TemporaryDirectory() as tmp:
        cli = build_cli(cli_args(data, 1000, 1, Path(tmp), ["progress_bar"]), run=False)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        checkpoint = cli.trainer._checkpoint_connector.dump_checkpoint()  # what trainer.save_checkpoint writes
        writers = {"TorchCheckpointIO": TorchCheckpointIO(), "AtomicCheckpointIO(background=False)": AtomicCheckpointIO(background=False),
                   "AtomicCheckpointIO()": AtomicCheckpointIO()}
        times: dict[str, list[float]] = {name: [] for name in writers}
        for _ in range(saves):
            for name, io in writers.items():  # taking turns
                start = time.perf_counter()
                io.save_checkpoint(checkpoint, Path(tmp) / "last.ckpt")
                times[name].append(1e3 * (time.perf_counter() - start))
                getattr(io, "wait", lambda: None)()
        megabytes = (Path(tmp) / "last.ckpt").stat().st_size / 1e6
    return [{"writer": name, "MB": megabytes, "fastest_ms": min(t), "median_ms": statistics.median(t)} for name, t in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_sizes", type=int, nargs="*", default=[32, 128, 1000], help="CLI vs plain loop at these")
    parser.add_argument("--paired", type=int, nargs="*", default=[], help="paired per-step CLI/plain at these batch sizes")
    parser.add_argument("--breakdown", type=int, nargs="*", default=[], help="per-feature costs at these batch sizes")
    parser.add_argument("--features", nargs="+", default=list(FEATURES) + ["bare"], choices=list(FEATURES) + ["bare"])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is not timed")
    parser.add_argument("--hooks", action="store_true", help="also time each callback's hooks at the breakdown batch sizes")
    parser.add_argument("--saves", type=int, default=0, help="also time this many checkpoint saves per writer")
    parser.add_argument("--train_size", type=int, default=None, help="training images (default: all 45,000)")
    parser.add_argument("--data_dir", default="/work/shared/data/cifar10-jpeg", help="CIFAR-10 image folder")
    add_common_args(parser, repeats=3)
    args = parser.parse_args()
    setup_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    data = ["--data.dataset", "image_folder", "--data.data_dir", args.data_dir]
    data += ["--data.train_size", str(args.train_size)] if args.train_size else []
    print(f"{machine()}, train_size {args.train_size or 'all'}, fastest of epochs 2..{args.epochs} over {args.repeats} rounds",
          flush=True)

    rows, breakdown = [], []
    for batch_size in args.batch_sizes:
        best = compare(data, batch_size, args.epochs, args.repeats, {"plain": None, "plain_foreach": None, "cli": []})
        plain, same, cli = best["plain"], best["plain_foreach"], best["cli"]
        rows.append({"batch_size": batch_size, "plain_s": plain["wall"], "plain_foreach_s": same["wall"], "cli_s": cli["wall"],
                     "ratio": cli["wall"] / plain["wall"], "same_update_ratio": cli["wall"] / same["wall"],
                     "cpu_ratio": cli["cpu"] / plain["cpu"], "process_cpu_ratio": cli["process_cpu"] / plain["process_cpu"],
                     "spreads": f"{plain['spread']} / {same['spread']} / {cli['spread']}"})
        print_table(rows[-1:], list(rows[-1]))
    paired = []
    for batch_size in args.paired:
        paired.append(paired_steps(data, batch_size, args.epochs))
        print_table(paired[-1:], list(paired[-1]))
    for batch_size in args.breakdown:
        variants = {"default": [], **{f"-{f}": list(FEATURES) if f == "bare" else [f] for f in args.features}}
        best = compare(data, batch_size, args.epochs, args.repeats, variants)
        default = best["default"]
        for name, b in best.items():
            breakdown.append({"batch_size": batch_size, "variant": name, "epoch_s": b["wall"], "spread": b["spread"],
                              "cost_ms": None if name == "default" else 1e3 * (default["wall"] - b["wall"]),
                              "cpu_s": b["cpu"], "cpu_cost_ms": None if name == "default" else 1e3 * (default["cpu"] - b["cpu"]),
                              "process_cpu_cost_ms": None if name == "default" else 1e3 * (default["process_cpu"] - b["process_cpu"])})
        print_table(breakdown[-len(best):], list(breakdown[-1]))
    saves = save_times(data, args.saves) if args.saves else []
    hooks = [row for b in args.breakdown for row in hook_times(data, b, args.epochs)] if args.hooks else []
    if rows:
        print("\nCLI against the plain loop")
        print_table(rows, list(rows[0]))
    if paired:
        print("\nPaired steps: a plain step before each CLI step, medians of epochs 2..N")
        print_table(paired, list(paired[0]))
    if breakdown:
        print("\nPer-feature cost (default epoch minus the epoch without it)")
        print_table(breakdown, list(breakdown[0]))
    if hooks:
        print("\nMain-thread CPU inside each callback's hooks, per epoch (one default run)")
        print_table(hooks, list(hooks[0]))
    if saves:
        print(f"\nOne checkpoint save, until save_checkpoint returns ({args.saves} saves each)")
        print_table(saves, list(saves[0]))
    write_json(args.json, rows, benchmark="cli_epoch", paired=paired, breakdown=breakdown, hooks=hooks, saves=saves, epochs=args.epochs, repeats=args.repeats,
               train_size=args.train_size)


if __name__ == "__main__":
    main()
