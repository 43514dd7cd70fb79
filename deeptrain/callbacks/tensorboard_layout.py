"""TensorBoard helpers shared by the diagnostic callbacks: one-chart-per-quantity layouts, images.

TensorBoard's Scalars tab draws one small chart per tag, so the gradient norms of a
20-layer network land on 21 charts. Its *Custom Scalars* tab can instead draw every tag
matching a regex as lines of ONE chart. (``SummaryWriter.add_scalars`` also puts several
lines on one chart, but it does so by opening one extra run, with its own event file, per
line: 21 more runs in the run selector for every quantity.) The custom-scalars plugin reads
one layout per run, the last one written, so the layouts of all callbacks are merged here
and the merged layout is rewritten whenever one is added.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

_LAYOUT_ATTR = "_deeptrain_custom_scalars"


def tensorboard_writers(trainer: "L.Trainer") -> list[Any]:
    """The ``SummaryWriter`` of every TensorBoardLogger of ``trainer`` (none on other ranks than 0)."""
    if not trainer.is_global_zero:
        return []
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def add_multiline_charts(trainer: "L.Trainer", category: str, charts: dict[str, list[str]]) -> None:
    """Adds ``{chart title: [tag regex, ...]}`` to the Custom Scalars tab of every TensorBoard run.

    Examples:
        >>> add_multiline_charts(trainer, "gradients", {"L2 norm per layer": [r"grad_norm/.*"]})
    """
    for writer in tensorboard_writers(trainer):
        layout: dict[str, dict[str, list[Any]]] = getattr(writer, _LAYOUT_ATTR, {})
        section = layout.setdefault(category, {})
        for title, regexes in charts.items():
            section[title] = ["Multiline", list(regexes)]
        setattr(writer, _LAYOUT_ATTR, layout)
        writer.add_custom_scalars(layout)
        writer.flush()


def log_scalars(trainer: "L.Trainer", metrics: dict[str, float], step: int) -> None:
    """Send ``metrics`` (plain floats) to every logger of ``trainer`` at ``step``."""
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)


def add_histograms(trainer: "L.Trainer", tensors: Iterable[tuple[str, Any]], step: int) -> None:
    for writer in tensorboard_writers(trainer):
        for tag, values in tensors:
            writer.add_histogram(tag, values.detach().float().cpu(), step)


def add_figure(trainer: Optional["L.Trainer"], tag: str, figure: Any, step: int, writers: Iterable[Any] = ()) -> None:
    """Draw a matplotlib figure as an image in TensorBoard (the figure is left open)."""
    targets = list(writers) + (tensorboard_writers(trainer) if trainer is not None else [])
    for writer in targets:
        writer.add_figure(tag, figure, step, close=False)
