"""MC-dropout prediction throughput: T separate forward passes vs the vectorized paths.

    python benchmarks/mc_dropout.py [--images 5000 32] [--samples 10 100] [--placement output all]

The network is a freshly initialized Classifier of the shape of
configs/cifar10/alpha_dropout.yaml (3x32x32 uint8 pixels -> normalizer -> 20 x 100 SELU ->
alpha dropout 0.1 -> 10 logits); throughput does not depend on the weights. Methods:

- ``loop``: T Python-level forward passes over the batch (dropout on, everything else in
  eval mode): the seeds' ``np.stack([model(X, training=True) for _ in range(T)])`` done right;
- ``vectorized``: :func:`mc_predict` with ``share_prefix=False``: the input repeated T
  times along the batch, chunked to ``chunk_size`` rows per forward;
- ``shared prefix``: :func:`mc_predict` as the Classifier calls it: the rows are repeated
  at the first dropout layer, so the deterministic layers below it run once.

Images/s counts input images given T-sample predictions (mean and std); best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

from deeptrain.nn.mc_dropout import mc_dropout_mode, mc_predict
from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.module import Classifier


def build(placement: str) -> Classifier:
    net = MLPConfig(depth=20, width=100, activation="selu", kernel_init="lecun_normal",
                    dropout=0.1, dropout_kind="alpha", dropout_placement=placement)
    return Classifier(net, input_shape=(3, 32, 32), num_classes=10).eval()


@torch.no_grad()
def loop_predict(model: torch.nn.Module, x: torch.Tensor, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    with mc_dropout_mode(model):
        probs = torch.stack([model(x).softmax(dim=-1) for _ in range(samples)])
    std, mean = torch.std_mean(probs, dim=0, correction=0)
    return mean, std


def best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocator, kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[5000, 32])
    parser.add_argument("--samples", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--placement", nargs="+", default=["output", "all"], help="dropout_placement of the net")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"images/s (higher is better), best of {args.repeats}")
    print(f"{'dropout':<8} {'N':>5} {'T':>4} {'deterministic':>13} {'loop':>9} {'vectorized':>10} {'shared prefix':>13} "
          f"{'vec/loop':>8} {'shared/loop':>11}")
    for placement in args.placement:
        model = build(placement)
        for n in args.images:
            x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
            with torch.no_grad():
                det = n / best_time(lambda: model(x), args.repeats)
            for t in args.samples:
                loop = n / best_time(lambda: loop_predict(model, x, t), args.repeats)
                vec = n / best_time(lambda: mc_predict(model, x, t, share_prefix=False), args.repeats)
                shared = n / best_time(lambda: mc_predict(model, x, t, share_prefix=True), args.repeats)
                print(f"{placement:<8} {n:>5} {t:>4} {det:>13,.0f} {loop:>9,.0f} {vec:>10,.0f} {shared:>13,.0f} "
                      f"{vec / loop:>7.2f}x {shared / loop:>10.2f}x", flush=True)


if __name__ == "__main__":
    main()
