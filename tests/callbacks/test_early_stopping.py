import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from deeptrain.callbacks.early_stopping import EarlyStopping

# epoch:          0    1    2    3     4    5    6    7
SCRIPT = [1.0, 0.8, 0.5, 0.6, 0.55, 0.7, 0.4, 0.3]  # best at 2; patience 3 stops at 5, before the 0.4


class Scripted(L.LightningModule):
    """Trains for real (its weights change every step) but reports a scripted val_loss."""

    def __init__(self, losses):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 1)
        self.bn = nn.BatchNorm1d(4)  # buffers must come back too
        self.losses = losses
        self.weights_at: dict[int, dict[str, torch.Tensor]] = {}

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return (self.layer(self.bn(x)) - 1).square().mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", torch.tensor(self.losses[self.current_epoch]))

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self.weights_at[self.current_epoch] = {k: v.clone() for k, v in self.state_dict().items()}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader():
    return DataLoader(TensorDataset(torch.randn(32, 4)), batch_size=8)


def fit(tmp_path, losses, callbacks, max_epochs=8, checkpointing=False):
    model = Scripted(losses)
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=max_epochs, callbacks=callbacks, logger=False,
                        enable_checkpointing=checkpointing, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, train_dataloaders=loader(), val_dataloaders=loader())
    return model, trainer


def assert_state_equal(actual, expected):
    assert actual.keys() == expected.keys()
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


def test_stops_at_the_right_epoch_and_restores_the_best_epochs_weights(tmp_path):
    early_stopping = EarlyStopping(monitor="val_loss", patience=3)
    model, trainer = fit(tmp_path, SCRIPT, [early_stopping])
    assert early_stopping.stopped_epoch == 5
    assert sorted(model.weights_at) == [0, 1, 2, 3, 4, 5]  # epoch 6 never ran
    assert early_stopping.best_epoch == 2
    assert float(early_stopping.best_score) == pytest.approx(0.5)
    assert not torch.equal(model.weights_at[2]["layer.weight"], model.weights_at[5]["layer.weight"])
    assert_state_equal(model.state_dict(), model.weights_at[2])  # weights and BN buffers of epoch 2


def test_without_restore_the_module_keeps_the_last_weights(tmp_path):
    early_stopping = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=False)
    model, _ = fit(tmp_path, SCRIPT, [early_stopping])
    assert_state_equal(model.state_dict(), model.weights_at[5])


def test_best_weights_come_back_when_fit_ends_at_max_epochs(tmp_path):
    early_stopping = EarlyStopping(monitor="val_loss", patience=10)
    model, _ = fit(tmp_path, [1.0, 0.5, 0.7, 0.9], [early_stopping], max_epochs=4)
    assert early_stopping.stopped_epoch == 0  # it did not stop early; Keras would not restore here
    assert_state_equal(model.state_dict(), model.weights_at[1])


def test_min_delta_decides_what_counts_as_the_best_epoch(tmp_path):
    early_stopping = EarlyStopping(monitor="val_loss", patience=2, min_delta=0.1)
    model, _ = fit(tmp_path, [1.0, 0.5, 0.45, 0.42, 0.9], [early_stopping])
    assert early_stopping.stopped_epoch == 3 and early_stopping.best_epoch == 1
    assert_state_equal(model.state_dict(), model.weights_at[1])


def test_without_an_in_memory_copy_the_best_checkpoint_is_used(tmp_path):
    """After a resume the copy is gone: the ModelCheckpoint on the same metric supplies the weights."""
    early_stopping = EarlyStopping(monitor="val_loss", patience=3)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val_loss")
    model, trainer = fit(tmp_path, SCRIPT, [early_stopping, checkpoint], checkpointing=True)
    early_stopping._best_state = None
    with torch.no_grad():
        model.layer.weight.zero_()
    early_stopping.on_fit_end(trainer, model)
    assert checkpoint.best_model_path.endswith(".ckpt")
    assert_state_equal(model.state_dict(), model.weights_at[2])
