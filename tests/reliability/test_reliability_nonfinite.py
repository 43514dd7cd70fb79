"""NonFiniteLossGuard: stop at the first NaN/inf loss keeping the last good checkpoint, or skip and count."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from reliability_helpers import SGD, tiny_config

from deeptrain.callbacks.checkpointing import PeriodicCheckpoint
from deeptrain.callbacks.nonfinite import NonFiniteLossError, NonFiniteLossGuard
from deeptrain.cli import main
from deeptrain.data.datamodule import ImageDataModule
from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.module import Classifier


class NaNAt(Classifier):
    """A Classifier whose loss is NaN (or inf) at the given global steps."""

    bad_steps: dict[int, float] = {}

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * self.bad_steps.get(self.trainer.global_step, 1.0)


class Snapshots(L.Callback):
    """Weights and optimizer momentum before and after every batch."""

    def __init__(self):
        self.before, self.after = {}, {}

    @staticmethod
    def _state(trainer, module):
        momentum = [s["momentum_buffer"].clone() for s in trainer.optimizers[0].state.values() if "momentum_buffer" in s]
        return [p.detach().clone() for p in module.parameters()], momentum

    def on_train_batch_start(self, trainer, module, *args):
        self.before[trainer.global_step] = self._state(trainer, module)

    def on_train_batch_end(self, trainer, module, *args):
        self.after[trainer.global_step - 1] = self._state(trainer, module)


def run(tmp: Path, images: Path, guard: NonFiniteLossGuard, bad_steps: dict[int, float], *callbacks) -> L.Trainer:
    L.seed_everything(0, verbose=False)
    NaNAt.bad_steps = bad_steps
    model = NaNAt(MLPConfig(widths=[16]), input_shape=(1, 4, 4), num_classes=3, optimizer=SGD)
    data = ImageDataModule("image_folder", data_dir=str(images), val_size=32, batch_size=8, cache_dir=str(tmp / "cache"))
    trainer = L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, default_root_dir=tmp,
                        callbacks=[guard, PeriodicCheckpoint(tmp / "ckpt", every_n_train_steps=2), *callbacks])
    trainer.fit(model, data)
    return trainer


def test_stop_names_step_epoch_and_causes_and_keeps_the_last_good_checkpoint(tiny_images, tmp_path):
    snapshots = Snapshots()
    with pytest.raises(NonFiniteLossError) as err:
        run(tmp_path, tiny_images, NonFiniteLossGuard("stop"), {11: float("nan")}, snapshots)
    message = str(err.value)
    for part in ("non-finite training loss (nan)", "global step 11", "epoch 1", "batch 3", "lr_find",
                 "gradient_clip_val", "last.ckpt", "--nonfinite.action skip"):
        assert part in message
    # the NaN step never reached the weights, and last.ckpt is the step-10 state
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 10
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    weights_at_10 = snapshots.after[10][0]
    assert all(torch.equal(a, b) for a, b in zip(weights_at_10, snapshots.before[11][0]))


def test_inf_loss_stops_too(tiny_images, tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"\(inf\) at global step 3"):
        run(tmp_path, tiny_images, NonFiniteLossGuard("stop"), {3: float("inf")})


def test_skip_leaves_weights_and_momentum_untouched_and_counts(tiny_images, tmp_path):
    snapshots, guard = Snapshots(), NonFiniteLossGuard("skip")
    trainer = run(tmp_path, tiny_images, guard, {3: float("nan"), 12: float("inf")}, snapshots)
    assert trainer.global_step == 16  # the skipped batches still count as steps
    assert guard.skipped == 2 and float(trainer.callback_metrics["nonfinite_skipped"]) == 2.0
    for step in (3, 12):
        (w0, m0), (w1, m1) = snapshots.before[step], snapshots.after[step]
        assert all(torch.equal(a, b) for a, b in zip(w0 + m0, w1 + m1)), f"step {step} changed the state"
    changed = snapshots.after[4][0][0]  # a good step does train
    assert not torch.equal(snapshots.before[4][0][0], changed)
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["callbacks"]


def test_skip_stops_after_max_skipped(tiny_images, tmp_path):
    with pytest.raises(NonFiniteLossError, match="more than nonfinite.max_skipped = 1"):
        run(tmp_path, tiny_images, NonFiniteLossGuard("skip", max_skipped=1), {2: float("nan"), 5: float("nan")})


def test_a_model_with_non_finite_weights_is_never_saved(tiny_images, tmp_path):
    trainer = run(tmp_path, tiny_images, NonFiniteLossGuard("stop"), {})
    before = (tmp_path / "ckpt" / "last.ckpt").read_bytes()
    with torch.no_grad():
        next(trainer.lightning_module.parameters())[0, 0] = float("inf")
    with pytest.raises(NonFiniteLossError, match="non-finite weights"):
        trainer.save_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    assert (tmp_path / "ckpt" / "last.ckpt").read_bytes() == before


def test_bad_action_is_a_clear_error():
    with pytest.raises(ValueError, match="nonfinite.action = 'ignore' is not valid; valid choices: stop, skip"):
        NonFiniteLossGuard("ignore")


def test_diverging_cli_run_ends_with_one_error_line(tiny_images, tmp_path, capsys):
    """An absurd learning rate through the CLI: exit code 1, the guard's message, no traceback."""
    config = tiny_config(tmp_path, tiny_images, max_epochs=2, every_n_train_steps=1)
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(config), "--model.optimizer.init_args.lr", "1e38", "--trainer.logger", "false"])
    err = capsys.readouterr().err
    assert stop.value.code == 1
    assert "error: non-finite training loss" in err and "Traceback" not in err
    (last,) = tmp_path.glob("**/last.ckpt")
    assert all(torch.isfinite(v).all() for v in torch.load(last, weights_only=True)["state_dict"].values())
