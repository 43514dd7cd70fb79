import json
import os
from pathlib import Path

import pytest
import yaml

from deeptrain.tools import compare

DATA = Path(os.environ.get("DEEPTRAIN_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))
pytestmark = pytest.mark.skipif(not (DATA / "FashionMNIST").exists(), reason=f"no Fashion-MNIST under {DATA}")


def tiny_config(path: Path, name: str, dropout: float = 0.0) -> Path:
    config = {
        "trainer": {"max_epochs": 2, "limit_train_batches": 4, "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": "logs", "name": name}}},
        "model": {"net": {"widths": [16], "dropout": dropout}},
        "data": {"dataset": "fashion_mnist", "data_dir": str(DATA), "batch_size": 256, "val_size": 500},
    }
    file = path / f"{name}.yaml"
    file.write_text(yaml.safe_dump(config))
    return file


def test_compare_trains_reports_and_skips_finished_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(tmp_path, "dropout", dropout=0.3)
    out = tmp_path / "report"
    results = compare.main([str(config), "--seeds", "2", "--out", str(out)])
    assert [(r["config"], r["seed"]) for r in results] == [("dropout", 0), ("dropout", 1)]
    for r in results:
        assert r["epochs_run"] == 2 and len(r["history"]) == 2
        assert 0.0 <= r["val_acc"] <= 1.0 and 0.0 <= r["mc_val_acc"] <= 1.0 and "test_acc" in r
        assert r["history"][1]["wall_s"] > r["history"][0]["wall_s"]
    assert results[0]["history"] != results[1]["history"]  # the seed reached the run
    report = (out / "report.md").read_text()
    assert "| dropout | 2 |" in report
    assert f"{min(r['val_acc'] for r in results):.2%})" in report
    assert (out / "curves.png").stat().st_size > 10_000

    def fail(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(compare, "run_one", fail)
    again = compare.main([str(config), "--seeds", "2", "--out", str(out)])
    assert [r["val_acc"] for r in again] == [r["val_acc"] for r in results]


def test_an_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(tmp_path, "plain")
    out = tmp_path / "report"
    compare.main([str(config), "--seeds", "1", "--out", str(out), "--", "--trainer.max_epochs=1"])
    run_dir = out / "runs" / "plain" / "seed0"
    (run_dir / compare.RESULT).unlink()  # as if killed after epoch 0 was checkpointed
    result = compare.main([str(config), "--seeds", "1", "--out", str(out)])[0]
    assert [h["epoch"] for h in result["history"]] == [0, 1]  # epoch 0 was not trained again
    assert "mc_val_acc" not in result  # no dropout, no MC evaluation
    assert json.loads((run_dir / compare.HISTORY).read_text())[-1]["epoch"] == 1


def test_bad_arguments_fail_cleanly(tmp_path):
    with pytest.raises(SystemExit):
        compare.main([str(tmp_path / "missing.yaml"), "--out", str(tmp_path)])
