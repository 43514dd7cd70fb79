"""The transfer configs build with their commands, and "B on A" runs from YAML without touching A's file."""

import hashlib
import os
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from deeptrain.cli import build_cli
from deeptrain.data.datamodule import ImageDataModule
from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.autoencoder import LayerwiseAutoencoder
from deeptrain.training.module import Classifier

ROOT = Path(__file__).resolve().parents[2]
TRANSFER = ROOT / "configs" / "transfer"
DATA = Path(os.environ.get("DEEPTRAIN_DATA_DIR") or ROOT.parent / "shared" / "data")
CLASSES = {"task_a": 8, "task_b": 2, "task_b_on_a": 2, "task_b_on_a_frozen": 2, "few_labels": 10,
           "few_labels_on_autoencoder": 10, "few_labels_on_rotation": 10, "pretrain_rotation": 4}


def test_transfer_configs_define_their_tasks():
    # (tests/test_cli.py builds every config through the CLI; this checks what each one means)
    for name, num_classes in CLASSES.items():
        config = yaml.safe_load((TRANSFER / f"{name}.yaml").read_text())
        assert ImageDataModule(**config["data"]).num_classes == num_classes, name
        assert ("init_from" in config["model"]) == ("_on_" in name), name
        callbacks = config["trainer"].get("callbacks", [])
        assert any(c["class_path"].endswith("FreezeUnfreeze") for c in callbacks) == ("_on_" in name), name
    task_b = yaml.safe_load((TRANSFER / "task_b.yaml").read_text())["data"]
    assert task_b["classes"] == [5, 6] and task_b["train_size"] == 200  # shirt (6) last: the positive class 1


@pytest.mark.skipif(not (DATA / "FashionMNIST" / "raw").is_dir(), reason=f"no Fashion-MNIST in {DATA}")
def test_the_autoencoder_config_runs_with_its_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = build_cli(["autoencoder", "--config", str(TRANSFER / "pretrain_autoencoder.yaml"), "--trainer.logger=false",
                       "--trainer.fast_dev_run=true", "--trainer.enable_progress_bar=false"]).result
    assert isinstance(model, LayerwiseAutoencoder) and model.depth == 5
    assert tuple(model.hparams.input_shape) == (1, 28, 28)  # linked from the data
    assert model.trainer.global_step == 1 and not any(tmp_path.iterdir())  # fast_dev_run: one step, no files


@pytest.mark.skipif(not (DATA / "FashionMNIST" / "raw").is_dir(), reason=f"no Fashion-MNIST in {DATA}")
def test_b_on_a_from_yaml_keeps_the_frozen_layers_and_the_source_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEEPTRAIN_DATA_DIR", str(DATA))
    net = MLPConfig(widths=[300, 100, 50, 50, 50], activation="selu", kernel_init="lecun_normal")
    a = Classifier(net, input_shape=(1, 28, 28), num_classes=8)
    a.normalizer.set_stats(torch.full((1, 28, 28), 70.0), torch.full((1, 28, 28), 90.0))
    source = tmp_path / "a.ckpt"
    torch.save({"state_dict": a.state_dict(), "hyper_parameters": {"net": net.to_dict()}}, source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = build_cli(["fit", "--config", str(TRANSFER / "task_b_on_a.yaml"), f"--model.init_from.checkpoint={source}",
                         "--trainer.logger=false", "--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
                         "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
                         f"--checkpoint.dirpath={tmp_path / 'ckpt'}"])
    b = cli.model
    assert len(cli.datamodule.split("train")) == 200 and b.net.head.out_features == 2
    for key, value in a.state_dict().items():
        if key.startswith(("net.backbone.", "normalizer.")):
            assert torch.equal(b.state_dict()[key], value), key  # epoch 0 < unfreeze_at_epoch 4: frozen
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest
