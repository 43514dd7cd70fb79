"""Shared by the Ray study tests: tiny Fashion-MNIST configs, a local Ray, and a callback that
SIGKILLs its own process once (what a lost node or the OOM killer does to a trial)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import yaml

from deeptrain.training.checkpoint_io import wait_for_checkpoints


TESTS = Path(__file__).resolve().parent
DATA = Path(os.environ.get("DEEPTRAIN_DATA_DIR", TESTS.parents[1] / "shared" / "data"))
needs_data = pytest.mark.skipif(not (DATA / "FashionMNIST").exists(), reason=f"no Fashion-MNIST under {DATA}")


def tiny_config(folder: Path, name: str, dropout: float = 0.0, lr: float = 0.05, **trainer) -> Path:
    """2 epochs of 4 batches of 256 Fashion-MNIST images on a 16-unit MLP with SGD; 500 for validation."""
    config = {
        "trainer": {"max_epochs": 2, "limit_train_batches": 4, **trainer},
        "model": {"net": {"widths": [16], "dropout": dropout},
                  "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": lr}}},
        "data": {"dataset": "fashion_mnist", "data_dir": str(DATA), "batch_size": 256, "val_size": 500},
    }
    file = folder / f"{name}.yaml"
    file.write_text(yaml.safe_dump(config))
    return file


def ray_env(monkeypatch, tmp: Path) -> None:
    """Ray's files under a (short: Unix socket paths) pytest folder; this folder importable by the trials."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")


class KillOnce(L.Callback):
    """Writes the global step each fit starts from to ``<marker>.starts``; SIGKILLs its process
    at ``at_step`` the first time (``marker`` records that it did)."""

    def __init__(self, marker: str, at_step: int):
        self.marker, self.at_step = Path(marker), at_step

    def on_train_start(self, trainer, pl_module):
        with open(f"{self.marker}.starts", "a") as f:
            f.write(f"{trainer.global_step}\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step and not self.marker.exists():
            self.marker.touch()
            # last.ckpt of an earlier step is written in the background: killed before it lands, the
            # retry would resume from an older file (or start over), which is right but not checked here
            wait_for_checkpoints(trainer)
            os.kill(os.getpid(), signal.SIGKILL)


def kill_driver_when(code: str, results: str, count: int, timeout: float = 240) -> list[Path]:
    """Runs ``code`` in a new Python process (a study's driver), SIGKILLs it and the Ray it started
    once ``count`` files match the glob ``results``; the files that did."""
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.time() + timeout
        while len(done := sorted(Path("/").glob(results.lstrip("/")))) < count and time.time() < deadline \
                and driver.poll() is None:
            time.sleep(0.5)
        time.sleep(1.5)  # past Ray's next snapshot of the study (every 1 s)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # as a killed job or a closed terminal does
        driver.wait()
    assert len(done) >= count, f"the driver did not write {count} results in {timeout} s"
    return done

