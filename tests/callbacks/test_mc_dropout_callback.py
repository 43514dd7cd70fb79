"""MC dropout inside Lightning's loops, which put the module in eval mode first."""

import logging

import lightning as L
import pytest
import torch

from deeptrain.callbacks.mc_dropout import MCDropoutEvaluation
from deeptrain.nn.mc_dropout import mc_predict
from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.module import Classifier
from tiny_data import TinyData


def make_trainer(tmp_path, callbacks=(), **kwargs):
    defaults = dict(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    return L.Trainer(callbacks=list(callbacks), **{**defaults, **kwargs})


def dropout_model(**kwargs):
    torch.manual_seed(0)
    net = MLPConfig(widths=[32, 32], activation="relu", norm="batch", dropout=0.4)
    return Classifier(net, input_shape=(1, 4, 4), num_classes=3, **kwargs)


def modes(module):
    return [m.training for m in module.modules()]


def test_test_loop_scores_deterministic_and_mc_side_by_side(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    data, model = TinyData(), dropout_model()
    make_trainer(tmp_path, max_epochs=2).fit(model, datamodule=data)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    callback = MCDropoutEvaluation(test_samples=20, seed=0)
    (results,) = make_trainer(tmp_path, [callback]).test(model, datamodule=data, verbose=False)
    for mode in ("det", "mc"):
        for name in ("acc", "nll", "brier", "ece", "entropy"):
            assert f"test_{mode}/{name}" in results
    # dropout was really on inside the eval-mode test loop: MC differs from the deterministic pass
    assert results["test_mc/nll"] != pytest.approx(results["test_det/nll"], abs=1e-4)
    assert results["test_mc/entropy"] > results["test_det/entropy"]  # averaging thinned nets spreads the mass
    assert results["test_det/acc"] == pytest.approx(results["test_acc"])
    # the deterministic column is the module's own forward: same loss as test_loss
    assert results["test_det/nll"] == pytest.approx(results["test_loss"], rel=1e-4)
    for key, value in state.items():  # BN statistics and weights untouched by the MC passes
        assert torch.equal(model.state_dict()[key], value), key
    assert "MC dropout, T = 20" in caplog.text  # the printed table (Lightning's INFO logger, on the console)
    assert callback.results["test"]["mc/acc"] == pytest.approx(results["test_mc/acc"])


def test_mc_predictions_inside_trainer_predict(tmp_path):
    data, model = TinyData(), dropout_model(mc_samples=50)
    make_trainer(tmp_path).fit(model, datamodule=data)
    model.train()  # a module left in train mode must come back in train mode
    before = modes(model)
    out = make_trainer(tmp_path).predict(model, datamodule=data)
    probs, std = torch.cat([o["probs"] for o in out]), torch.cat([o["std"] for o in out])
    assert probs.shape == std.shape == (96, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(96))
    assert (std.amax(dim=1) > 1e-3).float().mean() > 0.9  # the passes differ: dropout was on
    model.eval()
    with torch.no_grad():
        deterministic = model(data.x).softmax(-1)
    assert (probs - deterministic).abs().max() > 1e-2
    model.hparams.mc_samples = 0  # the default behaviour is unchanged: a softmax tensor
    plain = torch.cat(make_trainer(tmp_path).predict(model, datamodule=data))
    torch.testing.assert_close(plain, deterministic)
    assert before == [True] * len(before)


def test_mc_predict_called_from_a_test_step_under_inference_mode(tmp_path):
    seen = {}

    class Probe(Classifier):
        def test_step(self, batch, batch_idx):
            seen["training"] = self.training  # Lightning switched the module to eval
            _, std = mc_predict(self, batch[0], samples=10)
            seen["std"] = float(std.max())

    data = TinyData()
    torch.manual_seed(0)
    model = Probe(MLPConfig(widths=[16], dropout=0.5), input_shape=(1, 4, 4), num_classes=3)
    make_trainer(tmp_path).test(model, datamodule=data, verbose=False)
    assert seen["training"] is False and seen["std"] > 1e-3


@pytest.mark.parametrize("every_n_epochs, logged", [(2, True), (3, False)])
def test_validation_scores_every_n_epochs(tmp_path, every_n_epochs, logged):
    data, model = TinyData(), dropout_model()
    callback = MCDropoutEvaluation(every_n_epochs=every_n_epochs, val_samples=5)
    trainer = make_trainer(tmp_path, [callback], max_epochs=2, num_sanity_val_steps=1)
    trainer.fit(model, datamodule=data)
    assert ("val_mc/acc" in trainer.callback_metrics) is logged
    assert ("val" in callback.results) is logged


def test_a_model_without_dropout_is_skipped_with_a_warning(tmp_path):
    data = TinyData()
    model = Classifier(MLPConfig(widths=[8]), input_shape=(1, 4, 4), num_classes=3)
    with pytest.warns(UserWarning, match="no dropout"):
        (results,) = make_trainer(tmp_path, [MCDropoutEvaluation()]).test(model, datamodule=data, verbose=False)
    assert not any(k.startswith("test_mc") for k in results)
