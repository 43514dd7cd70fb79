"""Inference latency (batch 1) and throughput (batch 1000) of the CIFAR-10 networks.

Models, each the normalizer plus the 20 x 100 ELU network as ``deeptrain export`` ships it
(raw uint8 images in, logits out), in eval mode under ``torch.inference_mode``:

- ``bn``: the batchnorm config (input BN + BN before every activation), trained for a few
  steps so its statistics are not the identity;
- ``bn_fused``: the same network after :func:`deeptrain.nn.fusion.fuse_batchnorm` (no BN left);
- ``no_bn``: the baseline network (same layers without BN);
- ``no_bn_leaky_relu``: the same with leaky ReLU (the chapter's advice for low latency);
- ``bn_fused_bf16`` / ``bn_fused_fp16``: the fused network with weights and activations in
  bfloat16 / float16.

    python benchmarks/inference.py [--batch-sizes 1 1000] [--repeats 7] [--json out.json]

Each timing is the best of ``--repeats`` runs of many calls, the models taking turns;
``speedup`` is relative to ``bn``; ``max_rel_err`` (``bn*`` models) is the largest difference of
the logits from the ``bn`` model's, relative to their largest magnitude, on 1,000 images.
"""

from __future__ import annotations

import argparse

import torch

from common import NETS, add_common_args, alternate, load_tensors, machine, new_classifier, print_table, setup_threads, time_calls, train_steps, write_json
from deeptrain.nn.mlp import MLPConfig
from deeptrain.tools.export import inference_model


def models(images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.nn.Module]:
    bn = new_classifier("batchnorm", images)
    train_steps(bn, torch.optim.NAdam(bn.parameters(), lr=1e-3), images, labels, 128, 20)  # BN statistics move
    fused = inference_model(bn, fuse_bn=True)
    leaky = MLPConfig(**{**NETS["baseline"].to_dict(), "activation": "leaky_relu"})
    return {
        "bn": inference_model(bn),
        "bn_fused": fused,
        "no_bn": inference_model(new_classifier("baseline", images)),
        "no_bn_leaky_relu": inference_model(new_classifier(leaky, images)),
        "bn_fused_bf16": inference_model(bn, fuse_bn=True).to(torch.bfloat16),
        "bn_fused_fp16": inference_model(bn, fuse_bn=True).to(torch.float16),
    }


def relative_error(model: torch.nn.Module, reference: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.inference_mode():
        expected = reference(x)
        return ((model(x).float() - expected).abs().max() / expected.abs().max()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 1000])
    add_common_args(parser, repeats=7)
    args = parser.parse_args()
    setup_threads(args.threads)
    images, labels = load_tensors(None, 10_000)
    print(machine())
    nets = models(images, labels)
    # only the bn_* models compute the bn network's function; the others are different networks
    errors = {name: relative_error(net, nets["bn"], images[:1000]) if name.startswith("bn") else None
              for name, net in nets.items()}
    rows = []
    for batch_size in args.batch_sizes:
        x = images[:batch_size]
        calls = max(3, 2000 // batch_size)

        def timer(net):
            def run():
                with torch.inference_mode():
                    return time_calls(lambda: net(x), calls)
            return run

        for net in nets.values():  # warm up (first-call allocations, oneDNN primitive caches)
            timer(net)()
        best = alternate({name: timer(net) for name, net in nets.items()}, args.repeats)
        for name in nets:
            rows.append({"batch_size": batch_size, "model": name, "ms_per_batch": best[name] * 1e3,
                         "images_per_s": batch_size / best[name], "speedup": best["bn"] / best[name],
                         "max_rel_err": errors[name]})
        print_table(rows[-len(nets):], list(rows[-1]))
    print()
    print_table(rows, list(rows[0]))
    write_json(args.json, rows, benchmark="inference", repeats=args.repeats)


if __name__ == "__main__":
    main()
