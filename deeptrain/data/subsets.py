"""Tasks as configs: a class subset with labels remapped to 0..k-1, and a small seeded training set.

The chapter's transfer experiment is two tasks cut from Fashion-MNIST: task A keeps the
eight classes other than sandal (5) and shirt (6); task B keeps only those two, with 200
training images. Both are index arithmetic on the loaded uint8 arrays:

    keep = class_mask(labels, [5, 6])           # (N,) bool
    labels = remap_labels(labels[keep], [5, 6])  # sandal -> 0, shirt -> 1
    idx = sample_subset(labels, total=200, seed=0)
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor


def check_classes(classes: Sequence[int], num_source_classes: int) -> list[int]:
    """Validate a class subset: at least two distinct source class ids in ``[0, num_source_classes)``."""
    valid = f"a list of at least 2 distinct class ids in [0, {num_source_classes - 1}]"
    if isinstance(classes, (str, bytes)) or not all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        raise ValueError(f"invalid classes={classes!r}: expected {valid}")
    classes = list(classes)
    bad = [c for c in classes if not 0 <= c < num_source_classes]
    if bad or len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError(f"invalid classes={classes!r}: expected {valid}" + (f"; out of range: {bad}" if bad else ""))
    return classes


def class_mask(labels: Tensor, classes: Sequence[int]) -> Tensor:
    """(N,) bool: which examples belong to one of ``classes`` (source ids)."""
    return torch.isin(labels, torch.as_tensor(list(classes), dtype=labels.dtype))


def remap_labels(labels: Tensor, classes: Sequence[int]) -> Tensor:
    """Source ids -> their position in ``classes`` (``[5, 6]``: 5 -> 0, 6 -> 1); -1 for any other id."""
    size = max(max(classes), int(labels.max()) if len(labels) else 0) + 1
    lut = torch.full((size,), -1, dtype=torch.int64)
    lut[torch.as_tensor(list(classes))] = torch.arange(len(classes))
    return lut[labels]


def sample_subset(labels: Tensor, total: Optional[int] = None, per_class: Optional[int] = None,
                  seed: int = 0) -> Tensor:
    """Sorted indices of a seeded random subset of ``labels`` (N,), without replacement.

    ``total``: ``total`` examples drawn uniformly, so class counts vary around their
    proportions (as when one labels the first ``total`` images that come along);
    ``per_class``: exactly ``per_class`` examples of every class present (stratified).
    Neither: all indices.
    """
    if total is not None and per_class is not None:
        raise ValueError(f"give train_size={total} or train_size_per_class={per_class}, not both")
    g = torch.Generator().manual_seed(seed)
    if total is not None:
        if not 1 <= total <= len(labels):
            raise ValueError(f"invalid train_size={total}: expected an int in [1, {len(labels)}] "
                             f"(the examples left in the training split)")
        return torch.randperm(len(labels), generator=g)[:total].sort().values
    if per_class is not None:
        return _sample_per_class(labels, per_class, g)
    return torch.arange(len(labels))


def _sample_per_class(labels: Tensor, per_class: int, g: torch.Generator) -> Tensor:
    if per_class < 1:
        raise ValueError(f"invalid train_size_per_class={per_class}: expected an int >= 1")
    picked = []
    for c in labels.unique().tolist():  # ascending: the draw does not depend on the data order
        idx = (labels == c).nonzero().squeeze(1)
        if len(idx) < per_class:
            raise ValueError(f"invalid train_size_per_class={per_class}: class {c} has only {len(idx)} "
                             f"training examples")
        picked.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picked).sort().values
