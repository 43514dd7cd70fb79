"""The configs of issue 4: augmentation turned on, MC-dropout evaluation on the alpha-dropout network,
the early stopping that restores the best weights."""

from pathlib import Path

import pytest

from deeptrain.callbacks.early_stopping import EarlyStopping
from deeptrain.callbacks.mc_dropout import MCDropoutEvaluation
from deeptrain.cli import build_cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("config, padding", [("fashion_mnist/augmented.yaml", 2), ("cifar10/augmented.yaml", 4)])
def test_augmented_configs_turn_on_flips_and_crops(config, padding, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = build_cli(["--config", str(CONFIGS / config), "--trainer.logger=false"], run=False)
    assert cli.datamodule.augment.hflip and cli.datamodule.augment.crop_padding == padding


def test_alpha_dropout_config_evaluates_mc_dropout_and_restores_best_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = build_cli(["--config", str(CONFIGS / "cifar10/alpha_dropout.yaml"), "--trainer.logger=false"], run=False)
    (mc,) = [c for c in cli.trainer.callbacks if isinstance(c, MCDropoutEvaluation)]
    assert (mc.every_n_epochs, mc.val_samples, mc.test_samples) == (5, 30, 100)
    (early_stopping,) = [c for c in cli.trainer.callbacks if isinstance(c, EarlyStopping)]
    assert early_stopping.restore_best_weights and early_stopping.monitor == "val_loss"
    assert early_stopping.patience == 6  # with performance scheduling (ReduceLROnPlateau)


def test_test_and_predict_default_to_the_newest_best_checkpoint(tmp_path):
    import os

    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from deeptrain.training.runs import resolve_best_checkpoint

    trainer = L.Trainer(logger=TensorBoardLogger(tmp_path, name="run"), callbacks=[ModelCheckpoint(monitor="val_loss")],
                        default_root_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no best.*--ckpt_path none to use freshly initialized weights"):
        resolve_best_checkpoint(trainer)
    for version, mtime in (("version_0", 2_000_000_000), ("version_1", 1_000_000_000)):
        folder = tmp_path / "run" / version / "checkpoints"
        folder.mkdir(parents=True)
        for name in ("best-epoch=003-val_loss=1.2.ckpt", "last.ckpt"):
            (folder / name).touch()
            os.utime(folder / name, (mtime, mtime))
    assert resolve_best_checkpoint(trainer) == str(tmp_path / "run/version_0/checkpoints/best-epoch=003-val_loss=1.2.ckpt")
