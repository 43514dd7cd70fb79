"""Reusing layers: initialize a network's lower layers from another run's checkpoint.

The chapter's recipe ("B on A"): keep model A's hidden layers, put a new output layer on
top for task B. Keras shares the layer objects, so training B silently changes A unless
A is cloned first; here the weights are always *copied* out of A's checkpoint file, which
is only read.

    model:
      init_from: {checkpoint: runs/A/model.ckpt, layers: all}   # or layers: 2 (the first two)

What is copied, by state-dict key (a Classifier's, or any module that names its MLP
``net``, such as :class:`~deeptrain.training.autoencoder.LayerwiseAutoencoder`):

- ``net.input_norm.*`` (when the network has an input BatchNorm) and ``net.backbone.<i>.*``
  for the reused hidden blocks ``i < k``: weights, biases and BatchNorm statistics;
- ``normalizer.*``: the input standardization statistics A was trained with, so that the
  reused first layer sees its inputs scaled as before (``normalizer: false`` keeps B's own);
- never the output layer: ``net.head`` is the new one, initialized as usual.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, Union

import torch
from torch import nn

NORMALIZER_KEYS = ("normalizer.mean", "normalizer.std", "normalizer.fitted")
CHECKED_NET_OPTIONS = ("activation", "norm", "norm_position", "input_norm")


@dataclass
class InitFrom:
    """Which checkpoint and which layers a new model reuses.

    Args:
        checkpoint: path to a Lightning checkpoint (or a plain state dict) whose keys follow
            ``net.backbone.<i>.…``.
        layers: ``all`` hidden blocks, or the first ``k`` (and the input BatchNorm, if any).
        normalizer: also copy the source's input-normalization statistics (recommended:
            the reused first layer was trained on inputs standardized with them).
        applied: set once the layers are copied (and so in every checkpoint saved after),
            so that loading such a checkpoint never copies the source again (the source
            file may be gone by then); leave it False.

    Examples:
        >>> InitFrom("runs/A/model.ckpt", layers=2)
        InitFrom(checkpoint='runs/A/model.ckpt', layers=2, normalizer=True, applied=False)
    """

    checkpoint: str
    layers: Union[int, Literal["all"]] = "all"
    normalizer: bool = True
    applied: bool = False

    def __post_init__(self) -> None:
        if self.layers != "all" and not (isinstance(self.layers, int) and self.layers >= 1):
            raise ValueError(f"invalid init_from.layers={self.layers!r}: expected 'all' or an int >= 1")

    @classmethod
    def coerce(cls, value: "InitFrom | dict | str") -> "InitFrom":
        """Accept an InitFrom, a dict (from YAML or a checkpoint's hparams) or a checkpoint path."""
        if isinstance(value, cls):
            return value
        if isinstance(value, (str, Path)):
            return cls(str(value))
        if isinstance(value, dict):
            unknown = sorted(set(value) - {f.name for f in fields(cls)})
            if unknown:
                raise ValueError(f"unknown init_from option(s) {unknown}; valid options: {[f.name for f in fields(cls)]}")
            return cls(**value)
        raise TypeError(f"init_from must be an InitFrom, a dict or a path, got {type(value).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reused_layer_names(net: nn.Module, layers: Union[int, str] = "all") -> list[str]:
    """Names (inside the MLP) of the layers reused with ``layers``, bottom to top:
    ``input_norm`` when it is a BatchNorm, then ``backbone.0`` … ``backbone.<k-1>``."""
    n = len(net.backbone)
    k = n if layers == "all" else layers
    if not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"invalid init_from.layers={layers!r}: this network has {n} hidden blocks, "
                         f"expected 'all' or an int in [1, {n}]")
    bottom = ["input_norm"] if isinstance(net.input_norm, nn.modules.batchnorm._BatchNorm) else []
    return bottom + [f"backbone.{i}" for i in range(k)]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint on the CPU, tensors and plain values only (never executes pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"init_from.checkpoint={str(path)!r} does not exist")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint if "state_dict" in checkpoint else {"state_dict": checkpoint}


def copy_layers_(model: nn.Module, spec: InitFrom) -> list[str]:
    """Copy the reused layers (and normalizer) of ``spec.checkpoint`` into ``model`` in place.

    ``model`` has the MLP as ``model.net``. Fails before copying anything when a reused key
    is missing on either side or its shape differs, naming the layer and both shapes.
    Returns the reused layer names (see :func:`reused_layer_names`).
    """
    names = reused_layer_names(model.net, spec.layers)
    checkpoint = load_checkpoint(spec.checkpoint)
    source, target = checkpoint["state_dict"], model.state_dict()
    keys = _matching_keys(source, target, [f"net.{name}." for name in names], spec.checkpoint)
    if spec.normalizer:
        keys += _normalizer_keys(source, spec.checkpoint)
    _warn_if_nets_differ(checkpoint.get("hyper_parameters", {}).get("net"), model, spec.checkpoint)
    with torch.no_grad():
        for key in keys:
            target[key].copy_(source[key])  # into the existing tensors: a copy, never shared storage
    return names


def _matching_keys(source: dict, target: dict, prefixes: list[str], path: str) -> list[str]:
    keys = []
    for prefix in prefixes:
        mine = [k for k in target if k.startswith(prefix)]
        theirs = [k for k in source if k.startswith(prefix)]
        layer = prefix.rstrip(".")
        if not theirs:
            blocks = len({k.split(".")[2] for k in source if k.startswith("net.backbone.")})
            raise ValueError(f"cannot reuse layer {layer}: checkpoint {path} has no such layer "
                             f"({blocks} hidden blocks, input BatchNorm: {any(k.startswith('net.input_norm.') for k in source)})")
        if sorted(mine) != sorted(theirs):
            raise ValueError(f"cannot reuse layer {layer}: its parameters differ; checkpoint {path} has "
                             f"{sorted(theirs)}, this model {sorted(mine)}")
        for key in mine:
            if source[key].shape != target[key].shape:
                raise ValueError(f"cannot reuse layer {layer}: {key} has shape {tuple(source[key].shape)} in "
                                 f"checkpoint {path} but {tuple(target[key].shape)} in this model")
        keys += mine
    return keys


def _normalizer_keys(source: dict, path: str) -> list[str]:
    if not all(k in source for k in NORMALIZER_KEYS) or not bool(source["normalizer.fitted"]):
        warnings.warn(f"init_from: checkpoint {path} has no fitted input statistics; "
                      "this model computes its own from its training data", stacklevel=3)
        return []
    return list(NORMALIZER_KEYS)


def _warn_if_nets_differ(source_net: dict | None, model: nn.Module, path: str) -> None:
    """Same shapes but another activation or normalization would reuse weights out of context."""
    if not isinstance(source_net, dict):
        return
    mine = model.net.config.to_dict()
    diff = [f"{k}: {source_net.get(k)!r} there, {mine[k]!r} here" for k in CHECKED_NET_OPTIONS
            if k in source_net and source_net[k] != mine[k]]
    if diff:
        warnings.warn(f"init_from: the network of {path} differs from this one ({'; '.join(diff)})", stacklevel=3)


def reused_layers(net: nn.Module, init_from: "InitFrom | dict | None") -> list[str]:
    """The layer names a model built with ``init_from`` reuses ([] without it); reads no file."""
    return [] if init_from is None else reused_layer_names(net, InitFrom.coerce(init_from).layers)


def apply_init_from(model: nn.Module) -> list[str]:
    """Copy the layers named by ``model.hparams.init_from`` from its checkpoint into ``model``,
    once: afterwards ``applied`` is True in the hparams (and so in every checkpoint saved)."""
    spec = model.hparams.get("init_from")
    if spec is None or spec.get("applied"):
        return []
    names = copy_layers_(model, InitFrom.coerce(spec))
    mark_applied(model.hparams)
    return names


def mark_applied(hparams: dict[str, Any]) -> None:
    """Record that the model's weights already hold the reused layers (copied, or loaded from a checkpoint)."""
    spec = hparams.get("init_from")
    if isinstance(spec, dict):
        hparams["init_from"] = {**spec, "applied": True}
