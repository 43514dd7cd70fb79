"""The one tiny dataset of the tests: ``n`` random 1x4x4 uint8 images as a DataModule of in-memory
batches, small enough to train in a second.

Labels follow a learnable rule (the class is the first pixel's bin, ``pixel * num_classes // 256``),
or are drawn at random; ``images="low_rank"`` mixes two random patterns instead, something an
autoencoder can learn. Every split serves the same images (``val_batches`` can reorder them).
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch

from deeptrain.data.loader import InMemoryLoader


class TinyData(L.LightningDataModule):
    """Args:
        n: number of images.
        num_classes: number of classes.
        batch_size: batch size of every split.
        seed: seed of the images (and the random labels).
        labels: ``rule`` (learnable from one pixel) or ``random``.
        images: ``random`` pixels, or ``low_rank`` (mixtures of 2 patterns; labels all 0).
        shuffle: shuffle the training batches (seed 0).
    """

    input_shape, normalize = (1, 4, 4), "standardize"

    def __init__(self, n: int = 96, num_classes: int = 3, batch_size: int = 32, seed: int = 0,
                 labels: Literal["rule", "random"] = "rule", images: Literal["random", "low_rank"] = "random",
                 shuffle: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.num_classes, self.batch_size, self.shuffle, self.images = num_classes, batch_size, shuffle, images
        if images == "low_rank":
            patterns, weights = torch.rand(2, 16, generator=g), torch.rand(n, 2, generator=g)
            self.x = (weights @ patterns / 2 * 255).round().to(torch.uint8).view(n, *self.input_shape)
            self.y = torch.zeros(n, dtype=torch.long)
            return
        self.x = torch.randint(0, 256, (n, *self.input_shape), dtype=torch.uint8, generator=g)
        if labels == "rule":
            self.y = (self.x.flatten(1)[:, 0].long() * num_classes) // 256
        else:
            self.y = torch.randint(0, num_classes, (n,), generator=g)

    def input_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x.float()
        return x.mean(0), x.std(0) + (1 if self.images == "low_rank" else 0)  # low-rank pixels may barely vary

    def train_dataloader(self) -> InMemoryLoader:
        return InMemoryLoader(self.x, self.y, self.batch_size, shuffle=self.shuffle, seed=0)

    def _batches(self) -> InMemoryLoader:
        return InMemoryLoader(self.x, self.y, self.batch_size)

    val_dataloader = test_dataloader = predict_dataloader = _batches


class CrashAt(L.Callback):
    """Raises at the start of optimizer step ``step``: a crash that a resume must survive."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.step:
            raise RuntimeError("killed")
