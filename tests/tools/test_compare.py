"""`deeptrain compare` on Ray Tune: configs x seeds as concurrent trials, the report, resume and failures."""

import json

import pytest
from study_helpers import kill_driver_when, needs_data, tiny_config

from deeptrain.tools import compare as compare_module
from deeptrain.tools.compare import compare, summarize
from deeptrain.tools.study import RESULT, train_trial

pytestmark = needs_data


@pytest.mark.slow
def test_two_configs_by_two_seeds_run_two_at_a_time_and_write_the_report(tmp_path, local_ray, monkeypatch):
    monkeypatch.chdir(tmp_path)
    configs = [tiny_config(tmp_path, "plain"), tiny_config(tmp_path, "dropout", dropout=0.3)]
    out = tmp_path / "study"
    results = compare([str(c) for c in configs], str(out), seeds=2, max_concurrent=2)
    assert [(r["config"], r["seed"], r["status"]) for r in results] == [
        ("plain", 0, "ok"), ("plain", 1, "ok"), ("dropout", 0, "ok"), ("dropout", 1, "ok")]
    for r in results:
        assert r["epochs_run"] == 2 and [h["epoch"] for h in r["history"]] == [0, 1]
        assert r["history"][1]["wall_s"] > r["history"][0]["wall_s"]
        assert (out / "runs" / r["config"] / f"seed{r['seed']}" / "tb" / "version_0").is_dir()  # TensorBoard root: OUT
    assert results[0]["history"] != results[1]["history"]  # the seed reached the run
    assert "mc_val_acc" in results[2] and "mc_val_acc" not in results[0]  # MC dropout only with dropout
    # two trials overlapped in time: each started before the other ended
    starts = sorted(float((out / "runs" / r["config"] / f"seed{r['seed']}" / "started").read_text()) for r in results)
    ends = sorted((out / "runs" / r["config"] / f"seed{r['seed']}" / RESULT).stat().st_mtime for r in results)
    assert starts[1] < ends[0], (starts, ends)
    report = (out / "report.md").read_text()
    assert report == summarize(results)
    plain = [r["val_acc"] for r in results[:2]]
    mean, std = sum(plain) / 2, abs(plain[0] - plain[1]) / 2 ** 0.5  # sample std of two values
    assert f"| plain | 2 | {mean:.2%} ± {std:.2%} ({min(plain):.2%}) |" in report
    assert (out / "curves.png").stat().st_size > 10_000

    monkeypatch.setattr(compare_module, "run_pending", lambda *a, **k: pytest.fail("a finished run was trained again"))
    again = compare([str(c) for c in configs], str(out), seeds=2)
    assert [r["val_acc"] for r in again] == [r["val_acc"] for r in results]


@pytest.mark.slow
def test_a_sigkilled_trial_is_retried_and_resumes_from_its_checkpoint(tmp_path, local_ray, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "killed"
    config = tiny_config(tmp_path, "killed", callbacks=[
        {"class_path": "study_helpers.KillOnce", "init_args": {"marker": str(marker), "at_step": 6}}])
    result = compare([str(config)], str(tmp_path / "study"), seeds=1, max_failures=1)[0]
    assert marker.exists() and result["status"] == "ok"
    # killed at step 6 (epoch 1, batch 2); the retry started from the epoch-0 last.ckpt (step 4), not from 0
    assert (tmp_path / "killed.starts").read_text().split() == ["0", "4"]
    assert [h["epoch"] for h in result["history"]] == [0, 1]


@pytest.mark.slow
def test_a_killed_driver_resumes_without_redoing_finished_runs(tmp_path, local_ray, monkeypatch):
    monkeypatch.chdir(tmp_path)
    configs = [str(tiny_config(tmp_path, name, max_epochs=1)) for name in ("a", "b", "c")]
    out = tmp_path / "study"
    done = kill_driver_when(f"from deeptrain.tools.compare import compare; compare({configs!r}, {str(out)!r}, seeds=1, "
                            "max_concurrent=1)", f"{out}/runs/*/seed0/{RESULT}", 1)
    before = {path: (path.stat().st_mtime_ns, path.read_text()) for path in done}
    results = compare(configs, str(out), seeds=1)
    assert [r["status"] for r in results] == ["ok", "ok", "ok"]
    assert {path: (path.stat().st_mtime_ns, path.read_text()) for path in done} == before  # not trained again


@pytest.mark.slow
def test_a_failing_config_is_reported_and_the_others_finish(tmp_path, local_ray, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = tiny_config(tmp_path, "good", max_epochs=1)
    bad = tiny_config(tmp_path, "bad", max_epochs=1)
    bad.write_text(bad.read_text().replace("dropout: 0.0", "dropout: 1.5"))
    results = compare([str(good), str(bad)], str(tmp_path / "study"), seeds=1, max_failures=2)
    assert [r["status"] for r in results] == ["ok", "failed"]
    assert "dropout" in results[1]["error"] and "1.5" in results[1]["error"]
    report = (tmp_path / "study" / "report.md").read_text()
    assert "| good | 1 |" in report and "| bad | 0 | failed |" in report


def test_bad_arguments_fail_with_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="missing.yaml"):
        compare([str(tmp_path / "missing.yaml")], str(tmp_path))
    config = tiny_config(tmp_path, "a")
    with pytest.raises(ValueError, match="seeds must be an int >= 1, got 0"):
        compare([str(config)], str(tmp_path), seeds=0)
    with pytest.raises(ValueError, match="cpus_per_trial must be > 0"):
        compare([str(config)], str(tmp_path), cpus_per_trial=0)


def test_the_report_gives_mean_std_and_min_over_seeds():
    runs = [{"config": "a", "seed": s, "val_acc": acc, "val_loss": 1.0, "best_epoch": 1, "epochs_run": 2,
             "sec_per_epoch": 1.0, "wall_to_best_s": 2.0} for s, acc in enumerate([0.5, 0.7, 0.6])]
    assert "| a | 3 | 60.00% ± 10.00% (50.00%) | 1.000 ± 0.000 (1.000) | – | – | 1.0 | 2.0 | 1.0 | 2 s |" in summarize(runs)


@pytest.mark.parametrize("override, status, message", [
    ("--model.nosuch=1", "failed", "unrecognized arguments: --model.nosuch=1"),
    ("--model.optimizer.init_args.lr=1e6", "diverged", "non-finite training loss"),
])
def test_a_bad_key_fails_and_a_diverging_loss_is_reported_without_retry(tmp_path, monkeypatch, override, status, message):
    monkeypatch.chdir(tmp_path)
    run = {"config": str(tiny_config(tmp_path, "run")), "run_dir": str(tmp_path / "run"), "overrides": [override], "seed": 0}
    result = train_trial(run)  # returns (Ray would retry an exception): the error is the config's, not the process's
    assert result["status"] == status and message in result["error"] and "\n" not in result["error"], result["error"]
    assert json.loads((tmp_path / "run" / RESULT).read_text())["status"] == status
