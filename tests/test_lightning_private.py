"""Each private Lightning name deeptrain relies on (deeptrain/_lightning.py, and the LightningCLI
internals that deeptrain.cli's subclass overrides) exists and behaves as assumed: a Lightning
release that changes one fails here, by name, instead of somewhere in a fit."""

from __future__ import annotations

import inspect

from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from tiny_data import TinyData

from deeptrain._lightning import attached_trainer, drop_hparams, request_graceful_stop, save_last_checkpoint
from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.module import Classifier


def classifier(**kwargs):
    return Classifier(MLPConfig(widths=[8]), input_shape=(1, 4, 4), num_classes=3, **kwargs)


def trainer(tmp_path, callbacks=(), **kwargs):
    defaults = dict(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    return L.Trainer(callbacks=list(callbacks), **{**defaults, **kwargs})


class AtStep(L.Callback):
    def __init__(self, step, action):
        self.step, self.action = step, action

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            self.action(trainer)


def test_attached_trainer_is_none_until_a_trainer_attaches(tmp_path):
    model = classifier()
    with pytest.raises(RuntimeError, match="not attached to a `Trainer`"):  # what attached_trainer catches
        model.trainer
    assert attached_trainer(model) is None
    t = trainer(tmp_path, max_steps=1)
    t.fit(model, datamodule=TinyData())
    assert attached_trainer(model) is t


def test_drop_hparams_keeps_the_keys_out_of_the_checkpoint(tmp_path):
    model = classifier(mc_samples=5)
    assert "_hparams_initial" in vars(model)  # what checkpoints save as hyper_parameters
    drop_hparams(model, ["mc_samples"])
    assert "mc_samples" not in model.hparams and "mc_samples" not in model.hparams_initial
    t = trainer(tmp_path, max_steps=1)
    t.fit(model, datamodule=TinyData())
    t.save_checkpoint(tmp_path / "m.ckpt")
    saved = torch.load(tmp_path / "m.ckpt", weights_only=False)["hyper_parameters"]
    assert "mc_samples" not in saved and saved["num_classes"] == 3


def test_request_graceful_stop_ends_the_fit_at_the_next_batch_with_sigterm_exception(tmp_path):
    t = trainer(tmp_path, max_epochs=3, callbacks=[AtStep(2, request_graceful_stop)])
    with pytest.raises(SIGTERMException):
        t.fit(classifier(), datamodule=TinyData())  # 3 batches an epoch
    assert t.received_sigterm and t.global_step == 2  # no batch after the one that asked


def test_save_last_checkpoint_at_a_step_saves_that_step(tmp_path):
    saved = []
    callback = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    for name in ("_should_skip_saving_checkpoint", "_save_last_checkpoint", "_monitor_candidates"):
        assert callable(getattr(callback, name))

    def save(trainer):
        save_last_checkpoint(callback, trainer)
        saved.append(torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["global_step"])

    trainer(tmp_path, max_steps=3, callbacks=[callback, AtStep(2, save)], enable_checkpointing=True).fit(
        classifier(), datamodule=TinyData())
    assert saved == [2]


def test_the_logger_version_helpers(tmp_path):
    from deeptrain._lightning import logger_version_is_set, set_logger_version

    logger = TensorBoardLogger(tmp_path, name="tb")
    assert not logger_version_is_set(logger)  # unset: the next free version_N
    set_logger_version(logger, "version_3")
    assert logger_version_is_set(logger) and logger.version == 3 and logger.log_dir.endswith("version_3")


def test_the_overridden_lightningcli_internals_exist_as_assumed():
    """deeptrain.cli overrides or calls these LightningCLI internals; a Lightning release that
    renames them fails here first, with the name, instead of deep inside a command."""
    for name, params in {"_add_subcommands": ["parser"], "_run_subcommand": ["subcommand"],
                         "_prepare_subcommand_parser": ["klass", "subcommand"], "_add_arguments": ["parser"],
                         "_parse_ckpt_path": [], "_prepare_subcommand_kwargs": ["subcommand"]}.items():
        assert [p for p in inspect.signature(getattr(LightningCLI, name)).parameters if p not in ("self", "kwargs")] == params
    setup = inspect.getsource(LightningCLI.setup_parser)
    assert "self._subcommand_method_arguments" in setup and "self._add_subcommands(" in setup
    assert "self._model_class" in inspect.getsource(LightningCLI.add_core_arguments_to_parser)


class MemoryLogger(Logger):
    name, version = "memory", 0

    def __init__(self):
        super().__init__()
        self.losses: dict[int, float] = {}

    def log_metrics(self, metrics, step=None):
        if "train_loss_step" in metrics:
            self.losses[step] = float(metrics["train_loss_step"])

    def log_hyperparams(self, *args, **kwargs):
        pass


class StepLosses(L.Callback):
    def __init__(self):
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, *args):
        self.losses[trainer.global_step - 1] = float(outputs["loss"])


