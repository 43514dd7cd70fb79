"""``deeptrain export``: a checkpoint -> one file that any PyTorch program runs, without deeptrain.

    deeptrain export --ckpt_path logs/.../best.ckpt [--fuse_bn true] [--softmax true] [--dtype bfloat16] [--out model.pt2]

The file is a ``torch.export`` program (``torch.export.save``) holding the input
normalization (the training split's statistics), the network -- with ``--fuse_bn``, every
BatchNorm folded into a Linear (:func:`deeptrain.nn.fusion.fuse_batchnorm`) -- and, with
``--softmax``, the softmax; the batch dimension is dynamic. Load it with torch alone::

    import torch
    model = torch.export.load("model.pt2").module()
    logits = model(images)  # raw pixels (B, C, H, W), uint8 as in training (or --input_dtype float32)

Before saving, the tool checks that the program reproduces the checkpoint's eval-mode
outputs on random images, and prints the largest difference.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import torch
from torch import nn

from deeptrain.nn.fusion import fuse_batchnorm
from deeptrain.nn.mlp import MLP
from deeptrain.nn.normalization import InputNormalizer
from deeptrain.training.checkpoint_io import UNREADABLE, as_corrupt_checkpoint_error
from deeptrain.training.module import Classifier

INPUT_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class InferenceModel(nn.Module):
    """Raw images -> logits (or probabilities): the Classifier's forward without Lightning."""

    def __init__(self, normalizer: InputNormalizer, net: MLP, softmax: bool = False):
        super().__init__()
        self.normalizer, self.net, self.softmax = normalizer, net, softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(self.normalizer(x)).float()  # (B, num_classes), float32 whatever the weights' dtype
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


def export(ckpt_path: str, out: Optional[str] = None, fuse_bn: bool = False, softmax: bool = False,
           input_dtype: Literal["uint8", "float32"] = "uint8",
           dtype: Literal["float32", "bfloat16", "float16"] = "float32") -> Path:
    """Export a checkpoint to one torch.export file that any PyTorch program runs, without deeptrain.

    Args:
        ckpt_path: a Classifier checkpoint (.ckpt).
        out: output file (default: the checkpoint's path with .pt2).
        fuse_bn: fold every BatchNorm into the Linear beside it.
        softmax: output probabilities instead of logits.
        input_dtype: dtype of the images the program takes (uint8: raw pixels, as in training).
        dtype: precision of the weights and the computation; the outputs are float32 either way.
            bfloat16/float16 halve the file and are faster only where the hardware has fast
            kernels for them (see the docs' speed page).
    """
    model = load_checkpoint(ckpt_path)
    module = inference_model(model, fuse_bn=fuse_bn, softmax=softmax).to(DTYPES[dtype])
    shape, x_dtype = model.net.input_shape, INPUT_DTYPES[input_dtype]
    program = export_program(module, shape, x_dtype)
    reference = nn.Sequential(model, nn.Softmax(dim=-1)) if softmax else model
    diff = max_difference(program.module(), reference, shape, x_dtype)
    path = Path(out) if out else Path(ckpt_path).with_suffix(".pt2")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path)
    fused = " (BatchNorm fused)" if fuse_bn else ""
    print(f"saved {path}{fused}: input (B, {', '.join(map(str, shape))}) {input_dtype}, computed in {dtype}, "
          f"max |difference| to the float32 checkpoint {diff:.2e}")
    return path


def load_checkpoint(ckpt_path: str) -> Classifier:
    """The checkpoint's Classifier in eval mode, or a one-line error that says what is wrong with the file."""
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"no checkpoint at {ckpt_path}")
    try:  # compile=False: a model trained compiled is exported as is
        return Classifier.load_from_checkpoint(ckpt_path, map_location="cpu", compile=False).eval()
    except UNREADABLE as err:
        raise as_corrupt_checkpoint_error(ckpt_path, err) from err
