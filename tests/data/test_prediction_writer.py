"""``PredictionWriter``: what ``deeptrain predict`` keeps, on an image folder, with MC dropout."""

import csv

import lightning as L
import pytest
import torch

from deeptrain.callbacks.prediction_writer import PredictionWriter
from deeptrain.data.datamodule import ImageDataModule
from deeptrain.nn.mlp import MLPConfig
from deeptrain.training.module import Classifier


@pytest.mark.parametrize("mc_samples", [0, 8])
def test_one_row_per_test_image_with_its_file_label_and_probabilities(image_folder, tmp_path, mc_samples):
    data = ImageDataModule("image_folder", data_dir=str(image_folder), val_size=2, eval_batch_size=3,
                           cache_dir=str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = Classifier(MLPConfig(widths=[16], dropout=0.5), input_shape=data.input_shape,
                       num_classes=data.num_classes, mc_samples=mc_samples)
    writer = PredictionWriter(str(tmp_path / "p.csv"))
    trainer = L.Trainer(logger=False, callbacks=[writer], enable_progress_bar=False, enable_checkpointing=False)
    outputs = trainer.predict(model, datamodule=data)

    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    test = data.split("test")
    assert [r["file"] for r in rows] == test.files and len(rows) == 4  # batches of 3: two batches, in order
    assert all(r["file"].startswith(f"test/{('a', 'b')[int(r['label'])]}/") for r in rows)
    assert [int(r["label"]) for r in rows] == test.labels.tolist()
    probs = torch.tensor([[float(r["p_a"]), float(r["p_b"])] for r in rows])
    expected = torch.cat([o["probs"] if mc_samples else o for o in outputs])
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs.sum(1), torch.ones(4), atol=1e-5, rtol=0)
    assert [int(r["predicted"]) for r in rows] == probs.argmax(1).tolist()
    assert ("std_a" in rows[0]) == bool(mc_samples)
    if mc_samples:  # dropout on at prediction time: the samples disagree
        std = torch.tensor([[float(r["std_a"]), float(r["std_b"])] for r in rows])
        torch.testing.assert_close(std, torch.cat([o["std"] for o in outputs]), atol=1e-5, rtol=1e-5)
        assert (std.amax(1) > 1e-3).any()
