"""A 96-image, 3-class DataModule of 1x4x4 uint8 images whose label is set by one pixel:
small enough to train in a second, learnable enough to prune and fine-tune."""

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class TinyData(L.LightningDataModule):
    input_shape, num_classes, normalize = (1, 4, 4), 3, "standardize"

    def __init__(self, n=96):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 256, (n, *self.input_shape), dtype=torch.uint8, generator=g)
        self.y = (self.x.flatten(1)[:, 0].long() * 3) // 256

    def input_stats(self):
        return self.x.float().mean(0), self.x.float().std(0)

    def _loader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=32)

    train_dataloader = val_dataloader = _loader
