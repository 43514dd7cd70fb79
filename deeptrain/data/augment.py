"""Per-sample augmentation of a whole uint8 batch, on whatever device it lives.

``torchvision.transforms.v2.RandomHorizontalFlip`` / ``RandomCrop`` applied to a
``(B, C, H, W)`` tensor draw ONE decision for the whole batch: every image is
flipped or none is, all are cropped at the same offset. That is much weaker
augmentation than per-image decisions, so both are written here as a few
vectorized tensor ops (no Python loop over samples).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def random_hflip(x: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image of ``x`` (B, C, H, W) left-right with probability ``p``, independently."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < p  # (B,)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad ``x`` (B, C, H, W) by ``padding`` on each side, then crop each image back to (H, W)
    at its own random offset in ``[0, 2 * padding]`` (the CIFAR "pad 4, crop 32" recipe)."""
    if padding == 0:
        return x
    B, C, H, W = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
    top, left = torch.randint(0, 2 * padding + 1, (2, B), device=x.device, generator=generator)
    rows = (top[:, None] + torch.arange(H, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (left[:, None] + torch.arange(W, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    b = torch.arange(B, device=x.device)[:, None, None, None]
    c = torch.arange(C, device=x.device)[None, :, None, None]
    return padded[b, c, rows, cols]  # (B, C, H, W): one gather


class BatchAugment(nn.Module):
    """Random crop with zero padding, then random horizontal flip, per sample.

    Randomness comes from the global torch RNG of the batch's device (seeded by
    ``seed_everything``) unless a ``generator`` on that device is given to ``forward``.

    Args:
        hflip: flip each image left-right with probability 1/2.
        crop_padding: pad by this many pixels, then crop back at a random offset (0: off).

    Examples:
        >>> aug = BatchAugment(hflip=True, crop_padding=4)
        >>> aug(torch.zeros(8, 3, 32, 32, dtype=torch.uint8)).shape
        torch.Size([8, 3, 32, 32])
    """

    def __init__(self, hflip: bool = False, crop_padding: int = 0):
        super().__init__()
        if not isinstance(crop_padding, int) or crop_padding < 0:
            raise ValueError(f"crop_padding must be an int >= 0, got {crop_padding!r}")
        self.hflip, self.crop_padding = bool(hflip), crop_padding

    @property
    def enabled(self) -> bool:
        return self.hflip or self.crop_padding > 0

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"BatchAugment expects (B, C, H, W), got shape {tuple(x.shape)}")
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, generator)
        if self.hflip:
            x = random_hflip(x, generator=generator)
        return x

    def extra_repr(self) -> str:
        return f"hflip={self.hflip}, crop_padding={self.crop_padding}"
