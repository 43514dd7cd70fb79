"""TensorBoard bookkeeping of a fit: the HParams tab without placeholder values, and a resume
that does not show the replayed steps twice.

Lightning's ``TensorBoardLogger.log_hyperparams(params, metrics)`` declares the HParams metrics
by logging them at step 0, which needs values before anything was measured (NaN). And it opens
its ``SummaryWriter`` without ``purge_step``: after a resume, the steps between the checkpoint
and the kill are in the old event file and again in the new one, and TensorBoard draws both.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from torch.utils.tensorboard.summary import hparams


def flatten_hparams(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"net": {"depth": 2}}`` -> ``{"net/depth": 2}``; values the HParams tab cannot show
    (lists, None, objects) become strings."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_hparams(value, f"{name}/"))
        else:
            flat[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat


def declare_hparams(logger: TensorBoardLogger, params: Mapping[str, Any], metrics: Sequence[str]) -> None:
    """Write the HParams session: the hyperparameters and the names of the ``metrics`` whose
    logged scalars the tab shows, without logging any value for them."""
    summaries = hparams(flatten_hparams(params), {name: 0.0 for name in metrics})  # values unused: names only
    for summary in summaries:  # experiment, session start, session end
        logger.experiment.file_writer.add_summary(summary)


def purge_replayed_steps(logger: TensorBoardLogger, step: int) -> None:
    """Hide what earlier event files hold at steps >= ``step``: a resumed run logs them again.

    The marker ``SummaryWriter(purge_step=step)`` writes when it opens (a ``SessionLog.START``
    event at that step), written here because the logger opened its writer before the
    checkpoint's step was known.
    """
    logger.experiment.file_writer.add_event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))
