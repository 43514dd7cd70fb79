"""Keras-semantics BatchNorm: training-step time of the exercise-8c network with each BN.

``net.bn_semantics: keras`` (:class:`deeptrain.nn.normalization.KerasBatchNorm1d`) runs torch's
fused kernel on copies of the running statistics, then rewrites the moving variance with the
biased batch variance: five small ops on (C,) vectors per layer. This measures what that costs per
training step (forward, backward, NAdam step) of configs/cifar10/batchnorm.yaml's 20 x 100
network, 21 BN layers, on random bytes. On a shared 2-core Xeon (load 6-7) the step ratio read
1.1-1.3x at batch 32 and 1.0x at batch 256; one layer's forward + backward alone took 59 -> 73 us
at batch 32 and 229 -> 251 us at batch 256 (best of 15, one thread).

    python benchmarks/keras_batchnorm.py [--batch-size 32] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from common import NETS, add_common_args, alternate, load_tensors, machine, new_classifier, print_table, setup_threads, train_steps, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100, help="training steps per timing")
    add_common_args(parser, repeats=5)
    args = parser.parse_args()
    setup_threads(args.threads)
    images, labels = load_tensors(None, n=5000)
    runs = {}
    for semantics in ("torch", "keras"):
        model = new_classifier(replace(NETS["batchnorm"], bn_semantics=semantics), images)
        optimizer = torch.optim.NAdam(model.parameters(), lr=5e-4)
        runs[semantics] = lambda m=model, o=optimizer: train_steps(m, o, images, labels, args.batch_size, args.steps)
    print(machine())
    best = alternate(runs, args.repeats, warmup=1)
    rows = [{"batch": args.batch_size, "torch_ms_per_step": best["torch"] / args.steps * 1e3,
             "keras_ms_per_step": best["keras"] / args.steps * 1e3, "keras/torch": best["keras"] / best["torch"]}]
    print_table(rows, list(rows[0]))
    write_json(args.json, rows, benchmark="keras_batchnorm", steps=args.steps, repeats=args.repeats)


if __name__ == "__main__":
    main()
