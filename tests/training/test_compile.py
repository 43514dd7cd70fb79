"""``Classifier(compile=True)``: same training as eager, same checkpoint keys. One tiny fit:
compiling on a CPU takes seconds per graph."""

import os
import shutil

import lightning as L
import pytest
import torch

from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.module import Classifier
from tiny_data import TinyData


def has_compiler() -> bool:
    return any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c)


requires_compiler = pytest.mark.skipif(not has_compiler() or not hasattr(torch, "compile"),
                                       reason="torch.compile's CPU backend needs a C++ compiler")


def fit(compile: bool, tmp_path) -> tuple[Classifier, L.Trainer]:
    torch.manual_seed(0)
    model = Classifier(MLPConfig(depth=1, width=8, activation="elu"), input_shape=(1, 4, 4), num_classes=3,
                       compile=compile, optimizer=lambda p: torch.optim.NAdam(p, lr=1e-2))
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
