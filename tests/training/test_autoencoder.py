"""Greedy layer-wise autoencoder: one block trains per stage, and a Classifier reuses its checkpoint."""

import warnings

import lightning as L
import pytest
import torch

from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.autoencoder import LayerwiseAutoencoder
from deeptrain.training.module import Classifier
from deeptrain.training.transfer import apply_init_from
from tiny_data import TinyData

NET = MLPConfig(depth=3, width=6, activation="elu")


class Snapshots(L.Callback):
    def __init__(self):
        self.states = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.states.append({k: v.clone() for k, v in pl_module.state_dict().items()})


def pretrain(tmp_path, max_epochs=10, model=None):
    model = model or LayerwiseAutoencoder(NET, input_shape=(1, 4, 4), epochs_per_layer=1)
    snapshots = Snapshots()
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=max_epochs, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[snapshots])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=TinyData(n=64, batch_size=16, images="low_rank"))
    return model, trainer, snapshots.states


def changed(a, b, prefix):
    return any(not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))


def test_each_stage_trains_only_its_block_and_decoder_then_stops(tmp_path):
    model, trainer, states = pretrain(tmp_path)
    assert trainer.current_epoch == 3 and len(states) == 3  # depth x epochs_per_layer, not max_epochs=10
    for stage in (1, 2):
        before, after = states[stage - 1], states[stage]
        assert changed(before, after, f"net.backbone.{stage}.") and changed(before, after, f"decoders.{stage}.")
        for other in {0, 1, 2} - {stage}:
            assert not changed(before, after, f"net.backbone.{other}.")
            assert not changed(before, after, f"decoders.{other}.")


def test_stage_zero_learns_to_reconstruct(tmp_path):
    model = LayerwiseAutoencoder(NET, input_shape=(1, 4, 4), epochs_per_layer=1,
                                 optimizer=lambda params: torch.optim.Adam(params, lr=0.02))
    data = TinyData(n=64, batch_size=16, images="low_rank")
    model.normalizer.set_stats(*data.input_stats())
    with torch.no_grad():
        before = model.reconstruction_loss(data.x, 0).item()
    pretrain(tmp_path, max_epochs=1, model=model)
    with torch.no_grad():
        assert model.reconstruction_loss(data.x, 0).item() < 0.5 * before


def test_a_classifier_reuses_the_pretrained_layers(tmp_path):
    model, trainer, _ = pretrain(tmp_path)
    path = tmp_path / "ae.ckpt"
    trainer.save_checkpoint(path)
    clf = Classifier(NET, input_shape=(1, 4, 4), num_classes=5, init_from={"checkpoint": str(path)})
    assert apply_init_from(clf) == ["backbone.0", "backbone.1", "backbone.2"]
    for key, value in model.state_dict().items():
        if key.startswith(("net.backbone.", "normalizer.")):
            assert torch.equal(clf.state_dict()[key], value), key
    assert not any(k.startswith("net.head.") for k in model.state_dict())  # an encoder has no output layer


def test_bad_epochs_per_layer():
    with pytest.raises(ValueError, match="epochs_per_layer=0"):
        LayerwiseAutoencoder(NET, epochs_per_layer=0)
