"""A split in memory: uint8 images, int64 labels, and the file names where the images came from files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


@dataclass
class ImageArrays:
    images: Tensor  # (N, C, H, W) uint8
    labels: Tensor  # (N,) int64
    files: Optional[list[str]] = None  # image folders: each image's path under data_dir

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W) uint8, got {tuple(self.images.shape)} {self.images.dtype}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must be ({len(self.images)},), got {tuple(self.labels.shape)}")
        if self.files is not None and len(self.files) != len(self.images):
            raise ValueError(f"files must name the {len(self.images)} images, got {len(self.files)}")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return len(self.labels)
