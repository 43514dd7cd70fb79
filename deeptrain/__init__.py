"""deeptrain: the techniques of training deep networks (Hands-On ML, chapter 11) in PyTorch + Lightning.

Top-level names are imported lazily, so ``import deeptrain.nn`` stays free of Lightning.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "MLP": "deeptrain.nn.mlp",
    "MLPConfig": "deeptrain.nn.mlp",
    "ACTIVATIONS": "deeptrain.nn.activations",
    "get_activation": "deeptrain.nn.activations",
    "INITIALIZERS": "deeptrain.nn.initializers",
    "get_initializer": "deeptrain.nn.initializers",
    "Classifier": "deeptrain.training.module",
    "PowerLR": "deeptrain.training.schedules",
    "ExponentialDecayLR": "deeptrain.training.schedules",
    "PiecewiseConstantLR": "deeptrain.training.schedules",
    "CosineDecayLR": "deeptrain.training.schedules",
    "ImageDataModule": "deeptrain.data.datamodule",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'deeptrain' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
