"""The learning-rate schedules of chapter 11 that torch lacks, as real ``LRScheduler`` classes.

``t`` counts scheduler steps: epochs with ``scheduler_interval: epoch``, optimizer steps with
``step``. Performance scheduling is torch's ``ReduceLROnPlateau`` and 1cycle torch's
``OneCycleLR``; both are used as they are.
"""

from __future__ import annotations

import bisect
from typing import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class PowerLR(LRScheduler):
    """Power scheduling: ``lr(t) = lr0 / (1 + t/s)^c``.

    Args:
        optimizer: wrapped optimizer (``lr0`` is each group's initial lr).
        decay_steps: ``s``, steps after which the lr has dropped by a factor ``2^c``.
        power: ``c`` (Keras' InverseTimeDecay is ``c = 1``).
    """

    def __init__(self, optimizer: Optimizer, decay_steps: float, power: float = 1.0, last_epoch: int = -1):
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be > 0, got {decay_steps}")
        self.decay_steps, self.power = decay_steps, power
        super().__init__(optimizer, last_epoch)

    def factor(self, t: int) -> float:
        return (1.0 + t / self.decay_steps) ** -self.power

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]


class ExponentialDecayLR(LRScheduler):
    """Exponential scheduling: ``lr(t) = lr0 * rate^(t/s)`` (the chapter's ``rate = 0.1``).

    Args:
        optimizer: wrapped optimizer.
        decay_steps: ``s``, steps over which the lr is multiplied by ``decay_rate``.
        decay_rate: the factor per ``s`` steps.
    """

    def __init__(self, optimizer: Optimizer, decay_steps: float, decay_rate: float = 0.1, last_epoch: int = -1):
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be > 0, got {decay_steps}")
        if decay_rate <= 0:
            raise ValueError(f"decay_rate must be > 0, got {decay_rate}")
        self.decay_steps, self.decay_rate = decay_steps, decay_rate
        super().__init__(optimizer, last_epoch)

    def factor(self, t: int) -> float:
        return self.decay_rate ** (t / self.decay_steps)

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]


class PiecewiseConstantLR(LRScheduler):
    """Piecewise constant scheduling (Keras' ``PiecewiseConstantDecay``).

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
