"""Self-supervised pretext tasks: labels made from the images themselves.

A pretext task turns an unlabelled batch into a labelled one, so a plain classifier can
pretrain on plentiful unlabelled images and its hidden layers can then be reused for the
real task (the chapter's "pretraining on an auxiliary task"). Chosen by name through
``PRETEXTS``; the DataModule applies one to every batch after it reaches the device.

    rotation: rotate each image by k * 90 degrees, label k (Gidaris et al., 2018,
              "Unsupervised representation learning by predicting image rotations").
"""

from __future__ import annotations

import torch
from torch import Tensor

from deeptrain.nn.registry import Registry

PRETEXTS: Registry = Registry("pretext")


@PRETEXTS.register("rotation")
class RotationPretext:
    """Rotate each image of a batch by ``k * 90`` degrees and replace its label with ``k``.

    Training batches draw ``k`` per image from the global torch RNG of the batch's device
    (seeded by ``seed_everything``); evaluation batches use ``k = position % 4``, so the
    validation score is deterministic and every rotation is equally frequent.

    Examples:
        >>> x, y = RotationPretext()(torch.zeros(8, 1, 28, 28, dtype=torch.uint8), torch.zeros(8), train=False)
        >>> y.tolist()
        [0, 1, 2, 3, 0, 1, 2, 3]
    """

    class_names = ["rot0", "rot90", "rot180", "rot270"]

    def check_shape(self, input_shape: tuple[int, int, int]) -> None:
        if input_shape[1] != input_shape[2]:
            raise ValueError(f"pretext 'rotation' needs square images, got input_shape={tuple(input_shape)}")

    def __call__(self, x: Tensor, y: Tensor, train: bool) -> tuple[Tensor, Tensor]:
        B = x.shape[0]
        if train:
            k = torch.randint(0, 4, (B,), device=x.device)
        else:
            k = torch.arange(B, device=x.device) % 4
        out = x.clone()
        for r in (1, 2, 3):
            chosen = k == r
            out[chosen] = torch.rot90(x[chosen], r, dims=(-2, -1))  # (n, C, H, W), H == W
        return out, k
