"""Two processes (DDP, gloo, CPU) through the CLI: each rank trains on its own shard, and the
logged validation metrics equal a single-process validation of the same weights."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed as dist
from reliability_helpers import tiny_config

from deeptrain.data.datamodule import ImageDataModule
from deeptrain.training.module import Classifier

ROOT = Path(__file__).resolve().parents[2]

# Imported by both ranks (PYTHONPATH): writes the training images each rank saw.
PROBE = '''
import lightning as L, torch

class SeenSamples(L.Callback):
    def on_train_start(self, trainer, module):
        self.seen = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen.append(batch[0].flatten(1).cpu())

    def on_train_epoch_end(self, trainer, module):
        torch.save(torch.cat(self.seen), f"{trainer.default_root_dir}/seen-rank{trainer.global_rank}.pt")
'''


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ddp_two_processes_shard_the_data_and_log_the_single_process_metrics(tiny_images, tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    (tmp_path / "ddp_probe.py").write_text(PROBE)
    config = tiny_config(tmp_path, tiny_images, max_epochs=1)
    cmd = [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(config),
           "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
           "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path / "csv"),
           "--data.eval_batch_size", "6",  # 16 validation images per rank: batches of 6, 6, 4
           "--trainer.callbacks+=ddp_probe.SeenSamples"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=280,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))})
    assert proc.returncode == 0, proc.stderr[-3000:]

    # each rank saw its own half of the 64 training images, together all of them
    seen = [torch.load(tmp_path / f"seen-rank{r}.pt") for r in (0, 1)]
    rows = [{tuple(x.tolist()) for x in s} for s in seen]
    assert len(seen[0]) == len(seen[1]) == 32 and len(rows[0]) == len(rows[1]) == 32
    assert not rows[0] & rows[1] and len(rows[0] | rows[1]) == 64

    # the epoch's validation metrics, logged by rank 0 after syncing, equal one process's on the same weights
    (metrics_csv,) = (tmp_path / "csv").glob("**/metrics.csv")
    logged = [r for r in csv.DictReader(metrics_csv.open()) if r.get("val_loss")][-1]
    (last,) = tmp_path.glob("csv/**/checkpoints/last.ckpt")
    model = Classifier.load_from_checkpoint(last)
    data = ImageDataModule("image_folder", data_dir=str(tiny_images), val_size=32, eval_batch_size=6,
                           cache_dir=str(tmp_path / "cache"))
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, devices=1, accelerator="cpu")
    (single,) = trainer.validate(model, data, verbose=False)
    assert float(logged["val_loss"]) == pytest.approx(single["val_loss"], rel=1e-5, abs=1e-6)
    assert float(logged["val_acc"]) == pytest.approx(single["val_acc"], abs=1e-6)
