"""Denormal floats: training-step time of a trained network with and without flushing them to zero.

ELU and SELU turn very negative pre-activations into denormals (exp(x) for x < -87), and an x86
CPU computes each denormal ~100x slower than a normal float. A network trained for a while has
such pre-activations, so its epochs slow down as training goes on. deeptrain's CLI calls
``torch.set_flush_denormal(True)`` (``deeptrain.cli.flush_denormals``); this measures why.

    python benchmarks/denormals.py --ckpt reports/fashion_mnist/runs/best/seed0/checkpoints/last.ckpt [--threads 1]

(that checkpoint is written by ``deeptrain compare configs/fashion_mnist/best.yaml --seeds 1
--out reports/fashion_mnist``). The denormals are in the backward pass: ELU's derivative there
is exp(x), denormal for -104 < x < -87, and so is every gradient multiplied by it.
"""

from __future__ import annotations

import argparse

import torch

from common import add_common_args, alternate, machine, print_table, setup_threads, time_calls, write_json
from deeptrain.training.module import Classifier


def elu_inputs_in_denormal_band(model: Classifier, x: torch.Tensor) -> float:
    """Share of the ELU inputs of one batch in (-104, -87), where exp(x) is a denormal float32."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, a, out: seen.append(((a[0] > -103.97) & (a[0] < -87.34)).float().mean()))
             for m in model.modules() if isinstance(m, torch.nn.ELU)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return float(torch.stack(seen).mean()) if seen else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a trained Classifier checkpoint")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="training steps per timing")
    add_common_args(parser, repeats=3)
    args = parser.parse_args()
    setup_threads(args.threads)
    model = Classifier.load_from_checkpoint(args.ckpt, map_location="cpu").train()
    optimizer = torch.optim.NAdam(model.parameters(), lr=1e-6)  # the end of a 1cycle: tiny steps
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.batch_size, *model.hparams.input_shape), dtype=torch.uint8, generator=g)
    y = torch.randint(0, model.hparams.num_classes, (args.batch_size,), generator=g)

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    def timed(flush: bool):
        def run() -> float:
            torch.set_flush_denormal(flush)
            return time_calls(step, args.steps)
        return run

    print(machine())
    share = elu_inputs_in_denormal_band(model, x)
    best = alternate({"keep": timed(False), "flush": timed(True)}, args.repeats, warmup=1)
    torch.set_flush_denormal(False)
    rows = [{"elu_inputs_denormal_band": share, "keep_ms": best["keep"] * 1e3, "flush_ms": best["flush"] * 1e3,
             "keep/flush": best["keep"] / best["flush"]}]
    print_table(rows, list(rows[0]))
    write_json(args.json, rows, benchmark="denormals", ckpt=args.ckpt, repeats=args.repeats)


if __name__ == "__main__":
    main()
