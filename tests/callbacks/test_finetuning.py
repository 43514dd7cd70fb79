"""FreezeUnfreeze: frozen layers do not move (BatchNorm statistics included), unfrozen ones train at lr / divisor."""

import warnings
from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import BaseFinetuning, ModelCheckpoint
from torch.nn.modules.batchnorm import _BatchNorm

from deeptrain.callbacks.finetuning import FreezeUnfreeze
from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.module import Classifier
from deeptrain.training.schedules import ExponentialDecayLR, PiecewiseConstantLR, PowerLR
from tiny_data import CrashAt, TinyData


class ModeProbe(L.Callback):
    """After the forward pass of every training step: which BatchNorm layers were in train mode."""

    def __init__(self):
        self.modes: list[dict[str, bool]] = []
        self.states: list[dict[str, torch.Tensor]] = []  # at each epoch end

    def on_before_backward(self, trainer, pl_module, loss):
        self.modes.append({n: m.training for n, m in pl_module.net.named_modules() if isinstance(m, _BatchNorm)})

    def on_train_epoch_end(self, trainer, pl_module):
        self.states.append({k: v.clone() for k, v in pl_module.state_dict().items()})


def model(lr=0.1):
    net = MLPConfig(depth=3, width=8, norm="batch", input_norm=True)
    m = Classifier(net, input_shape=(1, 4, 4), num_classes=2, optimizer=partial(torch.optim.SGD, lr=lr))
    m.reused_layers = ["input_norm", "backbone.0", "backbone.1", "backbone.2"]  # as init_from with layers: all
    return m


def fit(m, callbacks, tmp_path, epochs=2, ckpt_path=None, **kw):
    probe = ModeProbe()
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=epochs, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[*callbacks, probe],
                        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks), **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(m, datamodule=TinyData(n=64, num_classes=2, batch_size=16), ckpt_path=ckpt_path)
    return trainer, probe


def keys_of(state, *layers):
    return [k for k in state if k.startswith(tuple(f"net.{layer}." for layer in layers))]


def changed(before, after, keys):
    return {k for k in keys if not torch.equal(before[k], after[k])}


def test_frozen_layers_and_their_bn_statistics_do_not_move(tmp_path):
    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    _, probe = fit(m, [FreezeUnfreeze(unfreeze_at_epoch=None, layers=2)], tmp_path)  # 2 epochs, with validation
    after = m.state_dict()
    frozen = keys_of(after, "input_norm", "backbone.0", "backbone.1")
    assert any("running_mean" in k for k in frozen) and any("num_batches_tracked" in k for k in frozen)
    assert changed(before, after, frozen) == set()  # bit-identical, running statistics included
    trainable = keys_of(after, "backbone.2", "head")
    assert changed(before, after, trainable) == set(trainable)
    assert len(probe.modes) == 8  # 4 steps x 2 epochs; validation in between restored the modes
    for modes in probe.modes:  # frozen BN normalizes with running statistics; the trainable one with the batch's
        assert modes == {"input_norm": False, "backbone.0.norm": False, "backbone.1.norm": False, "backbone.2.norm": True}


def test_unfrozen_layers_train_at_the_configured_fraction_of_the_lr(tmp_path):
    m = model(lr=0.1)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    trainer, probe = fit(m, [FreezeUnfreeze(unfreeze_at_epoch=1, lr_divisor=4)], tmp_path, epochs=2)
    groups = trainer.optimizers[0].param_groups
    assert [g["lr"] for g in groups] == [0.1, pytest.approx(0.025)]
    backbone = {id(p) for n, p in m.named_parameters() if n.startswith(("net.backbone.", "net.input_norm."))}
    assert {id(p) for p in groups[1]["params"]} == backbone
    assert changed(before, probe.states[0], keys_of(before, "backbone.0", "input_norm")) == set()  # epoch 0: frozen
    assert "net.backbone.0.linear.weight" in changed(probe.states[0], m.state_dict(), keys_of(before, "backbone.0"))
    assert all(all(modes.values()) for modes in probe.modes[4:])  # unfrozen BN trains (train_bn=True)


def test_unfreeze_top_k_leaves_the_lower_layers_frozen(tmp_path):
    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fit(m, [FreezeUnfreeze(unfreeze_at_epoch=1, unfreeze=1)], tmp_path)
    after = m.state_dict()
    assert changed(before, after, keys_of(after, "input_norm", "backbone.0", "backbone.1")) == set()
    assert "net.backbone.2.linear.weight" in changed(before, after, keys_of(after, "backbone.2"))


def test_train_bn_false_keeps_unfrozen_bn_frozen_in_eval_mode(tmp_path):
    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    _, probe = fit(m, [FreezeUnfreeze(unfreeze_at_epoch=1, train_bn=False)], tmp_path)
    after = m.state_dict()
    norms = [k for k in keys_of(after, "input_norm", "backbone.0", "backbone.1", "backbone.2") if "norm" in k]
    assert changed(before, after, norms) == set()
    assert "net.backbone.1.linear.weight" in changed(before, after, keys_of(after, "backbone.1"))
    assert not any(any(modes.values()) for modes in probe.modes)


