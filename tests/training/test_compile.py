"""The optimizer update: torch's multi-tensor (``foreach``) path by default, and
``Classifier(compile=True)``: same training as eager, same checkpoint keys (one tiny fit:
compiling on a CPU takes seconds per graph)."""

import importlib
import os
import shutil

import lightning as L
import pytest
import torch

from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.autoencoder import LayerwiseAutoencoder
from deeptrain.training.compile import foreach_by_default_
from deeptrain.training.module import Classifier
from tiny_data import TinyData


def has_compiler() -> bool:
    return any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c)


requires_compiler = pytest.mark.skipif(not has_compiler() or not hasattr(torch, "compile"),
                                       reason="torch.compile's CPU backend needs a C++ compiler")


@pytest.fixture
def nadam_paths(monkeypatch) -> dict[str, int]:
    """How many updates took NAdam's multi-tensor and its per-tensor implementation."""
    module = importlib.import_module("torch.optim.nadam")  # torch.optim hides its submodules' names
    calls = {"multi_tensor": 0, "single_tensor": 0}
    for name in calls:
        real = getattr(module, f"_{name}_nadam")

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)
        monkeypatch.setattr(module, f"_{name}_nadam", counted)
    return calls


@pytest.mark.parametrize("optimizer", [torch.optim.NAdam, torch.optim.Adam, torch.optim.SGD, torch.optim.RMSprop])
def test_foreach_becomes_the_default_and_a_group_added_later_gets_it(optimizer):
    w, later = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    opt = foreach_by_default_(optimizer([w], lr=0.1))
    opt.add_param_group({"params": [later]})  # what a finetuning callback does when it unfreezes
    assert [g["foreach"] for g in opt.param_groups] == [True, True]


@pytest.mark.parametrize("kwargs", [{"foreach": False}, {"fused": True}, {"differentiable": True},
                                    {"lr": torch.tensor(0.1)}])  # Adam's foreach path refuses a tensor lr
def test_foreach_leaves_an_explicit_choice_alone(kwargs):
    opt = foreach_by_default_(torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], **{"lr": 0.1, **kwargs}))
    assert opt.param_groups[0]["foreach"] == kwargs.get("foreach")  # False stays False, None stays None


def test_an_optimizer_without_the_option_is_untouched():
    opt = foreach_by_default_(torch.optim.LBFGS([torch.nn.Parameter(torch.ones(3))]))
    assert "foreach" not in opt.param_groups[0] and "foreach" not in opt.defaults


@pytest.mark.parametrize("foreach", [None, False])
def test_the_classifier_updates_with_foreach_unless_told_otherwise(tmp_path, nadam_paths, foreach):
    model = Classifier(MLPConfig(depth=1, width=8), input_shape=(1, 4, 4), num_classes=3,
                       optimizer=lambda p: torch.optim.NAdam(p, lr=1e-2, foreach=foreach))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=TinyData(n=48, batch_size=8))
    steps = {"multi_tensor": 6, "single_tensor": 0} if foreach is None else {"multi_tensor": 0, "single_tensor": 6}
    assert nadam_paths == steps


def test_the_autoencoder_updates_with_foreach(nadam_paths):
    model = LayerwiseAutoencoder(MLPConfig(depth=2, width=8), input_shape=(1, 4, 4))
    optimizer = model.configure_optimizers()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    assert nadam_paths == {"multi_tensor": 1, "single_tensor": 0}


def fit(compile: bool, tmp_path, optimizer=lambda p: torch.optim.NAdam(p, lr=1e-2), **kwargs) -> tuple[Classifier, L.Trainer]:
    torch.manual_seed(0)
    model = Classifier(MLPConfig(depth=1, width=8, activation="elu"), input_shape=(1, 4, 4), num_classes=3,
                       compile=compile, optimizer=optimizer, **kwargs)
    model.normalizer.set_stats(torch.full((1, 4, 4), 128.0), torch.full((1, 4, 4), 64.0))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=TinyData(n=48, batch_size=8, labels="random", shuffle=True))
    return model, trainer


@pytest.mark.slow
@requires_compiler
def test_compiled_training_matches_eager_and_checkpoints_stay_compatible(tmp_path):
    eager, eager_trainer = fit(False, tmp_path)
    compiled, trainer = fit(True, tmp_path)

    assert compiled._compiled_call_impl is not None  # the forward really was compiled
    assert getattr(trainer.optimizers[0], "_deeptrain_compiled_step", False)  # and the update
    torch.testing.assert_close(trainer.callback_metrics["train_loss"], eager_trainer.callback_metrics["train_loss"],
                               rtol=1e-5, atol=1e-6)
    for (name, p), (_, q) in zip(eager.state_dict().items(), compiled.state_dict().items()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=name)  # 6 steps apart from rounding

    path = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(path)
    assert list(torch.load(path, weights_only=True)["state_dict"]) == list(eager.state_dict())
    loaded = Classifier.load_from_checkpoint(path, compile=False)  # loads into an eager model
    x = TinyData(n=48, batch_size=8, labels="random", shuffle=True).x[:5]
    torch.testing.assert_close(loaded.eval()(x), eager.eval()(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@requires_compiler
def test_compiled_adam_under_a_schedule_matches_eager(tmp_path):
    # a schedule makes the learning rates tensors, which Adam's foreach path refuses
    setup = dict(optimizer=lambda p: torch.optim.Adam(p, lr=1e-2),
                 lr_scheduler=lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.5), scheduler_interval="step")
    eager, _ = fit(False, tmp_path, **setup)
    compiled, trainer = fit(True, tmp_path, **setup)
    assert trainer.optimizers[0].param_groups[0]["lr"].item() == pytest.approx(1e-2 * 0.5 ** 6)
    for (name, p), (_, q) in zip(eager.state_dict().items(), compiled.state_dict().items()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=name)
