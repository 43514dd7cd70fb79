import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from deeptrain.callbacks.early_stopping import EarlyStopping
from deeptrain.callbacks.pruning import MagnitudePruning, cubic_sparsity
from deeptrain.nn.mlp import MLPConfig
from deeptrain.nn.sparsity import effective_weight, prunable_weights, sparsity_report
from deeptrain.training.module import Classifier
from tiny_data import TinyData


def classifier():
    torch.manual_seed(0)
    return Classifier(MLPConfig(widths=[32, 16]), input_shape=(1, 4, 4), num_classes=3)


def fit(tmp_path, callbacks, max_epochs=4, checkpointing=False):
    model = classifier()
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=max_epochs, callbacks=callbacks, logger=False,
                        enable_checkpointing=checkpointing, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(model, datamodule=TinyData())
    return model, trainer


def test_cubic_schedule():
    assert cubic_sparsity(0, 0.8, start_epoch=1, pruning_epochs=4) == 0.0
    assert cubic_sparsity(1, 0.8, 1, 4) == pytest.approx(0.8 * (1 - 0.75**3))
    assert cubic_sparsity(4, 0.8, 1, 4) == pytest.approx(0.8)
    assert cubic_sparsity(9, 0.8, 1, 4) == pytest.approx(0.8)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_training_reaches_the_requested_sparsity_and_the_checkpoint_is_plain(tmp_path, scope):
    pruning = MagnitudePruning(sparsity=0.8, start_epoch=1, pruning_epochs=2, scope=scope)
    model, trainer = fit(tmp_path, [pruning])
    layers = prunable_weights(model)
    assert [name for name, _ in layers] == ["net.backbone.0.linear", "net.backbone.1.linear", "net.head"]
    rows, total = sparsity_report(layers)
    n = sum(r.total for r in rows)
    if scope == "global":
        assert total.zeros == round(0.8 * n)
    else:
        assert [r.zeros for r in rows] == [round(0.8 * r.total) for r in rows]
    assert trainer.callback_metrics["sparsity"] == pytest.approx(total.sparsity)
    assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict())  # permanent after fit
    path = tmp_path / "pruned.ckpt"
    trainer.save_checkpoint(path)
    reloaded = Classifier.load_from_checkpoint(path)
    assert sparsity_report(prunable_weights(reloaded))[1] == total
    x = TinyData().x[:8]
    torch.testing.assert_close(reloaded.eval()(x), model.eval()(x))


def test_biases_and_the_epochs_before_start_are_not_pruned(tmp_path):
    pruning = MagnitudePruning(sparsity=0.5, start_epoch=5, pruning_epochs=2)
    model, _ = fit(tmp_path, [pruning], max_epochs=2)
    assert sparsity_report(prunable_weights(model))[1].zeros == 0
    model, _ = fit(tmp_path, [MagnitudePruning(sparsity=0.5, pruning_epochs=1)], max_epochs=1)
    assert all((layer.bias != 0).all() for _, layer in prunable_weights(model))


class ShiftedValidation(TinyData):
    """Validation labels shifted by one class: val_loss gets worse as the net learns the
    training rule, so the best epoch is an early one, not the last."""

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.x, (self.y + 1) % 3), batch_size=32)


def test_early_stopping_restores_the_best_epoch_of_a_pruned_run(tmp_path):
    """The in-memory copy is taken while the masks are on (weight_orig, weight_mask); the module
    is plain after fit; the restored weights are still exactly the best epoch's."""
    early_stopping = EarlyStopping(monitor="val_loss", patience=10)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss")
    head = {}
    record = L.Callback()
    record.on_validation_epoch_end = lambda trainer, module: head.__setitem__(
        trainer.current_epoch, effective_weight(module.net.head).detach().clone())
    model = classifier()
    model.lr = 0.02  # learn the training rule fast, so val_loss rises after epoch 0
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=5, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[MagnitudePruning(sparsity=0.6, pruning_epochs=1), early_stopping, checkpoint, record])
    trainer.fit(model, datamodule=ShiftedValidation())
    assert early_stopping.best_epoch == 0  # pruned (masks on) during epoch 0; not the last epoch
    best = torch.load(checkpoint.best_model_path, weights_only=True)["state_dict"]
    assert not any(k.endswith(("_orig", "_mask")) for k in best)
    assert best.keys() == model.state_dict().keys()
    assert sorted(head) == [0, 1, 2, 3, 4]
    assert torch.equal(best["net.head.weight"], head[0])
    assert not torch.equal(best["net.head.weight"], head[4])
    for key, value in best.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_invalid_arguments_name_the_value():
    with pytest.raises(ValueError, match="sparsity must be in"):
        MagnitudePruning(sparsity=1.2)
    with pytest.raises(ValueError, match="valid choices: global, layer"):
        MagnitudePruning(scope="channel")


class RowNorms(L.Callback):
    """The largest row norm of each hidden layer's effective weight after every optimizer step."""

    def __init__(self):
        self.max_norms: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.max_norms.append(max(effective_weight(linear).norm(dim=1).max().item()
                                  for linear in pl_module.net.hidden_linears()))


def test_max_norm_holds_on_pruned_layers_during_training(tmp_path):
    torch.manual_seed(0)
    net = MLPConfig(widths=[32, 16], max_norm=0.5, kernel_init="random_normal", kernel_init_args={"stddev": 1.0})
    model = Classifier(net, input_shape=(1, 4, 4), num_classes=3,
                       optimizer=lambda params: torch.optim.SGD(params, lr=0.5))
    probe = RowNorms()
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[MagnitudePruning(sparsity=0.5, start_epoch=0, pruning_epochs=1), probe])
    trainer.fit(model, datamodule=TinyData())
    assert len(probe.max_norms) == 6  # 3 steps an epoch, every one of them masked
    assert max(probe.max_norms) <= 0.5 + 1e-5
