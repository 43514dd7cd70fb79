"""Exact resume: a fit stopped anywhere and resumed with ``--ckpt_path last`` ends bitwise where an
uninterrupted fit ends (CPU, ``deterministic: true``), with a shuffled DataModule, dropout, RReLU
and every schedule.

The "crash" here is an exception raised after a random step, which writes nothing, like a kill;
before resuming, the global RNGs are reseeded, so only the checkpoint can bring the run back.
``test_reliability_kill.py`` does the same with a real SIGKILL in a subprocess.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from bitwise import assert_same
from reliability_helpers import SCHEDULE_FACTORIES, SCHEDULES, SGD, tiny_config
from lightning.pytorch.callbacks import ModelCheckpoint

from deeptrain.callbacks.checkpointing import InterruptCheckpoint, PeriodicCheckpoint
from deeptrain.callbacks.early_stopping import EarlyStopping
from deeptrain.callbacks.nonfinite import NonFiniteLossGuard
from deeptrain.callbacks.resume import ExactResume
from deeptrain.cli import main
from deeptrain.data.datamodule import ImageDataModule
from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.checkpoint_io import AtomicCheckpointIO
from deeptrain.training.lean_loop import use_lean_loop
from deeptrain.training.module import Classifier

STEPS_PER_EPOCH, EPOCHS = 8, 3


class Crash(Exception):
    """Stands for a kill: raised inside training, saves nothing."""


class CrashAtStep(L.Callback):
    """Raises :class:`Crash` (or sends ``signum`` to this process) after optimizer step ``step``."""

    step: int = -1
    signum: int | None = None

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == type(self).step:
            if type(self).signum is None:
                raise Crash(f"crash after step {trainer.global_step}")
            signal.raise_signal(type(self).signum)


def fit(config: Path, *extra: str) -> None:
    main(["fit", "--config", str(config), *extra])


def fit_trainer(root: Path, images: Path, schedule: str, ckpt_path: str | None = None, crash: bool = False,
                lean: bool = False) -> None:
    """What the CLI builds for the tiny config (its default callbacks and checkpoint IO, and with ``lean``
    its training loop), without parsing."""
    L.seed_everything(7, verbose=False)
    factory, interval = SCHEDULE_FACTORIES[schedule]
    model = Classifier(MLPConfig(widths=[16, 16], activation="rrelu", dropout=0.2), input_shape=(1, 4, 4),
                       num_classes=3, optimizer=SGD, lr_scheduler=factory, scheduler_interval=interval)
    data = ImageDataModule("image_folder", data_dir=str(images), val_size=32, batch_size=8, eval_batch_size=16,
                           cache_dir=str(root / "cache"))
    folder = root / "checkpoints"
    callbacks = [EarlyStopping(monitor="val_loss", patience=20), ExactResume(), NonFiniteLossGuard(),
                 ModelCheckpoint(folder, monitor="val_loss"), PeriodicCheckpoint(folder, every_n_train_steps=3),
                 InterruptCheckpoint(folder)] + ([CrashAtStep()] if crash else [])
    trainer = L.Trainer(max_epochs=EPOCHS, deterministic=True, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=root,
                        callbacks=callbacks, plugins=[AtomicCheckpointIO()])
    if lean:
        use_lean_loop(trainer)
    trainer.fit(model, data, ckpt_path=ckpt_path)


def last_state(tmp: Path) -> dict:
    """Weights, optimizer and scheduler states of the newest ``last.ckpt``, and the epoch/step."""
    path = max(tmp.glob("**/last.ckpt"), key=lambda p: p.stat().st_mtime)
    ckpt = torch.load(path, weights_only=True)
    # callback states too: early stopping's counters, the guard's count, the RNG states (not the
    # checkpoint callbacks': they hold this run's paths)
    callbacks = {k: v for k, v in ckpt["callbacks"].items() if "Checkpoint" not in k}
    return {"state_dict": ckpt["state_dict"], "optimizer": ckpt["optimizer_states"], "callbacks": callbacks,
            "schedulers": ckpt["lr_schedulers"], "epoch": ckpt["epoch"], "step": ckpt["global_step"]}


@pytest.fixture(scope="module")
def references(tiny_images, tmp_path_factory) -> dict:
    """The final ``last.ckpt`` state of an uninterrupted fit, per schedule (computed once)."""
    cache: dict = {}

    def get(schedule: str) -> dict:
        if schedule not in cache:
            root = tmp_path_factory.mktemp(f"ref-{schedule}")
            fit_trainer(root, tiny_images, schedule)
            cache[schedule] = last_state(root)
            assert cache[schedule]["step"] == STEPS_PER_EPOCH * EPOCHS
        return cache[schedule]

    return get


@pytest.mark.parametrize("lean", [False, True], ids=["lightning_loop", "lean_loop"])
@pytest.mark.parametrize("schedule", sorted(SCHEDULE_FACTORIES))
def test_resume_after_a_crash_is_bitwise_exact(schedule, lean, references, tiny_images, tmp_path):
    expected = references(schedule)  # Lightning's own loop, uninterrupted

    # a random step that is not a checkpoint step (every 3): the run loses 1 or 2 steps and redoes them
    CrashAtStep.step = random.Random(schedule).choice([s for s in range(4, STEPS_PER_EPOCH * EPOCHS - 1) if s % 3])
    CrashAtStep.signum = None
    with pytest.raises(Crash):
        fit_trainer(tmp_path / "run", tiny_images, schedule, crash=True, lean=lean)
    torch.manual_seed(1234)  # whatever the crash left in memory must not matter
    random.seed(1234)
    fit_trainer(tmp_path / "run", tiny_images, schedule, ckpt_path="last", lean=lean)
    assert_same(last_state(tmp_path / "run"), expected)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_sigterm_and_ctrl_c_save_a_checkpoint_that_resumes_exactly(signum, references, tiny_images, tmp_path):
    """Through the CLI: its defaults, the interrupt checkpoint, the exit code, ``--ckpt_path last``
    finding the interrupted run's folder; it ends where the plain Trainer run without interruption ends."""
    # every_n_train_steps 0: only epoch ends and the interrupt save a checkpoint, so the resume
    # starts from the interrupt checkpoint (step 11, mid-epoch), not from a periodic one
    config = tiny_config(tmp_path, tiny_images, max_epochs=EPOCHS, every_n_train_steps=0)
    CrashAtStep.step, CrashAtStep.signum = 11, signum
    with pytest.raises(SystemExit) as stop:
        fit(config, *SCHEDULES["plateau"], "--trainer.callbacks+=test_reliability_resume.CrashAtStep")
    assert stop.value.code == 128 + signum
    checkpoints = tmp_path / "logs" / "tiny" / "version_0" / "checkpoints"
    assert torch.load(checkpoints / "last-interrupted.ckpt", weights_only=True)["global_step"] == 11

    torch.manual_seed(1234)
    random.seed(1234)
    fit(config, *SCHEDULES["plateau"], "--ckpt_path", "last")
    assert_same(last_state(tmp_path / "logs"), references("plateau"))
    # the resumed run logged into the interrupted run's folder, not a new version_1 ...
    assert [p.name for p in (tmp_path / "logs" / "tiny").iterdir()] == ["version_0"]
    # ... and, having completed, removed the superseded interrupt checkpoint
    assert not (checkpoints / "last-interrupted.ckpt").exists()
