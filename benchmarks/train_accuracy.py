"""The per-step cost of the training accuracy: a torchmetrics ``update`` against a device counter.

The Classifier's training step once called ``MulticlassAccuracy(average="micro").update(logits, y)``
on every step; it now adds ``(logits.argmax(1) == y).sum()`` to a device tensor and divides at the
epoch's end (the same micro accuracy). This times one step's worth of each on CIFAR-10-shaped
logits (10 classes), the two taking turns, best of ``--repeats`` rounds of ``--steps`` steps:

    python benchmarks/train_accuracy.py --threads 1 --repeats 5
"""

from __future__ import annotations

import argparse
import time

import torch
from torchmetrics.classification import MulticlassAccuracy

from common import add_common_args, alternate, machine, print_table, setup_threads, write_json


def per_step(update, steps: int) -> float:
    start = time.thread_time()
    for _ in range(steps):
        update()
    return (time.thread_time() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[32, 1000])
    parser.add_argument("--steps", type=int, default=2000, help="steps per round")
    add_common_args(parser, repeats=5)
    args = parser.parse_args()
    setup_threads(args.threads)
    print(machine()["cpu"], flush=True)
    rows = []
    for batch_size in args.batch_sizes:
        logits, y = torch.randn(batch_size, 10), torch.randint(0, 10, (batch_size,))
        metric, correct = MulticlassAccuracy(10, average="micro"), torch.zeros((), dtype=torch.long)
        best = alternate({"torchmetrics": lambda: per_step(lambda: metric.update(logits, y), args.steps),
                          "counter": lambda: per_step(lambda: correct.add_((logits.argmax(dim=1) == y).sum()), args.steps)},
                         args.repeats, warmup=1)
        rows.append({"batch_size": batch_size, "torchmetrics_us": 1e6 * best["torchmetrics"], "counter_us": 1e6 * best["counter"],
                     "speedup": best["torchmetrics"] / best["counter"]})
    print_table(rows, list(rows[0]))
    write_json(args.json, rows, benchmark="train_accuracy", steps=args.steps, repeats=args.repeats)


if __name__ == "__main__":
    main()
