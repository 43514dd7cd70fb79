"""Input preprocessing that travels with the model (and so with its checkpoint)."""

from __future__ import annotations

from typing import Sequence

import torch
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
