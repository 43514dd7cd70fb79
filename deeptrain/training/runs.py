"""Where a config's runs are: the newest ``last``/``best`` checkpoint of earlier runs, and the run
folder a checkpoint belongs to (``<save_dir>/<name>/version_N/checkpoints/*.ckpt``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Union

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from deeptrain._lightning import logger_version_is_set, set_logger_version

FRESH_WEIGHTS = "none"  # --ckpt_path none: evaluate or predict with freshly initialized weights, on purpose


def newest_file(paths: Iterable[Union[str, Path]]) -> Optional[Path]:
    """The most recently modified of ``paths`` that exist as files, or None."""
    files = [Path(p) for p in paths if p and os.path.isfile(p)]
    return max(files, key=lambda p: p.stat().st_mtime) if files else None


def run_folder(checkpoint: Union[str, Path]) -> Optional[Path]:
    """``<save_dir>/<name>/version_N`` of a checkpoint saved under ``.../version_N/checkpoints/``."""
    folder = Path(checkpoint).resolve().parent
    return folder.parent if folder.name == "checkpoints" and folder.parent.name.startswith("version_") else None


def log_into_run_of(trainer: Trainer, checkpoint: Optional[str]) -> None:
    """Point the TensorBoard logger at the run that wrote ``checkpoint``, so an evaluation's
    metrics join that run instead of opening a new, otherwise empty ``version_N``."""
    logger = trainer.logger
    run = run_folder(checkpoint) if checkpoint else None
    if not isinstance(logger, TensorBoardLogger) or run is None:
        return
    trainer.logger = TensorBoardLogger(save_dir=str(run.parent.parent), name=run.parent.name, version=run.name,
                                       default_hp_metric=False)
    rank_zero_info(f"Metrics are logged into the run {run}")


def resolve_last_checkpoint(trainer: Trainer) -> Optional[str]:
    """The newest ``last*.ckpt`` of earlier runs of this logger, and continue logging in that run's folder.

    Checkpoints live in ``<save_dir>/<name>/version_N/checkpoints`` and a new run gets a new
    ``version_N``, where Lightning's ``ckpt_path="last"`` finds nothing and silently starts
    over. Only applies when the logger's version and the checkpoint folder are left unset.
    """
    logger = trainer.logger
    fixed_dir = any(getattr(cb, "dirpath", None) for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint))
    if logger is None or fixed_dir or logger_version_is_set(logger):
        return None
    root = Path(logger.save_dir or trainer.default_root_dir) / str(logger.name or "")
    newest = newest_file(root.glob("*/checkpoints/last*.ckpt"))
    if newest is None:
        rank_zero_warn(f"--ckpt_path last: no last*.ckpt under {root}/*/checkpoints; training starts from scratch")
        return None
    set_logger_version(logger, newest.parent.parent.name)
    rank_zero_info(f"Resuming from {newest}; logging continues in {newest.parent.parent}")
    return str(newest)


def resolve_best_checkpoint(trainer: Trainer) -> str:
    """The newest ``best*.ckpt`` in ``<save_dir>/<name>/*/checkpoints`` of this config's logger.

    The ``checkpoint`` group keeps the best epoch as ``best-{epoch}-{val_loss}.ckpt``; with
    ``save_top_k: 1`` each run has one, and the newest one belongs to the latest fit. Raises
    ``FileNotFoundError`` when there is none: evaluating random weights is asked for explicitly
    (``--ckpt_path none``), never by accident.
    """
    logger = trainer.logger
    root = Path(getattr(logger, "save_dir", None) or trainer.default_root_dir) / str(getattr(logger, "name", "") or "")
    fixed = [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
    patterns = [(d, "best*.ckpt") for d in fixed] or [(root, "*/checkpoints/best*.ckpt"), (root, "checkpoints/best*.ckpt")]
    newest = newest_file(p for folder, pattern in patterns for p in folder.glob(pattern))
    if newest is None:
        raise FileNotFoundError(f"no best*.ckpt under {root}/*/checkpoints: train first (deeptrain fit), pass "
                                f"--ckpt_path PATH, or --ckpt_path {FRESH_WEIGHTS} to use freshly initialized weights")
    rank_zero_info(f"Using the best checkpoint {newest} (pass --ckpt_path to choose another)")
    return str(newest)
