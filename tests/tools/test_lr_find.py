"""The LR range test: an exponential sweep, readings from the curve, and the model left untouched."""

import math

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from deeptrain.cli import main as cli_main
from deeptrain.nn.mlp import MLPConfig
from deeptrain.tools.lr_find import debias, find_lr, turning_point
from deeptrain.training.module import Classifier
from deeptrain.data.loader import InMemoryLoader
from tiny_data import TinyData


def trainer(tmp_path, max_epochs=10):
    return L.Trainer(default_root_dir=tmp_path, max_epochs=max_epochs, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


@pytest.mark.parametrize("lr", [None, 0.123])
def test_the_sweep_leaves_weights_optimizer_and_lr_as_they_were(tmp_path, lr):
    torch.manual_seed(0)
    model = Classifier(MLPConfig(depth=2, width=16), input_shape=(1, 4, 4), num_classes=3, lr=lr)
    data = TinyData(batch_size=16)
    model.normalizer.set_stats(*data.input_stats())  # what setup would do: then nothing else may change
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = find_lr(trainer(tmp_path), model, data, min_lr=1e-5, max_lr=10, num_training=40)
    assert model.lr == lr
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    # an exponential sweep from min_lr to max_lr: x (10 / 1e-5)^(1/40) per step (Lightning's
    # _ExponentialLR skips the first factor: lr_1 = 1e-5 * 1e6^(2/40))
    lrs = np.array(result.lrs)
    assert lrs[0] == pytest.approx(1e-5)
    assert lrs[2:] / lrs[1:-1] == pytest.approx(1e6 ** (1 / 40), rel=1e-6)
    assert result.turning_lr == turning_point(result.lrs, result.losses, skip_begin=10)
    assert result.chapter_lr == pytest.approx(result.turning_lr / 10)
    assert min(result.lrs) <= result.suggestion <= result.turning_lr
    assert not list(tmp_path.glob(".lr_find*.ckpt"))  # its restore checkpoint is removed


def test_turning_point_is_the_lowest_finite_loss():
    assert turning_point([1, 2, 3, 4], [3.0, 1.0, float("nan"), 2.0]) == 2
    assert turning_point([1, 2, 3, 4], [3.0, 1.0, float("nan"), 2.0], skip_begin=2) == 4
    assert turning_point([1, 2], [float("inf"), float("nan")]) is None


class ConstantLoss(L.LightningModule):
    """Loss 1.0 on every step: a correctly bias-corrected moving average of it is 1.0 throughout."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.lr = 1e-3

    def training_step(self, batch, batch_idx):
        return (self.w * 0).sum() + 1.0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def test_lightning_smoothing_is_pinned_and_debiased(tmp_path):
    """Lightning's smoothed losses start low (x 0.505); ``debias`` must give back 1.0 exactly. If
    Lightning changes its formula, this test fails and ``debias`` must follow."""
    from lightning.pytorch.tuner import Tuner

    loader = InMemoryLoader(torch.zeros(64, 1), torch.zeros(64), 4)
    finder = Tuner(trainer(tmp_path, 5)).lr_find(ConstantLoss(), train_dataloaders=loader, num_training=20,
                                                 update_attr=False)
    raw = finder.results["loss"]
    assert raw[0] == pytest.approx(0.02 / (1 - 0.98**2))
    assert debias(raw) == pytest.approx([1.0] * len(raw), rel=1e-9)


def write_image_folder(root, per_class=40, size=8):
    """Three classes of random images, class k brighter in channel k: learnable in a few steps."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(["a", "b", "c"]):
        (root / "train" / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 128, (size, size, 3), dtype=np.uint8)
            image[..., k] += 120
            Image.fromarray(image).save(root / "train" / name / f"{i}.png")


def test_the_command_builds_from_a_fit_config_and_writes_the_plot(tmp_path, monkeypatch, capsys):
    write_image_folder(tmp_path / "images")
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "trainer: {max_epochs: 20, enable_progress_bar: false, logger: {class_path: "
        "lightning.pytorch.loggers.TensorBoardLogger, init_args: {save_dir: logs}}}\n"  # a sweep logs nothing anyway
        "model:\n  net: {depth: 2, width: 16, activation: elu}\n"
        f"data: {{dataset: image_folder, data_dir: {tmp_path / 'images'}, val_size: 20, batch_size: 10,"
        f" cache_dir: {tmp_path / 'cache'}}}\n"
    )
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "lr.png"
    cli_main(["lr_find", "--config", str(config), "--num_training", "30", "--out", str(out), "--model.net.width", "8"])
    printed = capsys.readouterr().out
    assert "suggested lr" in printed and "chapter's rule" in printed
    chapter = float(printed.split("chapter's rule (10x below the turning point):")[1].split()[0])
    turning = float(printed.split("loss turns up at lr:")[1].split()[0])
    assert 1e-5 < chapter < 10 and math.isclose(chapter, turning / 10, rel_tol=0.01)
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "logs").exists() and not (tmp_path / "config.yaml").exists()  # a sweep leaves no run behind


@pytest.mark.parametrize("options, message", [
    (["--min_lr", "1", "--max_lr", "1e-3"], "need 0 < min_lr < max_lr, got min_lr=1, max_lr=0.001"),
    (["--num_training", "2"], "num_training must be >= 3 steps, got 2"),
    (["--early_stop_threshold", "0.5"], "early_stop_threshold must be > 1"),
])
def test_nonsense_sweeps_are_one_line_errors(options, message, tmp_path, monkeypatch, capsys):
    write_image_folder(tmp_path / "images")
    config = tmp_path / "tiny.yaml"
    config.write_text(f"data: {{dataset: image_folder, data_dir: {tmp_path / 'images'}, val_size: 20,"
                      f" cache_dir: {tmp_path / 'cache'}}}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        cli_main(["lr_find", "--config", str(config), *options])
    assert exit.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: lr_find: {message}") and err.count("\n") == 1
