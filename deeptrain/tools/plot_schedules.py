"""``deeptrain schedules``: the chapter's learning-rate schedules, drawn from the real scheduler classes.

Each curve comes from stepping the scheduler that training uses (``deeptrain.training.schedules``
and torch's ``ReduceLROnPlateau`` and ``OneCycleLR``) on a one-parameter SGD optimizer, and
reading the optimizer's learning rate before every step.

    deeptrain schedules --steps 1000 --out docs/schedules.png
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch.optim.lr_scheduler import LRScheduler, OneCycleLR, ReduceLROnPlateau

from deeptrain.training.schedules import CosineDecayLR, ExponentialDecayLR, PiecewiseConstantLR, PowerLR


def _optimizer(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def trace(make: Callable[[torch.optim.Optimizer], LRScheduler], steps: int, lr0: float) -> list[float]:
    """The learning rate at each of ``steps`` steps of the scheduler ``make(optimizer)``."""
    optimizer = _optimizer(lr0)
    scheduler = make(optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


class ScriptedLoss:
    """A validation loss that reacts to the learning rate like a real one, roughly.

    It relaxes (exponential moving average, ``rate`` per step) towards a floor that rises
    with the learning rate, ``floor + slope * lr``, plus seeded noise: with a constant lr it
    falls and then plateaus; after the lr is cut it falls again to a lower plateau. That
    is the situation performance scheduling is made for.
    """

    def __init__(self, start: float = 2.0, floor: float = 0.3, slope: float = 30.0, rate: float = 0.05,
                 noise: float = 0.01, seed: int = 0):
        self.value, self.floor, self.slope, self.rate, self.noise = start, floor, slope, rate, noise
        self.generator = torch.Generator().manual_seed(seed)

    def step(self, lr: float) -> float:
        self.value += self.rate * (self.floor + self.slope * lr - self.value)
        return self.value + self.noise * float(torch.randn((), generator=self.generator))


def trace_plateau(steps: int, lr0: float, eval_every: int, patience: int, factor: float = 0.5) -> list[float]:
    """Performance scheduling: ``ReduceLROnPlateau`` fed a :class:`ScriptedLoss` every ``eval_every`` steps."""
    optimizer = _optimizer(lr0)
    scheduler = ReduceLROnPlateau(optimizer, factor=factor, patience=patience)
    loss, lrs = ScriptedLoss(slope=0.3 / lr0), []
    for step in range(steps):
        lr = optimizer.param_groups[0]["lr"]
        lrs.append(lr)
        optimizer.step()
        value = loss.step(lr)
        if (step + 1) % eval_every == 0:
            scheduler.step(value)
    return lrs


def schedule_curves(steps: int = 1000, lr0: float = 0.01) -> dict[str, list[float]]:
    """{label: learning rate per step} of every schedule of the chapter, scaled to ``steps``."""
    if steps < 10:
        raise ValueError(f"steps must be >= 10 to draw the schedules, got {steps}")
    s = steps // 10
    eval_every = max(1, steps // 50)
    cut1, cut2 = steps // 4, (3 * steps) // 4
    return {
        f"power: lr0 / (1 + t/{s})": trace(lambda o: PowerLR(o, decay_steps=s), steps, lr0),
        f"exponential: lr0 * 0.1^(t/{steps // 2})": trace(lambda o: ExponentialDecayLR(o, steps // 2), steps, lr0),
        f"exponential, staircase: lr0 * 0.1^floor(t/{steps // 4})":
            trace(lambda o: ExponentialDecayLR(o, steps // 4, staircase=True), steps, lr0),
        f"cosine decay (Keras CosineDecay): warmup {s} steps from lr0/10, alpha 0.01, hold after {steps - 2 * s}":
            trace(lambda o: CosineDecayLR(o, decay_steps=steps - 3 * s, alpha=0.01, warmup_target=lr0,
                                          warmup_steps=s), steps, lr0 / 10),
        f"piecewise constant: {lr0:g}, {lr0 / 2:g} at {cut1}, {lr0 / 10:g} at {cut2}":
            trace(lambda o: PiecewiseConstantLR(o, [cut1, cut2], [lr0, lr0 / 2, lr0 / 10]), steps, lr0),
        f"performance: ReduceLROnPlateau(factor 0.5, patience 5), scripted loss every {eval_every} steps":
            trace_plateau(steps, lr0, eval_every, patience=5),
        f"1cycle (torch OneCycleLR default: cosine, max_lr {lr0:g})":
            trace(lambda o: OneCycleLR(o, max_lr=lr0, total_steps=steps), steps, lr0),
        "1cycle (the book: linear up, linear down, final drop)":
            trace(lambda o: OneCycleLR(o, max_lr=lr0, total_steps=steps, three_phase=True,
                                       anneal_strategy="linear", pct_start=0.45, div_factor=10), steps, lr0),
    }


def plot_curves(curves: dict[str, list[float]], title: str = "") -> Any:
    """The curves on a linear and on a log learning-rate axis, side by side."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 4.2))  # no pyplot: no global backend switch, nothing to close
    axes = figure.subplots(1, 2)
    for label, lrs in curves.items():
        for ax in axes:
            ax.plot(range(len(lrs)), lrs, lw=1.5, label=label)
    axes[0].set(xlabel="step", ylabel="learning rate", title="linear scale")
    axes[1].set(xlabel="step", yscale="log", title="log scale")
    axes[1].legend(fontsize=7, loc="lower left")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def schedules(steps: int = 1000, lr0: float = 0.01, out: str = "schedules.png") -> dict[str, list[float]]:
    """Plot the chapter's learning-rate schedules side by side (linear and log scale).

    Args:
        steps: scheduler steps to draw (>= 2).
        lr0: initial (and 1cycle's maximum) learning rate (> 0).
        out: PNG file to write.
    """
    if steps < 2 or lr0 <= 0:
        raise ValueError(f"schedules: need steps >= 2 and lr0 > 0, got steps={steps}, lr0={lr0:g}")
    curves = schedule_curves(steps, lr0)
    figure = plot_curves(curves, f"learning-rate schedules over {steps} steps (lr0 = {lr0:g})")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)
    for label, lrs in curves.items():
        print(f"{label:<90} start {lrs[0]:.3g}  max {max(lrs):.3g}  end {lrs[-1]:.3g}")
    print(f"wrote {out}")
    return curves
