"""MC dropout inference: a Python loop of T forward passes vs deeptrain's batched ``mc_predict``.

Networks (20 x 100, CIFAR-10 inputs): ``alpha_output`` is ``configs/cifar10/alpha_dropout.yaml``
(SELU, alpha dropout before the output layer only); ``dropout_all`` has standard dropout after
every hidden layer. Variants, each returning the mean and std of the T softmax outputs:

- ``loop``: T forward passes with dropout on (what a Keras ``model(x, training=True)`` loop does);
- ``batched``: ``mc_predict(share_prefix=False)``: the input repeated T times, one forward
  (chunked at 40,000 rows);
- ``shared``: ``mc_predict(share_prefix=True)``: the rows repeated at the first dropout layer,
  so the deterministic layers below it run once.

``cost``: time over one deterministic forward of the same N images (the "MC dropout makes
inference T times slower" factor).

    python benchmarks/mc_dropout_speed.py [--n 1 1000] [--samples 10 100] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse

import torch

from common import add_common_args, alternate, load_tensors, machine, new_classifier, print_table, setup_threads, time_calls, write_json
from deeptrain.nn.mc_dropout import mc_dropout_mode, mc_predict
from deeptrain.nn.mlp import MLPConfig

NETS = {
    "alpha_output": MLPConfig(depth=20, width=100, activation="selu", kernel_init="lecun_normal", dropout=0.1,
                              dropout_kind="alpha", dropout_placement="output"),
    "dropout_all": MLPConfig(depth=20, width=100, activation="elu", kernel_init="he_normal", dropout=0.2),
}


@torch.no_grad()
def loop_predict(model: torch.nn.Module, x: torch.Tensor, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    with mc_dropout_mode(model):
        probs = torch.stack([model(x).softmax(-1) for _ in range(samples)])  # (T, N, C)
    std, mean = torch.std_mean(probs, dim=0, correction=0)
    return mean, std


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[1, 1000], help="images per prediction")
    parser.add_argument("--samples", type=int, nargs="+", default=[10, 100], help="T, stochastic passes")
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    add_common_args(parser, repeats=5)
    args = parser.parse_args()
    setup_threads(args.threads)
    images, _ = load_tensors(None, max(args.n) + 5000)
    print(machine())
    rows = []
    for name in args.nets:
        model = new_classifier(NETS[name], images).eval()
        for n in args.n:
            x = images[:n]
            calls = max(1, 200 // n)  # enough calls per timing at N = 1
            with torch.no_grad():
                deterministic = alternate({"forward": lambda: time_calls(lambda: model(x), calls * 10)}, args.repeats)["forward"]
            for samples in args.samples:
                best = alternate({
                    "loop": lambda: time_calls(lambda: loop_predict(model, x, samples), calls),
                    "batched": lambda: time_calls(lambda: mc_predict(model, x, samples, share_prefix=False), calls),
                    "shared": lambda: time_calls(lambda: mc_predict(model, x, samples, share_prefix=True), calls),
                }, args.repeats)
                rows.append({"net": name, "n": n, "T": samples, "loop_ms": best["loop"] * 1e3,
                             "batched_ms": best["batched"] * 1e3, "shared_ms": best["shared"] * 1e3,
                             "loop/batched": best["loop"] / best["batched"], "loop/shared": best["loop"] / best["shared"],
                             "cost_loop": best["loop"] / deterministic, "cost_shared": best["shared"] / deterministic})
                print_table(rows[-1:], list(rows[-1]))
    print()
    print_table(rows, list(rows[0]))
    write_json(args.json, rows, benchmark="mc_dropout_speed", repeats=args.repeats)


if __name__ == "__main__":
    main()
