"""Normalization layers: the input preprocessing that travels with the model (and so with its
checkpoint), and a BatchNorm with Keras's moving-variance update."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class InputNormalizer(nn.Module):
    """``(x.float() - mean) / std`` with per-feature buffers of the input's shape.

    The DataModule computes mean and std from the training split only (raw pixel units,
    0..255); keeping them as buffers means ``load_from_checkpoint`` restores them and the
    same preprocessing runs at inference, on whatever device the model lives.
    """

    def __init__(self, input_shape: Sequence[int]):
        super().__init__()
        shape = tuple(int(s) for s in input_shape)
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        if mean.shape != self.mean.shape or std.shape != self.std.shape:
            raise ValueError(
                f"normalization statistics of shape {tuple(mean.shape)} do not fit inputs of shape {tuple(self.mean.shape)}"
            )
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.mean.dtype) - self.mean) / self.std


class KerasBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose moving statistics follow Keras's ``BatchNormalization``.

    Training normalizes each batch with its mean and biased variance, as both libraries do;
    the moving statistics are then updated with the *biased* batch variance, as Keras does::

        running_mean <- (1 - m) * running_mean + m * mean_B
        running_var  <- (1 - m) * running_var  + m * var_B,   var_B = mean((x - mean_B)^2)

    where torch's ``nn.BatchNorm1d`` uses the unbiased ``var_B * n / (n - 1)`` (1.032x larger at
    batch 32), so its inference outputs drift from Keras's even with the same momentum and eps.
    ``m = 1 - keras_momentum``; the defaults are Keras's (momentum 0.99 -> 0.01, epsilon 1e-3).
    Eval mode, state-dict keys and BN folding (:mod:`deeptrain.nn.fusion`) are ``nn.BatchNorm1d``'s;
    ``Trainer(sync_batchnorm=True)`` replaces it with torch's ``SyncBatchNorm`` (unbiased update).

    Example:
        >>> bn = KerasBatchNorm1d(4)
        >>> _ = bn(torch.randn(32, 4))
        >>> bn.momentum, bn.eps
        (0.01, 0.001)
    """

    def __init__(self, num_features: int, eps: float = 1e-3, momentum: float | None = 0.01, **kwargs):
        super().__init__(num_features, eps=eps, momentum=momentum, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats):
            return super().forward(x)
        self._check_input_dim(x)
        self.num_batches_tracked.add_(1)
        # momentum None: torch's cumulative average, m = 1 / batches seen
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        # torch's fused kernel updates copies (autograd keeps them for the backward); the buffers
        # then get Keras's values
        mean, var = self.running_mean.clone(), self.running_var.clone()  # (C,)
        out = F.batch_norm(x, mean, var, self.weight, self.bias, True, m, self.eps)
        self._keras_update(mean, var, m, x.numel() // x.shape[1])
        return out

    @torch.no_grad()
    def _keras_update(self, mean: torch.Tensor, torch_var: torch.Tensor, m: float, n: int) -> None:
        """torch computed ``v_t = (1 - m) v + m * var_B * n / (n - 1)``; Keras's update is
        ``(1 - m) v + m * var_B = ((1 - m) * v + (n - 1) * v_t) / n``: two positive terms on (C,)
        vectors, no second pass over the batch and no cancellation."""
        self.running_mean.copy_(mean)
        self.running_var.mul_((1 - m) / n).add_(torch_var, alpha=(n - 1) / n)
