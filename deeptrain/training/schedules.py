"""The learning-rate schedules of chapter 11 that torch lacks, as real ``LRScheduler`` classes,
with the formulas and arguments of Keras's ``keras.optimizers.schedules``.

``t`` counts scheduler steps: epochs with ``scheduler_interval: epoch`` (the default of
:class:`~deeptrain.training.module.Classifier`), optimizer steps with ``step``. Keras's schedules
count optimizer steps, so a Keras recipe's ``decay_steps = s`` becomes either
``scheduler_interval: step`` with ``decay_steps: s``, or ``scheduler_interval: epoch`` with
``decay_steps: s / steps_per_epoch`` (``steps_per_epoch = ceil(n_train / batch_size)``; the lr
then changes once per epoch). The book's ``LearningRateScheduler(fn(epoch))`` callbacks count
epochs already: keep ``scheduler_interval: epoch`` and the same ``s``.

Performance scheduling is torch's ``ReduceLROnPlateau`` and 1cycle torch's ``OneCycleLR``; both
are used as they are.
"""

from __future__ import annotations

import bisect
import math
from typing import Optional, Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


def _check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")


class PowerLR(LRScheduler):
    """Power scheduling: ``lr(t) = lr0 / (1 + r * p)^c`` with ``p = t / s`` (``floor(t / s)`` if ``staircase``).

    With ``r = 1`` this is the chapter's ``lr0 / (1 + t/s)^c``. ``c = 1`` is Keras's
    ``InverseTimeDecay(lr0, decay_steps=s, decay_rate=r, staircase)``, argument for argument;
    without staircase, ``decay_rate: r`` and ``decay_steps: s / r`` give the same curve. Keras 2's
    optimizer argument ``decay=d`` (``SGD(lr=0.01, decay=1e-4)`` in the book) is
    ``decay_steps: 1/d`` stepped per optimizer step (``scheduler_interval: step``).

    Args:
        optimizer: wrapped optimizer (``lr0`` is each group's initial lr).
        decay_steps: ``s``; with ``r = 1``, the steps after which the lr has dropped by ``2^c``.
        power: ``c`` (Keras's InverseTimeDecay is ``c = 1``).
        decay_rate: ``r``, Keras's ``decay_rate``.
        staircase: decay at whole multiples of ``decay_steps`` only, as Keras's ``staircase=True``.
    """

    def __init__(self, optimizer: Optimizer, decay_steps: float, power: float = 1.0, decay_rate: float = 1.0,
                 staircase: bool = False, last_epoch: int = -1):
        _check_positive("decay_steps", decay_steps)
        _check_positive("decay_rate", decay_rate)
        self.decay_steps, self.power, self.decay_rate, self.staircase = decay_steps, power, decay_rate, staircase
        super().__init__(optimizer, last_epoch)

    def factor(self, t: int) -> float:
        p = t / self.decay_steps
        return (1.0 + self.decay_rate * (math.floor(p) if self.staircase else p)) ** -self.power

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]


class ExponentialDecayLR(LRScheduler):
    """Exponential scheduling: ``lr(t) = lr0 * rate^p`` with ``p = t / s`` (``floor(t / s)`` if ``staircase``).

    Keras's ``ExponentialDecay(lr0, decay_steps=s, decay_rate, staircase)``, argument for
    argument (the chapter's ``rate = 0.1``).

    Args:
        optimizer: wrapped optimizer.
        decay_steps: ``s``, steps over which the lr is multiplied by ``decay_rate``.
        decay_rate: the factor per ``s`` steps.
        staircase: multiply by ``decay_rate`` at whole multiples of ``s`` only.
    """

    def __init__(self, optimizer: Optimizer, decay_steps: float, decay_rate: float = 0.1,
                 staircase: bool = False, last_epoch: int = -1):
        _check_positive("decay_steps", decay_steps)
        _check_positive("decay_rate", decay_rate)
        self.decay_steps, self.decay_rate, self.staircase = decay_steps, decay_rate, staircase
        super().__init__(optimizer, last_epoch)

    def factor(self, t: int) -> float:
        p = t / self.decay_steps
        return self.decay_rate ** (math.floor(p) if self.staircase else p)

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]


