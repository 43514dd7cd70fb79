"""End-to-end tests of the training entry point (``train.py`` / the ``deeptrain`` script)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deeptrain.cli import build_cli

ROOT = Path(__file__).resolve().parents[1]
# pretrain_autoencoder*.yaml configure `deeptrain autoencoder` (tests/training/test_transfer_configs.py)
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if not p.name.startswith("pretrain_autoencoder"))
DATA = Path(os.environ.get("DEEPTRAIN_DATA_DIR", ROOT.parent / "shared" / "data"))
CIFAR_JPEG = DATA / "cifar10-jpeg"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_config_parses_and_builds(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = build_cli(["--config", str(config), "--trainer.logger=false"], run=False)
    assert cli.model.net.num_classes == cli.datamodule.num_classes
    assert tuple(cli.model.net.input_shape) == tuple(cli.datamodule.input_shape)


@pytest.mark.slow
def test_print_config_round_trips(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / "configs/cifar10/baseline.yaml"), "--print_config"],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    ).stdout
    printed = yaml.safe_load(out)
    assert printed["model"]["net"]["depth"] == 20
    assert printed["model"]["optimizer"]["class_path"] == "torch.optim.NAdam"


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_JPEG.exists(), reason=f"no CIFAR-10 image folder at {CIFAR_JPEG}")
def test_fast_dev_run_cifar10_baseline_on_the_image_folder(tmp_path):
    cmd = [
        sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / "configs/cifar10/baseline.yaml"),
        "--data.dataset", "image_folder", "--data.data_dir", str(CIFAR_JPEG), "--trainer.fast_dev_run=true",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "`Trainer.fit` stopped: `max_steps=1` reached." in proc.stderr  # one training step ...
    assert "val_acc=" in proc.stdout  # ... and one validation batch, on the decoded folder


@pytest.mark.slow
def test_unknown_activation_is_a_clean_cli_error(tmp_path):
    cmd = [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / "configs/fashion_mnist/mlp.yaml"),
           "--model.net.activation", "relux", "--trainer.fast_dev_run=true"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert "relux" in proc.stderr and "leaky_relu" in proc.stderr


def test_the_cli_flushes_denormal_floats_to_zero(tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    torch.set_flush_denormal(False)
    try:
        tiny = torch.tensor([1e-30]) * torch.tensor([1e-10])  # 1e-40: a denormal float32
        assert tiny.item() != 0.0
        build_cli(["--config", str(ROOT / "configs/fashion_mnist/mlp.yaml"), "--trainer.logger=false"], run=False)
        assert (torch.tensor([1e-30]) * torch.tensor([1e-10])).item() == 0.0
    finally:
        torch.set_flush_denormal(False)
