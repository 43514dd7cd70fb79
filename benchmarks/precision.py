"""Training precision: float32 vs bfloat16 mixed precision on the CIFAR-10 networks.

``bf16-mixed`` is Lightning's ``precision="bf16-mixed"``: forward and loss under
``torch.autocast(dtype=torch.bfloat16)`` (matmuls in bfloat16, weights and the update in
float32; no loss scaling needed, bfloat16 has float32's range). Whether it pays depends on
the hardware: CPUs with AMX / AVX512-BF16 run bfloat16 matmuls natively, others emulate them.

    python benchmarks/precision.py [--batch-sizes 32 128 1000] [--nets baseline batchnorm] [--trainer] [--json out.json]

Rows: ms per plain training step (no Lightning), best of ``--repeats``, the precisions taking
turns; with ``--trainer`` also seconds per Trainer epoch (45,000 images) with each
``precision`` setting. ``loss_rel_diff``: largest relative difference of the training loss from
float32 over the first 50 steps from the same weights (bfloat16 keeps ~3 significant digits).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from common import (NETS, add_common_args, alternate, batches, load_tensors, machine, new_classifier, print_table,
                    setup_threads, train_steps, write_json)

PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16}


def step_fn(net: str, precision: str, images, labels, batch_size: int, steps: int):
    model = new_classifier(net, images)
    optimizer = torch.optim.NAdam(model.parameters(), lr=5e-5)
    dtype = PRECISIONS[precision]
    train_steps(model, optimizer, images, labels, batch_size, 3, autocast=dtype)
    return lambda: train_steps(model, optimizer, images, labels, batch_size, steps, autocast=dtype) / steps


def losses(net: str, dtype, images, labels, steps: int = 50) -> torch.Tensor:
    model = new_classifier(net, images)
    optimizer = torch.optim.NAdam(model.parameters(), lr=5e-5)
    out = []
    for x, y in batches(images, labels, 32, steps):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        out.append(loss.item())
    return torch.tensor(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 1000])
    parser.add_argument("--nets", nargs="+", default=["baseline"], choices=sorted(NETS))
    parser.add_argument("--steps", type=int, default=300, help="steps per timed run at batch 32 (fewer for larger batches)")
    parser.add_argument("--trainer", action="store_true", help="also time Trainer epochs (45,000 images)")
    add_common_args(parser)
    args = parser.parse_args()
    setup_threads(args.threads)
    images, labels = load_tensors(None, 45_000 if args.trainer else 10_000)
    print(machine())
    rows = []
    for net in args.nets:
        reference = losses(net, None, images, labels)
        drift = ((losses(net, torch.bfloat16, images, labels) - reference).abs() / reference).max().item()
        for batch_size in args.batch_sizes:
            steps = max(20, args.steps * 32 // batch_size)
            best = alternate({p: step_fn(net, p, images, labels, batch_size, steps) for p in PRECISIONS}, args.repeats)
            row = {"net": net, "batch_size": batch_size, "fp32_ms": best["32-true"] * 1e3, "bf16_ms": best["bf16-mixed"] * 1e3,
                   "speedup": best["32-true"] / best["bf16-mixed"], "loss_rel_diff": drift}
            if args.trainer:
                from epoch_overhead import trainer_epoch

                with tempfile.TemporaryDirectory() as tmp:
                    epochs = alternate({p: (lambda p=p: trainer_epoch(net, images, labels, batch_size, Path(tmp), precision=p))
                                        for p in PRECISIONS}, args.repeats)
                row.update({"fp32_trainer_s": epochs["32-true"], "bf16_trainer_s": epochs["bf16-mixed"],
                            "trainer_speedup": epochs["32-true"] / epochs["bf16-mixed"]})
            rows.append(row)
            print_table(rows[-1:], list(row))
    print()
    print_table(rows, list(rows[0]))
    write_json(args.json, rows, benchmark="precision", repeats=args.repeats)


if __name__ == "__main__":
    main()