class CosineDecayLR(LRScheduler):
    """Keras's ``CosineDecay``: optional linear warmup, cosine decay, then a hold at ``alpha``.

    Without warmup (``warmup_target`` None), ``lr(t) = lr0 * d(min(t, T))`` with
    ``d(u) = (1 - alpha) * (1 + cos(pi * u / T)) / 2 + alpha`` and ``T = decay_steps``: the lr ends
    at ``alpha * lr0`` and stays there (torch's ``CosineAnnealingLR`` climbs back up after
    ``T_max``). With ``warmup_target = w``: ``lr0 + (w - lr0) * t / W`` for ``t < W = warmup_steps``,
    then ``w * d(min(t - W, T))``. Keras's ``initial_learning_rate`` is the optimizer's lr.

    Args:
        optimizer: wrapped optimizer (``lr0`` is each group's initial lr).
        decay_steps: ``T``, steps of the cosine part.
        alpha: the final lr as a fraction of the lr the decay starts from.
        warmup_target: the lr reached at the end of the warmup (absolute, as in Keras);
            None: no warmup, the decay starts from ``lr0``.
        warmup_steps: ``W``, steps of the linear warmup (used only with ``warmup_target``).
    """

    def __init__(self, optimizer: Optimizer, decay_steps: int, alpha: float = 0.0, warmup_target: Optional[float] = None,
                 warmup_steps: int = 0, last_epoch: int = -1):
        _check_positive("decay_steps", decay_steps)
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.decay_steps, self.alpha = decay_steps, alpha
        self.warmup_target, self.warmup_steps = warmup_target, warmup_steps
        super().__init__(optimizer, last_epoch)

    def _cosine(self, u: float) -> float:
        decayed = 0.5 * (1.0 + math.cos(math.pi * min(u, self.decay_steps) / self.decay_steps))
        return (1.0 - self.alpha) * decayed + self.alpha

    def value_at(self, t: int, lr0: float) -> float:
        if self.warmup_target is None:
            return lr0 * self._cosine(t)
        if t < self.warmup_steps:
            return lr0 + (self.warmup_target - lr0) * t / self.warmup_steps
        return self.warmup_target * self._cosine(t - self.warmup_steps)

    def get_lr(self) -> list[float]:
        return [self.value_at(self.last_epoch, base) for base in self.base_lrs]


class PiecewiseConstantLR(LRScheduler):
    """Piecewise constant scheduling (Keras's ``PiecewiseConstantDecay``).

    ``lr(t) = values[0]`` for ``t <= boundaries[0]``, ``values[1]`` for ``boundaries[0] < t <= boundaries[1]``, ...,
    ``values[-1]`` after the last boundary. The values are absolute learning rates of the first
    param group and override the optimizer's lr; any other group keeps its ratio to the first
    (``values[i] * lr0_g / lr0_0``), e.g. a group added at ``lr / 10`` when layers are unfrozen.

    Args:
        optimizer: wrapped optimizer.
        boundaries: increasing step numbers, e.g. ``[5, 15]``.
        values: ``len(boundaries) + 1`` learning rates, e.g. ``[0.01, 0.005, 0.001]``.
    """

    def __init__(self, optimizer: Optimizer, boundaries: Sequence[int], values: Sequence[float], last_epoch: int = -1):
        boundaries, values = list(boundaries), list(values)
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                f"PiecewiseConstantLR needs len(values) == len(boundaries) + 1, got {len(values)} values "
                f"for {len(boundaries)} boundaries"
            )
        if any(a >= b for a, b in zip(boundaries, boundaries[1:])):
            raise ValueError(f"boundaries must be strictly increasing, got {boundaries}")
        self.boundaries, self.values = boundaries, values
        super().__init__(optimizer, last_epoch)

    def value_at(self, t: int) -> float:
        return self.values[bisect.bisect_left(self.boundaries, t)]

    def get_lr(self) -> list[float]:
        first = self.base_lrs[0]
        return [self.value_at(self.last_epoch) * (base / first if first else 1.0) for base in self.base_lrs]
