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


class StopMidEpoch(compare.EpochRecorder):
    """The recorder, plus what SIGTERM does (Lightning's flag) at batch 2 of epoch 1, plus the
    global step each fit starts from."""

    starts: list[int] = []
    stop = True

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        StopMidEpoch.starts.append(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if StopMidEpoch.stop and trainer.current_epoch == 1 and batch_idx == 1:
            trainer._signal_connector.received_sigterm = True


@pytest.mark.slow
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


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(compare, "EpochRecorder", StopMidEpoch)
    StopMidEpoch.starts, StopMidEpoch.stop = [], False
    config = tiny_config(tmp_path, "plain")
    out = tmp_path / "report"
    compare.main([str(config), "--seeds", "1", "--out", str(out), "--", "--trainer.max_epochs=1"])
    run_dir = out / "runs" / "plain" / "seed0"
    (run_dir / compare.RESULT).unlink()  # as if killed (SIGKILL: no interrupt checkpoint) after epoch 0
    result = compare.main([str(config), "--seeds", "1", "--out", str(out)])[0]
    assert StopMidEpoch.starts == [0, 4]  # the second fit started from the epoch-0 last.ckpt (4 steps)
    assert [h["epoch"] for h in result["history"]] == [0, 1]  # epoch 0 was not trained again
    assert "mc_val_acc" not in result  # no dropout, no MC evaluation
    assert json.loads((run_dir / compare.HISTORY).read_text())[-1]["epoch"] == 1


def test_bad_arguments_fail_cleanly(tmp_path):
    with pytest.raises(SystemExit):
        compare.main([str(tmp_path / "missing.yaml"), "--out", str(tmp_path)])


@pytest.mark.slow
def test_a_sigterm_mid_epoch_resumes_from_the_interrupt_checkpoint(tmp_path, monkeypatch):
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(compare, "EpochRecorder", StopMidEpoch)
    StopMidEpoch.starts, StopMidEpoch.stop = [], True
    config = tiny_config(tmp_path, "plain")  # 2 epochs of 4 batches
    out = tmp_path / "report"
    with pytest.raises(SIGTERMException):
        compare.main([str(config), "--seeds", "1", "--out", str(out)])
    checkpoints = out / "runs" / "plain" / "seed0" / "checkpoints"
    assert (checkpoints / "last-interrupted.ckpt").is_file() and (checkpoints / "last.ckpt").is_file()
    StopMidEpoch.stop = False
    result = compare.main([str(config), "--seeds", "1", "--out", str(out)])[0]
    # step 6 (epoch 1, batch 2) from last-interrupted.ckpt, not step 4 from the epoch-0 last.ckpt
    assert StopMidEpoch.starts == [0, 6]
    assert [h["epoch"] for h in result["history"]] == [0, 1]
