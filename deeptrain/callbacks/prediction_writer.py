"""Keep what ``deeptrain predict`` computes: one CSV row per input, opened with ``pandas.read_csv``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter


class PredictionWriter(BasePredictionWriter):
    """Writes the predictions of ``trainer.predict`` to a CSV file and prints its path.

    Columns: ``index`` (position in the predicted split), ``file`` (an image folder's file, under its
    data_dir), ``label`` (the true class id, when the
    batches carry labels), ``predicted`` (argmax class id), ``predicted_name``, one ``p_<class>``
    per class (probabilities, summing to 1), and with MC dropout (``model.mc_samples > 0``) one
    ``std_<class>`` per class (the spread of the probabilities over the samples).

    Args:
        path: the CSV file. Default: ``predictions.csv`` in the run folder the logger writes to
            (the evaluated checkpoint's run), else in the trainer's ``default_root_dir``.
            Under DDP each rank writes ``<stem>-rank<r>.csv``.

    Example:
        >>> import pandas as pd                       # doctest: +SKIP
        >>> pd.read_csv("logs/fashion_mnist_mlp/version_0/predictions.csv").head()  # doctest: +SKIP
    """

    def __init__(self, path: Optional[str] = None):
        super().__init__(write_interval="batch")
        self.path = path
        self._rows: list[torch.Tensor] = []
        self.written: Optional[Path] = None

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Optional[Sequence[int]], batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        probs, std = (prediction["probs"], prediction["std"]) if isinstance(prediction, dict) else (prediction, None)
        labels = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        columns = [probs.argmax(dim=-1, keepdim=True).float(), probs.float()]
        if std is not None:
            columns.append(std.float())
        if labels is not None:
            columns.insert(0, labels.reshape(-1, 1).float())
        self._rows.append(torch.cat(columns, dim=1).cpu())
        self._has_labels, self._has_std, self._num_classes = labels is not None, std is not None, probs.shape[-1]

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._rows:
            return
        table = torch.cat(self._rows)
        self._rows = []
        names = class_names(trainer, self._num_classes)
        files = split_files(trainer, len(table))
        self.written = self._output_path(trainer)
        self.written.parent.mkdir(parents=True, exist_ok=True)
        with open(self.written, "w", newline="") as f:
            writer = csv.writer(f)
            header = ["index"] + (["file"] if files else []) + (["label"] if self._has_labels else [])
            header += ["predicted", "predicted_name"]
            header += [f"p_{n}" for n in names] + ([f"std_{n}" for n in names] if self._has_std else [])
            writer.writerow(header)
            for i, row in enumerate(table.tolist()):
                label, rest = (row[:1], row[1:]) if self._has_labels else ([], row)
                predicted = int(rest[0])
                writer.writerow([i, *([files[i]] if files else []), *map(int, label), predicted, names[predicted],
                                 *(f"{v:.6g}" for v in rest[1:])])
        print(f"wrote {self.written} ({len(table)} predictions)")  # every rank: each writes its own file

    def _output_path(self, trainer: L.Trainer) -> Path:
        folder = Path(trainer.logger.log_dir) if trainer.logger is not None and trainer.logger.log_dir else Path(trainer.default_root_dir)
        path = Path(self.path) if self.path else folder / "predictions.csv"
        return path.with_name(f"{path.stem}-rank{trainer.global_rank}{path.suffix}") if trainer.world_size > 1 else path


def class_names(trainer: L.Trainer, num_classes: int) -> list[str]:
    """The datamodule's class names, or ``0..k-1`` where it has none."""
    names = list(getattr(trainer.datamodule, "class_names", None) or []) if trainer.datamodule is not None else []
    return names if len(names) == num_classes else [str(i) for i in range(num_classes)]


def split_files(trainer: L.Trainer, rows: int) -> Optional[list[str]]:
    """The predicted split's file names (image folders), when they line up with the rows."""
    split = getattr(trainer.datamodule, "split", None)
    files = split("predict").files if callable(split) else None
    return files if files is not None and len(files) == rows else None
