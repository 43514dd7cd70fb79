"""The lean training loop is Lightning's loop, bitwise: the same hooks in the same order under the same
names, the same updates, progress counters, logged values and checkpoints; other setups fall back."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop
from bitwise import assert_same
from tiny_data import TinyData

from deeptrain.cli import build_cli
from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.lean_loop import LeanTrainingEpochLoop, lean_path_blocker, use_lean_loop
from deeptrain.training.module import Classifier
from deeptrain.training.schedules import PowerLR

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "fashion_mnist" / "mlp.yaml"
STOCK_ADVANCE = _TrainingEpochLoop.advance
BATCH_HOOKS = ("on_train_batch_start", "on_before_zero_grad", "on_before_backward", "on_after_backward",
               "on_before_optimizer_step", "on_train_batch_end")  # in Lightning's order


class Recorder(L.Callback):
    """Records every batch hook (and the hook name the module holds then) into ``calls``, which the
    module's own hooks share, and logs from each."""

    def __init__(self, calls: list[tuple]) -> None:
        self.calls = calls

    def _record(self, hook: str, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.calls.append((hook, module._current_fx_name, trainer.global_step, trainer.fit_loop.epoch_loop.batch_idx))
        module.log(f"seen_{hook}", float(len(self.calls)), on_step=True, on_epoch=False)


for _hook in BATCH_HOOKS:
    setattr(Recorder, _hook, lambda self, trainer, module, *args, _hook=_hook: self._record(_hook, trainer, module))


class EndsEpochEarly(Classifier):
    """The module's own batch hooks, recorded into ``calls``: one returns -1 at epoch 1's third batch,
    which skips the rest of that epoch (as Lightning allows)."""

    def on_train_batch_start(self, batch, batch_idx):
        self.calls.append(("module.on_train_batch_start", self._current_fx_name, batch_idx))
        self.log("module_batch_start", float(batch_idx))
        return -1 if (self.current_epoch, batch_idx) == (1, 2) else None

    def on_after_backward(self):
        self.calls.append(("module.on_after_backward", self._current_fx_name))
        self.log("grad_sum", sum(p.grad.sum() for p in self.parameters() if p.grad is not None))


def fit(lean: bool, tmp_path: Path, **trainer_kwargs) -> tuple[L.Trainer, Classifier, Recorder, dict]:
    L.seed_everything(3, verbose=False)
    model = EndsEpochEarly(MLPConfig(widths=[8, 8], dropout=0.2, max_norm=1.0), input_shape=(1, 4, 4), num_classes=3,
                           lr_scheduler=partial(PowerLR, decay_steps=2), scheduler_interval="step", label_smoothing=0.1,
                           l2=1e-3, clipnorm=1.0)
    model.calls = []  # a plain attribute: the module's and the callback's calls in one list
    recorder = Recorder(model.calls)
    kwargs = dict(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False, deterministic=True,
                  val_check_interval=2, log_every_n_steps=1, gradient_clip_val=0.5, default_root_dir=tmp_path,
                  callbacks=[recorder], enable_checkpointing=False) | trainer_kwargs
    trainer = L.Trainer(**kwargs)
    if lean:
        use_lean_loop(trainer)
    trainer.fit(model, TinyData(n=96, batch_size=16, shuffle=True))
    checkpoint = trainer._checkpoint_connector.dump_checkpoint()
    return trainer, model, recorder, checkpoint


def test_the_lean_loop_is_lightnings_loop_bitwise(tmp_path, monkeypatch):
    stock = fit(False, tmp_path / "stock")
    stock_batches = []  # batches that took Lightning's path
    monkeypatch.setattr(_TrainingEpochLoop, "advance", lambda self, fetcher: stock_batches.append(1) or STOCK_ADVANCE(self, fetcher))
    lean = fit(True, tmp_path / "lean")

    assert isinstance(lean[0].fit_loop.epoch_loop, LeanTrainingEpochLoop) and stock_batches == []
    (t1, m1, r1, c1), (t2, m2, r2, c2) = stock, lean
    assert r1.calls == r2.calls
    hooks = [c[0] for c in r1.calls[:8]]  # the first batch: every hook, callbacks before the module
    assert hooks == ["on_train_batch_start", "module.on_train_batch_start", *BATCH_HOOKS[1:3], "on_after_backward",
                     "module.on_after_backward", *BATCH_HOOKS[4:]]
    assert t1.global_step == t2.global_step == 6 + 2 + 6  # epoch 1 ends after its third batch
    assert_same(m1.state_dict(), m2.state_dict(), "weights")
    assert_same(t1.callback_metrics, t2.callback_metrics, "callback_metrics")
    assert_same(t1.logged_metrics, t2.logged_metrics, "logged_metrics")
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "loops", "global_step", "epoch"):
        assert_same(c1[key], c2[key], key)


@pytest.mark.parametrize("kwargs, why", [
    ({"accumulate_grad_batches": 2}, "gradient accumulation"),
    ({"profiler": "simple"}, "a profiler records the hooks"),
    ({"precision": "64-true"}, "not 32-bit precision"),
])
def test_other_setups_take_lightnings_path(tmp_path, kwargs, why):
    reasons = []

    class Why(L.Callback):
        def on_train_start(self, trainer, module):
            reasons.append(lean_path_blocker(trainer))

    trainer, *_ = fit(True, tmp_path, callbacks=[Why()], max_epochs=1, **kwargs)
    assert reasons == [why] and trainer.fit_loop.epoch_loop._plan is None


def test_the_lean_path_is_taken_in_lightnings_default_setup(tmp_path):
    trainer, *_ = fit(True, tmp_path, max_epochs=1)
    assert lean_path_blocker(trainer) is None and trainer.fit_loop.epoch_loop._plan is not None


def test_the_cli_trains_with_the_lean_loop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = build_cli(["--config", str(CONFIG), "--trainer.logger=false"], run=False).trainer
    assert type(trainer.fit_loop.epoch_loop) is LeanTrainingEpochLoop
