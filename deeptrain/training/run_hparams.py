"""The run's settings beside the model's in TensorBoard's HParams tab: the data's and the seed."""

from __future__ import annotations

import os
from typing import Any

import lightning as L


def run_hparams(trainer: L.Trainer) -> dict[str, Any]:
    """``data/<key>`` for each of the datamodule's init arguments (dataset, batch size, augmentation,
    normalization, ...) and ``seed`` (``seed_everything``'s, which Lightning keeps in ``PL_GLOBAL_SEED``)."""
    data = getattr(trainer, "datamodule", None)
    settings = {k: v for k, v in (data.hparams_initial if data is not None else {}).items() if not k.startswith("_")}
    hparams: dict[str, Any] = {"data": settings} if settings else {}  # "_instantiator": jsonargparse's, not a setting
    if (seed := os.environ.get("PL_GLOBAL_SEED")) is not None:
        hparams["seed"] = int(seed)
    return hparams
