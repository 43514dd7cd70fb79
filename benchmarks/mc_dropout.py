"""MC dropout inference: a Python loop of T forward passes vs deeptrain's batched ``mc_predict``.

Networks (20 x 100, CIFAR-10 inputs): ``alpha_output`` is ``configs/cifar10/alpha_dropout.yaml``
(SELU, alpha dropout before the output layer only); ``dropout_all`` has standard dropout after
every hidden layer. Variants, each returning the mean and std of the T softmax outputs:

- ``loop``: T forward passes with dropout on (what a Keras ``model(x, training=True)`` loop does);
- ``batched``: ``mc_predict(share_prefix=False)``: the input repeated T times along the batch,
  at most ``chunk_size`` rows per forward;
- ``shared``: ``mc_predict(share_prefix=True)``: the rows repeated at the first dropout layer,
  so the deterministic layers below it run once.

``cost``: time over one deterministic forward of the same N images (the "MC dropout makes
inference T times slower" factor). ``--chunk-sizes`` times the batched paths at several
``chunk_size`` values (how the default, :func:`deeptrain.nn.mc_dropout.default_chunk_size`, was chosen).

    python benchmarks/mc_dropout.py [--n 1 1000] [--samples 10 100] [--chunk-sizes 1000 40000] [--repeats 5] [--json out.json]
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


def variants(model: torch.nn.Module, x: torch.Tensor, samples: int, chunk_sizes: list[int], calls: int) -> dict:
    """The loop, then batched and shared at every chunk size (suffixed with it when there are several)."""
    out = {"loop": lambda: time_calls(lambda: loop_predict(model, x, samples), calls)}
    for chunk in chunk_sizes:
        suffix = f"@{chunk}" if len(chunk_sizes) > 1 else ""  # chunk None: mc_predict's default
        for name, share in (("batched", False), ("shared", True)):
            out[name + suffix] = (lambda share=share, chunk=chunk: time_calls(
                lambda: mc_predict(model, x, samples, chunk_size=chunk, share_prefix=share), calls))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[1, 1000], help="images per prediction")
    parser.add_argument("--samples", type=int, nargs="+", default=[10, 100], help="T, stochastic passes")
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[None],
                        help="mc_predict chunk_size values (default: the library's default_chunk_size)")
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
                best = alternate(variants(model, x, samples, args.chunk_sizes, calls), args.repeats)
                row = {"net": name, "n": n, "T": samples, **{f"{k}_ms": v * 1e3 for k, v in best.items()}}
                row.update({f"loop/{k}": best["loop"] / v for k, v in best.items() if k != "loop"})
                row.update({f"cost_{k}": v / deterministic for k, v in best.items() if k == "loop" or k.startswith("shared")})
                rows.append(row)
                print_table(rows[-1:], list(rows[-1]))
    print()
    print_table(rows, list(rows[0]))
    write_json(args.json, rows, benchmark="mc_dropout", repeats=args.repeats, chunk_sizes=args.chunk_sizes)


if __name__ == "__main__":
    main()
