"""What TensorBoard shows: hyperparameters in the HParams tab with the best-epoch metrics (never a
NaN placeholder), and after a resume every step once."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tiny_data import CrashAt, TinyData

from deeptrain.callbacks.checkpointing import PeriodicCheckpoint
from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.module import HP_METRICS, Classifier
from deeptrain.training.tensorboard import flatten_hparams


def classifier():
    torch.manual_seed(0)
    return Classifier(MLPConfig(widths=[8, 8]), input_shape=(1, 4, 4), num_classes=3, l2=1e-3,
                      optimizer=partial(torch.optim.SGD, lr=0.1))


def fit(tmp_path, max_epochs, callbacks=(), ckpt_path=None):
    logger = TensorBoardLogger(tmp_path, name="tb", version=0, default_hp_metric=False)
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=max_epochs, logger=logger, log_every_n_steps=1,
                        callbacks=[PeriodicCheckpoint(tmp_path / "ckpt", every_n_train_steps=2), *callbacks],
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(classifier(), datamodule=TinyData(), ckpt_path=ckpt_path)  # 3 steps an epoch
    return trainer


def events(tmp_path) -> EventAccumulator:
    accumulator = EventAccumulator(str(tmp_path / "tb" / "version_0"))
    accumulator.Reload()
    return accumulator


def hparams_session(accumulator: EventAccumulator) -> tuple[dict, list[str]]:
    content = accumulator.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    values = {k: v.number_value if v.HasField("number_value") else v.string_value for k, v in start.hparams.items()}
    return values, [m.name.tag for m in experiment.metric_infos]


def test_hyperparameters_reach_the_hparams_tab_with_the_best_epoch_metrics_and_no_nan(tmp_path):
    fit(tmp_path, max_epochs=3)
    accumulator = events(tmp_path)
    values, metrics = hparams_session(accumulator)
    assert metrics == list(HP_METRICS)
    assert values["l2"] == pytest.approx(1e-3) and values["net/widths"] == "[8, 8]"
    assert values["net/activation"] == "relu" and values["num_classes"] == 3
    best = accumulator.Scalars("hp/best_val_loss")
    assert all(math.isfinite(e.value) for name in HP_METRICS for e in accumulator.Scalars(name))
    val_losses = [e.value for e in accumulator.Scalars("val_loss")]
    assert best[-1].value == pytest.approx(min(val_losses))
    assert best[0].step > 0  # logged at the first validation, not as a step-0 placeholder


def test_after_a_resume_every_step_is_shown_once(tmp_path):
    with pytest.raises(RuntimeError, match="killed"):
        fit(tmp_path, max_epochs=3, callbacks=[CrashAt(5)])  # steps 0..4 logged, last.ckpt at step 4
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["global_step"] == 4
    fit(tmp_path, max_epochs=3, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    accumulator = events(tmp_path)
    assert [e.step for e in accumulator.Scalars("train_loss_step")] == list(range(9))
    assert [e.step for e in accumulator.Scalars("val_loss")] == [2, 5, 8]


def test_flatten_hparams():
    assert flatten_hparams({"net": {"depth": 2, "widths": [3]}, "lr": None, "ok": True}) == {
        "net/depth": 2, "net/widths": "[3]", "lr": "None", "ok": True}
