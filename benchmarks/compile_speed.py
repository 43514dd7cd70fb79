"""torch.compile on vs off for training the CIFAR-10 baseline network (20 x 100 ELU, NAdam).

Two measurements, each with the variants taking turns, best of ``--repeats``:

1. Plain training steps (no Lightning), ms per step: ``eager``; ``compile`` (the forward pass
   and its backward only); ``compile+opt`` (also the NAdam update, ``torch.compile(optimizer.step)``:
   what ``Classifier(compile=True)`` does); ``eager+compiled-opt`` (the update only).
2. ``--trainer``: a Trainer epoch (45,000 images, as ``configs/cifar10/baseline.yaml`` trains,
   without validation) with ``compile: false`` vs ``compile: true``, seconds per epoch: each run
   trains a fresh model for 2 epochs and times the second (the first pays the compilation);
   ``train_loss_rel_diff``: relative difference of the two models' final epoch training loss.

Then the numerical check: the losses of eager and compiled training from the same weights
over ``--check-steps`` steps, largest relative difference. ``--profile`` prints torch.profiler
tables (top ops by self CPU time) of 20 eager and 20 compiled (model + optimizer) steps.

    python benchmarks/compile_speed.py --batch-sizes 32 128 1000 [--trainer] [--profile] [--threads 1] [--json out.json]

Compilation happens before timing (warm-up steps); its one-off cost is reported separately.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import (add_common_args, alternate, batches, load_tensors, machine, new_classifier, print_table, setup_threads,
                    train_steps, write_json)

LR = 5e-5  # configs/cifar10/baseline.yaml


def make(variant: str, images: torch.Tensor):
    """(model, optimizer, step function) for a variant."""
    model = new_classifier("baseline", images, compile=variant in ("compile", "compile+opt"))
    optimizer = torch.optim.NAdam(model.parameters(), lr=LR)
    step = torch.compile(optimizer.step) if variant.endswith("opt") else optimizer.step
    return model, optimizer, step


VARIANTS = ("eager", "compile", "compile+opt", "eager+compiled-opt")


def step_times(images, labels, batch_size: int, steps: int, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Best seconds per step of each variant, and each variant's warm-up (compilation) seconds."""
    runs, warmup = {}, {}
    for variant in VARIANTS:
        model, optimizer, step = make(variant, images)
        start = time.perf_counter()
        train_steps(model, optimizer, images, labels, batch_size, 3, step_fn=step)
        warmup[variant] = time.perf_counter() - start
        runs[variant] = (lambda m=model, o=optimizer, s=step: train_steps(m, o, images, labels, batch_size, steps, step_fn=s) / steps)
    return alternate(runs, repeats), warmup


def loss_agreement(images, labels, batch_size: int, steps: int) -> float:
    """Largest relative difference between eager and compiled (model and optimizer) training losses."""
    losses = {}
    for variant in ("eager", "compile+opt"):
        model, optimizer, step = make(variant, images)
        losses[variant] = []
        for x, y in batches(images, labels, batch_size, steps):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            step()
            losses[variant].append(loss.item())
    eager, compiled = torch.tensor(losses["eager"]), torch.tensor(losses["compile+opt"])
    return ((compiled - eager).abs() / eager.abs()).max().item()


def trainer_epochs(images, labels, batch_size: int, repeats: int) -> tuple[dict[str, float], float]:
    """Seconds per Trainer epoch with compile off and on (the epoch_overhead benchmark's Trainer), and
    the relative difference of their final training losses (2 epochs from the same weights)."""
    from epoch_overhead import LAST_FIT, trainer_epoch

    losses = {}

    def run(variant: str) -> float:
        seconds = trainer_epoch("baseline", images, labels, batch_size, Path(tmp), epochs=2,
                                model_kwargs={"compile": variant == "compile"})
        losses[variant] = LAST_FIT["metrics"]["train_loss"]
        return seconds

    with tempfile.TemporaryDirectory() as tmp:  # each run: a fresh model, 2 epochs, the 2nd timed
        best = alternate({"eager": lambda: run("eager"), "compile": lambda: run("compile")}, repeats)
    return best, abs(losses["compile"] - losses["eager"]) / losses["eager"]


def profile_tables(images, labels, batch_size: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    for variant in ("eager", "compile+opt"):  # compile+opt is what Classifier(compile=True) trains with
        model, optimizer, step = make(variant, images)
        train_steps(model, optimizer, images, labels, batch_size, 5, step_fn=step)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train_steps(model, optimizer, images, labels, batch_size, 20, step_fn=step)
        print(f"\n{variant}, batch {batch_size}, 20 steps:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=50))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 1000])
    parser.add_argument("--steps", type=int, default=300, help="steps per timed run at batch 32 (fewer for larger batches)")
    parser.add_argument("--check-steps", type=int, default=50)
    parser.add_argument("--trainer", action="store_true", help="also time whole Trainer epochs (45,000 images)")
    parser.add_argument("--profile", action="store_true")
    add_common_args(parser)
    args = parser.parse_args()
    setup_threads(args.threads)
    images, labels = load_tensors(None, 45_000 if args.trainer else 10_000)
    print(machine())
    rows = []
    for batch_size in args.batch_sizes:
        steps = max(20, args.steps * 32 // batch_size)
        best, warmup = step_times(images, labels, batch_size, steps, args.repeats)
        for variant in VARIANTS:
            rows.append({"batch_size": batch_size, "variant": variant, "ms_per_step": best[variant] * 1e3,
                         "speedup": best["eager"] / best[variant], "warmup_s": warmup[variant]})
        print_table(rows[-len(VARIANTS):], list(rows[-1]))
    print()
    print_table(rows, list(rows[0]))
    trainer_rows = []
    if args.trainer:
        for batch_size in args.batch_sizes:
            best, loss_difference = trainer_epochs(images, labels, batch_size, args.repeats)
            trainer_rows.append({"batch_size": batch_size, "eager_s_per_epoch": best["eager"],
                                 "compile_s_per_epoch": best["compile"], "speedup": best["eager"] / best["compile"],
                                 "train_loss_rel_diff": loss_difference})
            print_table(trainer_rows[-1:], list(trainer_rows[-1]))
    difference = loss_agreement(images, labels, 32, args.check_steps)
    print(f"\nlosses over {args.check_steps} steps, eager vs compiled (model + optimizer): max relative difference {difference:.2e}")
    if args.profile:
        profile_tables(images, labels, args.batch_sizes[0])
    write_json(args.json, rows, benchmark="compile_speed", repeats=args.repeats, trainer=trainer_rows,
               max_relative_loss_difference=difference)


if __name__ == "__main__":
    main()
