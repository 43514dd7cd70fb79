"""Reusing layers: init_from copies the backbone from a checkpoint and never touches that file."""

import hashlib
import shutil
import warnings

import lightning as L
import pytest
import torch

from deeptrain.callbacks.finetuning import FreezeUnfreeze
from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.module import Classifier
from deeptrain.training.transfer import InitFrom, apply_init_from
from tiny_data import TinyData

NET = dict(depth=3, width=8, norm="batch", input_norm=True)  # BN everywhere: running stats are reused too


def tiny_task(num_classes=3, seed=0):
    """64 images, labels from the first pixel in ``num_classes`` bins."""
    return TinyData(n=64, num_classes=num_classes, batch_size=16, seed=seed)


def trainer(tmp_path, **kw):
    defaults = dict(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    return L.Trainer(**{**defaults, **kw})


def fit(model, data, tmp_path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few batches, no workers
        trainer(tmp_path, **kw).fit(model, datamodule=data)
    return model


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Model A: trained one epoch on a 3-class task, saved as a Lightning checkpoint."""
    tmp = tmp_path_factory.mktemp("a")
    model = Classifier(MLPConfig(**NET), input_shape=(1, 4, 4), num_classes=3)
    t = trainer(tmp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t.fit(model, datamodule=tiny_task(3))
    path = tmp / "a.ckpt"
    t.save_checkpoint(path)
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def model_b(path, num_classes=2, net=NET, **init):
    return Classifier(MLPConfig(**net), input_shape=(1, 4, 4), num_classes=num_classes,
                      init_from={"checkpoint": str(path), **init})


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reused_weights_equal_the_source_and_the_head_is_new(source):
    path, a = source
    b = model_b(path)
    assert b.reused_layers == ["input_norm", "backbone.0", "backbone.1", "backbone.2"]
    assert apply_init_from(b) == b.reused_layers and b.hparams.init_from["applied"]
    state = b.state_dict()
    reused = [k for k in a if k.startswith(("net.input_norm.", "net.backbone.", "normalizer."))]
    # input BN: weight, bias, 2 running stats, count; a block: linear.weight (no bias before BN) + BN;
    # normalizer: mean, std, fitted
    assert len(reused) == 5 + 3 * (1 + 5) + 3
    for key in reused:
        assert torch.equal(state[key], a[key]), key
    assert state["net.head.weight"].shape == (2, 8) and a["net.head.weight"].shape == (3, 8)
    state["net.backbone.0.linear.weight"].add_(1)  # a copy: changing B leaves A's tensors alone
    assert not torch.equal(state["net.backbone.0.linear.weight"], a["net.backbone.0.linear.weight"])
    assert apply_init_from(b) == []  # once only


def test_first_k_layers(source):
    path, a = source
    b = model_b(path, layers=1, normalizer=False)
    apply_init_from(b)
    state = b.state_dict()
    assert b.reused_layers == ["input_norm", "backbone.0"]
    assert torch.equal(state["net.backbone.0.linear.weight"], a["net.backbone.0.linear.weight"])
    assert not torch.equal(state["net.backbone.1.linear.weight"], a["net.backbone.1.linear.weight"])
    assert not torch.equal(state["normalizer.mean"], a["normalizer.mean"]) and not bool(b.normalizer.fitted)


def test_fit_copies_at_setup_uses_the_source_statistics_and_leaves_the_file_unchanged(source, tmp_path):
    path, a = source
    before = sha256(path)
    b = model_b(path)
    data = tiny_task(2, seed=1)
    recorded = {}

    class Probe(L.Callback):  # what the model holds when training starts, before any step
        def on_train_start(self, trainer, pl_module):
            recorded.update({k: v.clone() for k, v in pl_module.state_dict().items()})

    fit(b, data, tmp_path, max_epochs=3, callbacks=[Probe(), FreezeUnfreeze(unfreeze_at_epoch=1)])
    assert torch.equal(recorded["net.backbone.2.linear.weight"], a["net.backbone.2.linear.weight"])
    assert torch.equal(recorded["normalizer.mean"], a["normalizer.mean"])  # A's statistics, not B's data's
    assert not torch.equal(b.net.backbone[2].linear.weight, a["net.backbone.2.linear.weight"])  # fine-tuned
    assert sha256(path) == before
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["net.backbone.2.linear.weight"],
                       a["net.backbone.2.linear.weight"])


def test_a_saved_model_b_loads_without_the_source(source, tmp_path):
    path, _ = source
    copy = tmp_path / "a_copy.ckpt"
    shutil.copy(path, copy)
    b = model_b(copy)
    t = trainer(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t.fit(b, datamodule=tiny_task(2, seed=1))
    t.save_checkpoint(tmp_path / "b.ckpt")
    copy.unlink()  # A is gone: B's checkpoint holds the reused layers already
    loaded = Classifier.load_from_checkpoint(tmp_path / "b.ckpt")
    assert loaded.hparams.init_from["applied"] and apply_init_from(loaded) == []
    assert loaded.reused_layers == b.reused_layers
    assert torch.equal(loaded.net.backbone[0].linear.weight, b.net.backbone[0].linear.weight)


def test_shape_mismatch_names_the_layer_and_both_shapes(source):
    path, _ = source
    b = model_b(path, net={**NET, "width": 6})
    with pytest.raises(ValueError, match=r"layer net\.input_norm|layer net\.backbone\.0") as err:
        apply_init_from(b)
    assert "(8, 16)" in str(err.value) and "(6, 16)" in str(err.value) and "backbone.0.linear.weight" in str(err.value)
    assert not b.hparams.init_from["applied"]


def test_missing_layers_and_options_fail_clearly(source, tmp_path):
    path, _ = source
    with pytest.raises(ValueError, match=r"cannot reuse layer net\.backbone\.3: checkpoint .* has no such layer \(3 hidden"):
        apply_init_from(model_b(path, net={**NET, "depth": 4}))
    with pytest.raises(ValueError, match=r"init_from\.layers=5: this network has 3 hidden blocks"):
        model_b(path, layers=5)
    with pytest.raises(ValueError, match=r"init_from\.layers='top'"):
        InitFrom(str(path), layers="top")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        apply_init_from(model_b(tmp_path / "nope.ckpt"))
    with pytest.raises(ValueError, match="parameters differ"):  # A has BN in its blocks, this one does not
        apply_init_from(model_b(path, net={**NET, "norm": "none"}))