@pytest.mark.parametrize("every, steps", [(3, [2, 5, 8]), (1, list(range(10)))])
def test_the_module_logs_its_step_loss_exactly_on_the_steps_lightning_writes(tmp_path, every, steps):
    """Classifier._is_logging_step (public state) agrees with Lightning's should_update_logs:
    each written value is the loss of the step it is written at, not a stale one."""
    logger, probe = MemoryLogger(), StepLosses()
    t = trainer(tmp_path, max_steps=10, max_epochs=-1, logger=logger, log_every_n_steps=every, callbacks=[probe])
    t.fit(classifier(optimizer=partial(torch.optim.SGD, lr=0.1)), datamodule=TinyData())
    assert list(logger.losses) == steps
    assert logger.losses == pytest.approx({step: probe.losses[step] for step in steps}, rel=1e-6)


class HookNames(L.Callback):
    """Records the module's ``_current_fx_name`` inside hooks, and whether it sits in the instance dict."""

    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, *args):
        self.seen.append((pl_module._current_fx_name, "_current_fx_name" in vars(pl_module)))


def test_cheap_hook_name_takes_lightnings_hook_names_and_leaves_module_attributes_alone(tmp_path, monkeypatch):
    model = classifier()
    slow = []
    original = torch.nn.Module.__setattr__
    monkeypatch.setattr(torch.nn.Module, "__setattr__", lambda self, name, value: (slow.append(name), original(self, name, value))[1])
    names = HookNames()
    trainer(tmp_path, max_steps=2, callbacks=[names]).fit(model, datamodule=TinyData())
    assert names.seen == [("on_train_batch_start", True)] * 2  # what Lightning sets around each hook call
    assert "_current_fx_name" not in slow  # went around nn.Module's checks
    model.extra = torch.nn.Parameter(torch.zeros(2))  # anything else still goes through nn.Module
    model.head = torch.nn.Linear(2, 2)
    assert "extra" in dict(model.named_parameters()) and "head" in dict(model.named_children())


def test_cached_state_key_is_lightnings_key_computed_once(monkeypatch):
    from deeptrain.callbacks.checkpointing import PeriodicCheckpoint
    from deeptrain.callbacks.early_stopping import EarlyStopping

    for callback, lightning_class in ((PeriodicCheckpoint(every_n_train_steps=7), ModelCheckpoint),
                                      (EarlyStopping(monitor="val_acc", mode="max"), L.pytorch.callbacks.EarlyStopping)):
        expected = lightning_class.state_key.fget(callback)  # Lightning's own, uncached
        calls = []
        original = type(callback)._generate_state_key
        monkeypatch.setattr(type(callback), "_generate_state_key", lambda self, **kw: (calls.append(1), original(self, **kw))[1])
        assert [callback.state_key for _ in range(3)] == [expected] * 3
        assert len(calls) == 1
        assert expected.startswith(type(callback).__qualname__) and ("7" in expected or "val_acc" in expected)
