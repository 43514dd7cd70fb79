"""The cost of torch's per-step CUDA probe on a machine without an NVIDIA driver.

Importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1``; with a CUDA build of torch and no
``libnvidia-ml.so.1`` every Adam-family ``optimizer.step()`` then fails a ``dlopen`` before it falls
back to ``cudaGetDeviceCount``. deeptrain drops the variable where NVML cannot load
(``deeptrain.training.cuda_probe``). This times a plain training loop of the CIFAR-10 baseline
network (20 x 100 ELU, NAdam, random bytes of CIFAR's shape) with the variable set (as Lightning
leaves it) and dropped (as deeptrain leaves it), taking turns in one process.

    python benchmarks/cuda_probe.py --batch_size 32 --steps 300 --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import os

import lightning  # noqa: F401  (sets PYTORCH_NVML_BASED_CUDA_CHECK=1)
import torch
import torch.nn.functional as F

from common import add_common_args, alternate, load_tensors, new_classifier, print_table, setup_threads, write_json
from deeptrain.training.cuda_probe import nvml_loadable

VARIABLE = "PYTORCH_NVML_BASED_CUDA_CHECK"


def steps(batch_size: int, count: int, probe: bool):
    images, labels = load_tensors(None, batch_size * count)
    model = new_classifier("baseline", images).train()
    optimizer = torch.optim.NAdam(model.parameters())
    batches = list(zip(images.split(batch_size), labels.split(batch_size)))

    def run() -> None:
        if probe:
            os.environ[VARIABLE] = "1"
        else:
            os.environ.pop(VARIABLE, None)
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    add_common_args(parser, repeats=5)
    args = parser.parse_args()
    setup_threads(args.threads)
    print(f"libnvidia-ml.so.1 loads: {nvml_loadable()}; torch {torch.__version__}")
    best = alternate({"probe (Lightning's setting)": steps(args.batch_size, args.steps, True),
                      "no probe (deeptrain's)": steps(args.batch_size, args.steps, False)}, args.repeats, warmup=1)
    on, off = best.values()
    rows = [{"batch_size": args.batch_size, "steps": args.steps, "probe_ms_per_step": 1000 * on / args.steps,
             "no_probe_ms_per_step": 1000 * off / args.steps, "speedup": on / off}]
    print_table(rows, list(rows[0]))
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
