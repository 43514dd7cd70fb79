"""Keras 3's optimizers as torch optimizers with the arguments that make them equal.

``KERAS_OPTIMIZERS`` maps each Keras name to a torch class and the torch arguments that give
Keras's defaults (docs/keras.md explains each). From YAML, the same arguments go in
``model.optimizer.init_args``; in Python, ``keras_optimizer("Nadam", params, lr=5e-4)``.

How close each one is (tests/test_keras_parity.py checks them against Keras's update rules):

- ``SGD`` (with or without ``momentum``/``nesterov``): equal at a constant lr. Keras folds the lr
  into its velocity (``m <- momentum * m - lr * g``), torch applies it after
  (``b <- momentum * b + g; w -= lr * b``): under a schedule the two differ slightly.
- ``Nadam``: equal. Keras 3's momentum schedule ``mu_t = beta1 (1 - 0.5 * 0.96^t)`` is torch's
  ``0.96^(t * momentum_decay)`` with ``momentum_decay = 1``; torch's default 4e-3 is Keras 2's
  legacy schedule (after 1407 steps, one CIFAR-10 epoch at batch 32: mu 0.54 against 0.90).
- ``Adagrad``: Keras divides by ``sqrt(acc + eps)``, torch by ``sqrt(acc) + eps``; with the
  accumulator starting at 0.1 the two differ by under 1e-6 relative.
- ``RMSprop`` (``rho`` is torch's ``alpha``): Keras divides by ``sqrt(v + eps)``, torch by
  ``sqrt(v) + eps``: equal to ~1e-6 while ``sqrt(v) >> sqrt(1e-7) = 3e-4``, apart for gradients
  much smaller than that (Keras's steps are then smaller).
- ``Adam``/``AdamW``: Keras's epsilon is the paper's "epsilon hat", added before the bias
  correction: it acts as torch's ``eps = epsilon / sqrt(1 - beta2^t)``, the same once
  ``sqrt(v)`` dwarfs it. ``Adamax``: Keras divides by ``u + eps``, torch by
  ``u = max(beta2 u, |g| + eps)``: the same once ``|g|`` dwarfs eps.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch.optim import Optimizer

KERAS_OPTIMIZERS: dict[str, tuple[type[Optimizer], dict[str, Any]]] = {
    "SGD": (torch.optim.SGD, {"lr": 0.01}),
    "Adam": (torch.optim.Adam, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7}),
    "AdamW": (torch.optim.AdamW, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7, "weight_decay": 0.004}),
    "Adamax": (torch.optim.Adamax, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7}),
    "Nadam": (torch.optim.NAdam, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7, "momentum_decay": 1.0}),
    "RMSprop": (torch.optim.RMSprop, {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7, "momentum": 0.0, "centered": False}),
    "Adagrad": (torch.optim.Adagrad, {"lr": 1e-3, "initial_accumulator_value": 0.1, "eps": 1e-7}),
}


def keras_optimizer(name: str, params: Iterable[Any], **overrides: Any) -> Optimizer:
    """The torch optimizer for Keras's ``name`` with Keras's defaults; ``overrides`` in torch's names.

    Example:
        >>> opt = keras_optimizer("Nadam", [torch.nn.Parameter(torch.zeros(2))], lr=5e-4)
        >>> opt.defaults["momentum_decay"], opt.defaults["eps"], opt.defaults["lr"]
        (1.0, 1e-07, 0.0005)
    """
    if name not in KERAS_OPTIMIZERS:
        raise ValueError(f"unknown Keras optimizer {name!r}; valid choices: {', '.join(KERAS_OPTIMIZERS)}")
    cls, defaults = KERAS_OPTIMIZERS[name]
    return cls(params, **{**defaults, **overrides})
