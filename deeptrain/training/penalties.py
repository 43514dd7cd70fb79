"""l1 / l2 weight penalties in the Keras sense: ``factor * sum|w|`` and ``factor * sum w^2``.

Only the weights of Linear layers are penalized (not biases, not normalization parameters),
as Keras' ``kernel_regularizer`` does. Keras penalizes exactly the layers given a regularizer; the
book gives one to every Dense layer, output included (``penalize_output=True``, the default here);
``penalize_output=False`` leaves the output layer out, as a Keras model whose last Dense has none.
"""

from __future__ import annotations

import torch
from torch import nn


def linear_weights(model: nn.Module, exclude: tuple[nn.Module, ...] = ()) -> list[torch.Tensor]:
    """The weights of every Linear in ``model`` except the modules in ``exclude`` (e.g. the output layer)."""
    skipped = {id(m) for m in exclude}
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear) and id(m) not in skipped]


def weight_penalty(weights: list[torch.Tensor], l1: float = 0.0, l2: float = 0.0) -> torch.Tensor:
    """``l1 * sum_i |w_i| + l2 * sum_i w_i^2`` over all given weight tensors."""
    penalty = weights[0].new_zeros(())
    if l1:
        penalty = penalty + l1 * sum(w.abs().sum() for w in weights)
    if l2:
        penalty = penalty + l2 * sum(w.square().sum() for w in weights)
    return penalty
