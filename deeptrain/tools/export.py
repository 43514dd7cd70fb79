"""``deeptrain export``: a checkpoint -> one file that any PyTorch program runs, without deeptrain.

    deeptrain export --ckpt logs/.../best.ckpt [--fuse-bn] [--softmax] [--out model.pt2]

The file is a ``torch.export`` program (``torch.export.save``) holding the input
normalization (the training split's statistics), the network -- with ``--fuse-bn``, every
BatchNorm folded into a Linear (:func:`deeptrain.nn.fusion.fuse_batchnorm`) -- and, with
``--softmax``, the softmax; the batch dimension is dynamic. Load it with torch alone::

    import torch
    model = torch.export.load("model.pt2").module()
    logits = model(images)  # raw pixels (B, C, H, W), uint8 as in training (or --input-dtype float32)

Before saving, the tool checks that the program reproduces the checkpoint's eval-mode
outputs on random images, and prints the largest difference.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from deeptrain.nn.fusion import fuse_batchnorm
from deeptrain.nn.mlp import MLP
from deeptrain.nn.normalization import InputNormalizer
from deeptrain.training.module import Classifier

INPUT_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}


class InferenceModel(nn.Module):
    """Raw images -> logits (or probabilities): the Classifier's forward without Lightning."""

    def __init__(self, normalizer: InputNormalizer, net: MLP, softmax: bool = False):
        super().__init__()
        self.normalizer, self.net, self.softmax = normalizer, net, softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(self.normalizer(x))  # (B, num_classes)
        return logits.softmax(dim=-1) if self.softmax else logits


def inference_model(model: Classifier, fuse_bn: bool = False, softmax: bool = False) -> InferenceModel:
    """An eval-mode copy of ``model``'s normalizer and network, BatchNorms folded if ``fuse_bn``."""
    net = fuse_batchnorm(model.net) if fuse_bn else _copy(model.net)
    return InferenceModel(_copy(model.normalizer), net, softmax).eval()


def _copy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).eval()


def export_program(module: nn.Module, input_shape: Sequence[int], dtype: torch.dtype = torch.uint8) -> Any:
    """``torch.export`` of ``module`` on images ``(B, *input_shape)`` with a dynamic batch size B >= 1."""
    example = torch.zeros(2, *input_shape, dtype=dtype)  # B=2: torch.export specializes sizes 0 and 1
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(module, (example,), dynamic_shapes=({0: batch},))


def max_difference(program: Any, reference: nn.Module, input_shape: Sequence[int], dtype: torch.dtype) -> float:
    """Largest |program(x) - reference(x)| over a few random batches (batch sizes 1 and 7)."""
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    with torch.no_grad():
        for batch in (1, 7):
            x = torch.randint(0, 256, (batch, *input_shape), generator=g).to(dtype)
            worst = max(worst, (program(x) - reference(x)).abs().max().item())
    return worst


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="deeptrain export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a Classifier checkpoint (.ckpt)")
    parser.add_argument("--out", default=None, help="output file (default: the checkpoint's path with .pt2)")
    parser.add_argument("--fuse-bn", action="store_true", help="fold every BatchNorm into a Linear")
    parser.add_argument("--softmax", action="store_true", help="output probabilities instead of logits")
    parser.add_argument("--input-dtype", default="uint8", choices=sorted(INPUT_DTYPES),
                        help="dtype of the images the program takes (default: uint8, raw pixels)")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str]) -> Path:
    args = parse_args(argv)
    # compile=False: a model trained compiled is exported as is; compiling the reference would only cost time
    model = Classifier.load_from_checkpoint(args.ckpt, map_location="cpu", compile=False).eval()
    module = inference_model(model, fuse_bn=args.fuse_bn, softmax=args.softmax)
    shape, dtype = model.net.input_shape, INPUT_DTYPES[args.input_dtype]
    program = export_program(module, shape, dtype)
    reference = nn.Sequential(model, nn.Softmax(dim=-1)) if args.softmax else model
    diff = max_difference(program.module(), reference, shape, dtype)
    out = Path(args.out) if args.out else Path(args.ckpt).with_suffix(".pt2")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, out)
    fused = " (BatchNorm fused)" if args.fuse_bn else ""
    print(f"saved {out}{fused}: input (B, {', '.join(map(str, shape))}) {args.input_dtype}, "
          f"max |difference| to the checkpoint {diff:.2e}")
    return out
