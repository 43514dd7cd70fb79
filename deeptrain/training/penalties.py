"""l1 / l2 weight penalties in the Keras sense: ``factor * sum|w|`` and ``factor * sum w^2``.

Only the weights of Linear layers are penalized (not biases, not normalization parameters),
as Keras' ``kernel_regularizer`` does.
"""

from __future__ import annotations

import torch
from torch import nn


def linear_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


def weight_penalty(weights: list[torch.Tensor], l1: float = 0.0, l2: float = 0.0) -> torch.Tensor:
    """``l1 * sum_i |w_i| + l2 * sum_i w_i^2`` over all given weight tensors."""
    penalty = weights[0].new_zeros(())
    if l1:
        penalty = penalty + l1 * sum(w.abs().sum() for w in weights)
    if l2:
        penalty = penalty + l2 * sum(w.square().sum() for w in weights)
    return penalty
