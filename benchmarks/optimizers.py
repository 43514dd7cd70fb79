"""Optimizer implementations on the CIFAR-10 baseline network: single-tensor vs foreach vs fused.

torch.optim has three implementations of most optimizers: a Python loop over the parameters
("single-tensor", torch's default for CPU tensors), ``foreach=True`` (one multi-tensor kernel
per operation, torch's default on CUDA) and ``fused=True`` (one kernel for the whole update;
Adam, AdamW, SGD, Adagrad on CPU and CUDA). The network has 42 parameter tensors, so at a
small batch the per-parameter Python loop is a visible part of each step.

    python benchmarks/optimizers.py [--batch-sizes 32 1000] [--steps 300] [--repeats 5] [--json out.json]

Each row: seconds per training step (forward, backward, update) of a plain loop, best of
``--repeats`` rounds, the variants taking turns; ``speedup`` is relative to the single-tensor
implementation of the same optimizer.
"""

from __future__ import annotations

import argparse

import torch

from common import add_common_args, alternate, load_tensors, machine, new_classifier, print_table, setup_threads, train_steps, write_json

OPTIMIZERS = {"NAdam": torch.optim.NAdam, "Adam": torch.optim.Adam, "SGD": torch.optim.SGD}
KWARGS = {"NAdam": {"lr": 5e-5}, "Adam": {"lr": 1e-4}, "SGD": {"lr": 1e-3, "momentum": 0.9, "nesterov": True}}
IMPLEMENTATIONS = {"single-tensor": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def supports(optimizer: type, implementation: str) -> bool:
    """Whether this torch has the implementation for CPU tensors (NAdam has no fused one)."""
    try:
        optimizer([torch.zeros(1, requires_grad=True)], **IMPLEMENTATIONS[implementation])
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def variant(name: str, implementation: str, images, labels, batch_size: int, steps: int):
    model = new_classifier("baseline", images)
    optimizer = OPTIMIZERS[name](model.parameters(), **KWARGS[name], **IMPLEMENTATIONS[implementation])
    train_steps(model, optimizer, images, labels, batch_size, 5)  # state allocated, caches warm
    return lambda: train_steps(model, optimizer, images, labels, batch_size, steps) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 1000])
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=list(OPTIMIZERS))
    parser.add_argument("--steps", type=int, default=300, help="training steps per timed run")
    add_common_args(parser, repeats=5)
    args = parser.parse_args()
    setup_threads(args.threads)
    images, labels = load_tensors(None, 10_000)
    print(machine())
    rows = []
    for batch_size in args.batch_sizes:
        steps = max(20, args.steps * 32 // batch_size)
        for name in args.optimizers:
            impls = [i for i in IMPLEMENTATIONS if supports(OPTIMIZERS[name], i)]
            best = alternate({i: variant(name, i, images, labels, batch_size, steps) for i in impls}, args.repeats)
            for impl in impls:
                rows.append({"batch_size": batch_size, "optimizer": name, "implementation": impl,
                             "ms_per_step": best[impl] * 1e3, "speedup": best["single-tensor"] / best[impl]})
            print_table(rows[-len(impls):], list(rows[-1]))
    print()
    print_table(rows, list(rows[0]))
    write_json(args.json, rows, benchmark="optimizers", repeats=args.repeats)


if __name__ == "__main__":
    main()