def test_resume_after_unfreezing_keeps_one_group_that_still_trains(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit(model(), [FreezeUnfreeze(unfreeze_at_epoch=1, lr_divisor=4), ckpt], tmp_path, epochs=2)
    m = model()
    trainer, probe = fit(m, [FreezeUnfreeze(unfreeze_at_epoch=1, lr_divisor=4)], tmp_path, epochs=3,
                         ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    groups = trainer.optimizers[0].param_groups
    assert [g["lr"] for g in groups] == [0.1, pytest.approx(0.025)]
    resumed = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["state_dict"]
    assert "net.backbone.0.linear.weight" in changed(resumed, m.state_dict(), keys_of(resumed, "backbone.0"))


def test_the_optimizer_filter_goes_by_identity_not_by_value():
    present, twin = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))  # fresh zero biases
    optimizer = torch.optim.SGD([present], lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert BaseFinetuning.filter_on_optimizer(optimizer, [twin]) == []  # Lightning: dropped, never trained
    assert FreezeUnfreeze.filter_on_optimizer(optimizer, [twin, present]) == [twin]


@pytest.mark.parametrize("kw, message", [
    ({"unfreeze_at_epoch": -1}, "unfreeze_at_epoch=-1"), ({"layers": "all"}, "layers='all': expected 'reused'"),
    ({"unfreeze": 0}, "unfreeze=0: expected 'all'"), ({"lr_divisor": 0}, "lr_divisor=0"),
])
def test_bad_arguments_name_the_value(kw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        FreezeUnfreeze(**kw)


class LrProbe(L.Callback):
    """The learning rate of every param group at every optimizer step (after the schedule's update)."""

    def __init__(self):
        self.lrs: list[list[float]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append([g["lr"] for g in optimizer.param_groups])


SCHEDULES = {  # every scheduler the README documents, and torch's usual ones; (factory, interval)
    "onecycle": (partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1), "step"),
    "power": (partial(PowerLR, decay_steps=2), "step"),
    "exponential_decay": (partial(ExponentialDecayLR, decay_steps=3), "step"),
    "piecewise": (partial(PiecewiseConstantLR, boundaries=[3, 6], values=[0.1, 0.05, 0.01]), "step"),
    # mode=max on a falling val_loss: the lr is cut at every epoch end; a per-group min_lr list
    "plateau": (partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="max", factor=0.5, patience=0,
                        min_lr=[1e-6]), "epoch"),
    "torch_exponential": (partial(torch.optim.lr_scheduler.ExponentialLR, gamma=0.9), "step"),
    "torch_cosine": (partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=12), "step"),
    "torch_step": (partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5), "epoch"),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_unfreezing_works_with_every_schedule_and_the_new_group_follows_it_at_lr_over_divisor(name, tmp_path):
    factory, interval = SCHEDULES[name]
    m = model(lr=0.1)
    m.lr_scheduler, m.hparams.scheduler_interval = factory, interval
    probe = LrProbe()
    fit(m, [FreezeUnfreeze(unfreeze_at_epoch=1, lr_divisor=4), probe], tmp_path, epochs=3)  # 4 steps an epoch
    assert [len(lrs) for lrs in probe.lrs] == [1] * 4 + [2] * 8
    after = probe.lrs[4:]
    assert len({first for first, _ in after}) > 1  # the schedule moves while both groups train
    assert [second for _, second in after] == pytest.approx([first / 4 for first, _ in after], rel=1e-6)


@pytest.mark.parametrize("name", ["onecycle", "power"])
def test_a_resume_after_unfreezing_continues_the_schedule_of_both_groups(name, tmp_path):
    from deeptrain.callbacks.checkpointing import PeriodicCheckpoint

    factory, interval = SCHEDULES[name]

    def run(root, callbacks, ckpt_path=None):
        m = model(lr=0.1)
        m.lr_scheduler, m.hparams.scheduler_interval = factory, interval
        probe = LrProbe()
        checkpoint = PeriodicCheckpoint(root / "ckpt", every_n_train_steps=2)
        fit(m, [FreezeUnfreeze(unfreeze_at_epoch=1, lr_divisor=4), checkpoint, probe, *callbacks], root,
            epochs=3, ckpt_path=ckpt_path)
        return probe.lrs

    reference = run(tmp_path / "a", [])
    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path / "b", [CrashAt(9)])  # the last checkpoint: step 8, two groups
    resumed = run(tmp_path / "b", [], ckpt_path=str(tmp_path / "b" / "ckpt" / "last.ckpt"))
    torch.testing.assert_close(torch.tensor(resumed), torch.tensor(reference[8:]), rtol=1e-12, atol=0)
