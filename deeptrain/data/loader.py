"""A batch loader over tensors already in memory (CPU or GPU): no workers, no collate.

Fashion-MNIST or CIFAR-10 fit in memory many times over, so a batch is one
indexing op, ``images[idx]``, where ``idx`` is a slice of a permutation. This
is far cheaper than a ``DataLoader`` calling ``__getitem__`` per sample and
collating; with the tensors on the GPU there is no host-to-device copy at all.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterator

import torch
from torch import Tensor


class InMemoryLoader:
    """Iterable of ``(x, y)`` batches of ``images`` ``(N, ...)`` and ``labels`` ``(N,)``.

    Order: with ``shuffle`` the order of epoch ``e`` is ``randperm(N)`` drawn from a
    generator seeded with ``seed * 1_000_003 + e``, a pure function of (seed, e):
    every epoch differs, every epoch visits each example once, and a resumed run
    replays the same orders. Without ``shuffle`` the order is the stored order.

    Epochs: a pass takes its epoch when its first batch is drawn (not at ``iter()``,
    which Lightning also calls just to check the object is iterable). A pass after
    a started pass is the next epoch; ``set_epoch(e)`` makes the next pass epoch ``e``.

    DDP: like ``DistributedSampler``, the order is padded by repeating its start to a
    multiple of ``world_size``, and rank ``r`` takes ``order[r::world_size]``, so all
    ranks see the same number of batches.

    Resuming: ``state_dict()`` is ``{"epoch", "batches_yielded", "seed"}`` where
    ``batches_yielded`` counts the batches handed out in the current pass (the
    count is updated before a batch is yielded). After ``load_state_dict`` the next
    pass continues that epoch at batch ``batches_yielded`` (or starts the next epoch
    if that pass was complete). Lightning's fit loop saves this state in checkpoints
    and loads it before its first ``iter()``; since the loader has a length, Lightning
    does not prefetch, so the count equals the batches trained on. One limit: with
    ``limit_train_batches < 1`` an epoch stops early, and a checkpoint taken then
    resumes the rest of that epoch rather than a new one.

    Args:
        images: ``(N, C, H, W)`` tensor, any dtype and device (uint8 here).
        labels: ``(N,)`` tensor on the same device.
        batch_size: examples per batch (the last one may be smaller).
        shuffle: reshuffle every epoch.
        seed: seed of the per-epoch permutations.
        drop_last: drop this rank's last batch when it is smaller than ``batch_size``.
        rank, world_size: this process's shard.

    Examples:
        >>> loader = InMemoryLoader(torch.zeros(10, 1, 2, 2), torch.arange(10), batch_size=4, shuffle=True)
        >>> [len(y) for x, y in loader]
        [4, 4, 2]
    """

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1):
        if len(images) != len(labels):
            raise ValueError(f"images and labels differ in length: {len(images)} != {len(labels)}")
        if images.device != labels.device:
            raise ValueError(f"images ({images.device}) and labels ({labels.device}) must be on one device")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank!r}")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, int(seed), drop_last
        self.rank, self.world_size = rank, world_size
        self._epoch, self._batches_yielded = 0, 0
        self._resume = True  # the next pass continues (epoch, batches_yielded)
        self._moved: dict[torch.device, InMemoryLoader] = {}

    @property
    def num_samples(self) -> int:
        """Examples this rank sees per epoch (padded up so that all ranks see as many)."""
        return math.ceil(len(self.labels) / self.world_size)

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch``, from its first batch."""
        self._epoch, self._batches_yielded, self._resume = int(epoch), 0, True

    def order(self, epoch: int) -> Tensor | None:
        """This rank's example indices for ``epoch`` (CPU int64), or None for ``0..N-1``."""
        n = len(self.labels)
        if self.shuffle:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
            perm = torch.randperm(n, generator=g)
        elif self.world_size == 1:
            return None  # plain slices: views, no gather
        else:
            perm = torch.arange(n)
        if self.world_size > 1:
            total = self.num_samples * self.world_size
            perm = perm.repeat(math.ceil(total / max(n, 1)))[:total]  # pad by repeating the start
            perm = perm[self.rank :: self.world_size]
        return perm

    def _begin_pass(self) -> tuple[int, int]:
        epoch, start = (self._epoch, self._batches_yielded) if self._resume else (self._epoch + 1, 0)
        if start >= len(self) and self._resume:  # the loaded pass was complete
            epoch, start = epoch + 1, 0
        self._epoch, self._batches_yielded, self._resume = epoch, start, False
        return epoch, start

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, start = self._begin_pass()
        idx = self.order(epoch)
        if idx is not None:
            idx = idx.to(self.labels.device)  # once per epoch
        n, b = self.num_samples, self.batch_size
        for i in range(start, len(self)):
            lo, hi = i * b, min((i + 1) * b, n)
            self._batches_yielded = i + 1  # before the yield: the consumer holds batch i now
            if idx is None:
                yield self.images[lo:hi], self.labels[lo:hi]
            else:
                sel = idx[lo:hi]
                yield self.images[sel], self.labels[sel]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "batches_yielded": self._batches_yielded, "seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume at ``state_dict``'s position; its seed wins, so the resumed order is the saved run's."""
        seed = int(state_dict.get("seed", self.seed))
        if seed != self.seed:
            warnings.warn(f"InMemoryLoader: resuming with the checkpoint's shuffle seed {seed} instead of {self.seed}")
        self.seed = seed
        self._epoch, self._batches_yielded = int(state_dict["epoch"]), int(state_dict["batches_yielded"])
        self._resume = True

    def to(self, device: torch.device | str) -> InMemoryLoader:
        """A loader over copies of the tensors on ``device`` (made once, then cached), at this loader's position."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device == self.labels.device:
            return self
        if device not in self._moved:
            moved = InMemoryLoader(self.images.to(device), self.labels.to(device), self.batch_size, self.shuffle,
                                   self.seed, self.drop_last, self.rank, self.world_size)
            moved.load_state_dict(self.state_dict())
            moved._resume = self._resume
            self._moved[device] = moved
        return self._moved[device]

    def __repr__(self) -> str:
        return (f"InMemoryLoader(n={len(self.labels)}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"seed={self.seed}, rank={self.rank}/{self.world_size}, device={self.labels.device})")
