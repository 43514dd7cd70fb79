"""The chapter's practical guidelines as presets (configs/presets/*.yaml): each one works on any
dataset (it pins none), alone or combined with the 1cycle overlay."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
import yaml
from PIL import Image

from deeptrain.cli import build_cli
from deeptrain.nn.normalization import KerasBatchNorm1d

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "configs" / "presets"
STANDALONE = sorted(p for p in PRESETS.glob("*.yaml") if p.name != "onecycle.yaml")
DATA = Path(os.environ.get("DEEPTRAIN_DATA_DIR", ROOT.parent / "shared" / "data"))
HAS_FASHION = (DATA / "FashionMNIST").exists()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """A 3-class folder of 10x12 RGB noise images: a shape no preset could have been written for."""
    root = tmp_path_factory.mktemp("img")
    g = np.random.default_rng(0)
    for name in ("cat", "dog", "owl"):
        (root / "train" / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(g.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(root / "train" / name / f"{i}.png")
    return root


def build(configs, data_args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [a for c in configs for a in ("--config", str(c))]
    return build_cli([*args, "--trainer.logger=false", *data_args], run=False)


def test_the_guideline_presets_exist_and_pin_no_dataset():
    names = {p.stem for p in PRESETS.glob("*.yaml")}
    assert {"default", "self_normalizing", "sparse", "low_latency", "risk_sensitive", "onecycle"} <= names
    for path in PRESETS.glob("*.yaml"):
        data = yaml.safe_load(path.read_text()).get("data") or {}
        assert not {"dataset", "data_dir", "val_size"} & set(data), f"{path.name} pins a dataset: {data}"


@pytest.mark.parametrize("preset", STANDALONE, ids=lambda p: p.stem)
def test_preset_builds_on_a_generated_image_folder(preset, image_folder, tmp_path, monkeypatch):
    cli = build([preset], ["--data.dataset", "image_folder", "--data.data_dir", str(image_folder),
                           "--data.val_size", "6"], tmp_path, monkeypatch)
    assert cli.datamodule.num_classes == 3 and tuple(cli.model.net.input_shape) == (3, 10, 12)
    cli.datamodule.setup("fit")
    x, _ = next(iter(cli.datamodule.train_dataloader()))
    assert cli.model(x).shape == (len(x), 3)


@pytest.mark.skipif(not HAS_FASHION, reason=f"no Fashion-MNIST under {DATA}")
@pytest.mark.parametrize("preset", STANDALONE, ids=lambda p: p.stem)
def test_preset_builds_on_fashion_mnist(preset, tmp_path, monkeypatch):
    cli = build([preset], ["--data.dataset", "fashion_mnist"], tmp_path, monkeypatch)
    assert cli.model.net.num_classes == 10 and tuple(cli.model.net.input_shape) == (1, 28, 28)


def test_guidelines_are_what_the_presets_set(image_folder, tmp_path, monkeypatch):
    data = ["--data.dataset", "image_folder", "--data.data_dir", str(image_folder), "--data.val_size", "6"]
    snn = build([PRESETS / "self_normalizing.yaml"], data, tmp_path, monkeypatch)
    assert snn.model.hparams.net["activation"] == "selu" and snn.model.hparams.net["kernel_init"] == "lecun_normal"
    assert any(isinstance(m, torch.nn.AlphaDropout) for m in snn.model.net.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in snn.model.net.modules())
    assert snn.datamodule.normalize == "standardize"
    default = build([PRESETS / "default.yaml"], data, tmp_path, monkeypatch)
    assert default.model.hparams.net["activation"] == "elu" and default.model.hparams.net["kernel_init"] == "he_normal"
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in default.model.net.backbone.modules())
    assert build([PRESETS / "sparse.yaml"], data, tmp_path, monkeypatch).model.hparams.l1 == 1e-5
    risky = build([PRESETS / "risk_sensitive.yaml"], data, tmp_path, monkeypatch)
    assert risky.model.hparams.mc_samples == 100
    assert any(type(c).__name__ == "MCDropoutEvaluation" for c in risky.trainer.callbacks)
    fast = build([PRESETS / "low_latency.yaml"], data, tmp_path, monkeypatch)
    assert fast.model.hparams.net["activation"] == "leaky_relu" and fast.model.hparams.net["depth"] <= 3


def test_onecycle_overlay_combines_with_a_preset(image_folder, tmp_path, monkeypatch):
    cli = build([PRESETS / "default.yaml", PRESETS / "onecycle.yaml"],
                ["--data.dataset", "image_folder", "--data.data_dir", str(image_folder), "--data.val_size", "6",
                 "--data.batch_size", "8", "--trainer.max_epochs", "2", "--trainer.enable_progress_bar=false",
                 "--trainer.enable_model_summary=false"], tmp_path, monkeypatch)
    assert cli.model.hparams.net["norm"] == "batch"  # kept from default.yaml
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    scheduler = cli.trainer.lr_scheduler_configs[0]
    assert isinstance(scheduler.scheduler, torch.optim.lr_scheduler.OneCycleLR) and scheduler.interval == "step"
    assert scheduler.scheduler.total_steps == 2 * 4  # 30 images / batch 8 = 4 steps per epoch


# ---- the Keras preset: one place that turns Keras semantics on (docs/keras.md)
def folder_args(image_folder):
    return ["--data.dataset", "image_folder", "--data.data_dir", str(image_folder), "--data.val_size", "6"]


def test_keras_preset_on_exercise_8c_keeps_its_values_and_switches_semantics(image_folder, tmp_path, monkeypatch):
    cli = build([ROOT / "configs/cifar10/batchnorm.yaml", PRESETS / "keras.yaml"], folder_args(image_folder), tmp_path,
                monkeypatch)
    bns = [m for m in cli.model.net.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(bns) == 21  # the input BN and one per hidden layer
    assert all(type(bn) is KerasBatchNorm1d and (bn.momentum, bn.eps) == (0.01, 1e-3) for bn in bns)
    opt = cli.model.optimizer(cli.model.parameters())
    assert isinstance(opt, torch.optim.NAdam)
    assert (opt.defaults["lr"], opt.defaults["eps"], opt.defaults["momentum_decay"]) == (5e-4, 1e-7, 1.0)  # lr kept


def test_keras_preset_gives_keras_leaky_relu_slope(image_folder, tmp_path, monkeypatch):
    torch_mode = build([PRESETS / "low_latency.yaml"], folder_args(image_folder), tmp_path, monkeypatch)
    keras_mode = build([PRESETS / "low_latency.yaml", PRESETS / "keras.yaml"], folder_args(image_folder), tmp_path,
                       monkeypatch)
    slope = lambda cli: {m.negative_slope for m in cli.model.net.modules() if isinstance(m, nn.LeakyReLU)}
    assert slope(torch_mode) == {0.01} and slope(keras_mode) == {0.2}
