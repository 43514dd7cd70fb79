"""A real fit: 2 epochs on a 2,000-image slice of Fashion-MNIST."""

import os
from pathlib import Path

import lightning as L
import pytest
import torch

from deeptrain import Classifier, ImageDataModule, MLPConfig

DATA = Path(os.environ.get("DEEPTRAIN_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "FashionMNIST").exists(), reason=f"no Fashion-MNIST under {DATA}")
def test_two_epochs_on_2000_images_learn(tmp_path):
    L.seed_everything(0)
    data = ImageDataModule("fashion_mnist", data_dir=str(DATA), train_size=2000, val_size=2000, batch_size=32)
    model = Classifier(MLPConfig(widths=[300, 100], activation="elu", kernel_init="he_normal"),
                       input_shape=data.input_shape, num_classes=data.num_classes,
                       optimizer=lambda params: torch.optim.NAdam(params, lr=1e-3))
    trainer = L.Trainer(max_epochs=2, default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[])
    data.setup("fit")
    assert len(data.split("train")) == 2000
    before = trainer.validate(model, datamodule=data, verbose=False)[0]
    trainer.fit(model, datamodule=data)
    after = trainer.validate(model, datamodule=data, verbose=False)[0]
    assert after["val_loss"] < 0.5 * before["val_loss"]
    assert after["val_acc"] > 0.70
