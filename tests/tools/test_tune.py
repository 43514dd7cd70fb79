"""`deeptrain tune`: Optuna TPE on Ray Tune over dotted config keys; best.yaml, trials table, resume."""

import csv
import math
from pathlib import Path

import pytest
import yaml
from study_helpers import kill_driver_when, needs_data, tiny_config

from deeptrain.tools.study import RESULT, fit_trial
from deeptrain.tools.tune import load_space, tune, write_best_config

LR = "model.optimizer.init_args.lr"


def lr_space(folder, low=1e-2, high=1e4):
    (folder / "space.yaml").write_text(yaml.safe_dump({LR: {"loguniform": [low, high]}}))
    return folder / "space.yaml"


def read_trials(out):
    with open(out / "trials.csv") as f:
        return list(csv.DictReader(f))


@needs_data
@pytest.mark.slow
def test_a_learning_rate_search_avoids_the_rates_that_diverge(tmp_path, local_ray, monkeypatch):
    from deeptrain.cli import build_cli

    monkeypatch.chdir(tmp_path)
    config = tiny_config(tmp_path, "sgd")
    out = tmp_path / "search"
    # seed 5: TPE's two random start-up trials draw lr 0.06 (trains) and 9244 (diverges) from this range
    best = tune(str(config), str(lr_space(tmp_path, 1e-3, 1e5)), str(out), num_samples=8, max_concurrent=2, asha=True,
                seed=5, overrides=["--data.train_size=2048"])
    trials = read_trials(out)
    assert len(trials) == 8 and {t["status"] for t in trials} <= {"ok", "stopped", "diverged"}
    assert "stopped" in {t["status"] for t in trials}  # ASHA stopped the trailing trials after epoch 1
    # rates above ~100 blow up within a few steps: such trials diverge or trail (ASHA stops them first)
    assert any(float(t[LR]) > 100 for t in trials) and all(t["status"] != "ok" for t in trials if float(t[LR]) > 100)
    assert all(float(t[LR]) > 1 and "non-finite training loss" in t["error"] for t in trials if t["status"] == "diverged")
    assert 1e-2 <= best["params"][LR] <= 3.0  # the search picked a rate in the range that trains
    finite = [float(t["val_acc"]) for t in trials if math.isfinite(float(t["val_acc"]))]
    assert best["val_acc"] == pytest.approx(max(finite))
    # best.yaml runs as is with `deeptrain fit --config` and holds the best trial's rate, not its folders
    cli = build_cli(["--config", best["config"], "--trainer.logger=false"], run=False)
    assert cli.config["model"]["optimizer"]["init_args"]["lr"] == pytest.approx(best["params"][LR])
    assert cli.config["data"]["train_size"] == 2048 and cli.config["checkpoint"]["dirpath"] is None
    assert (out / "history.png").stat().st_size > 10_000 and (out / "params.png").stat().st_size > 10_000
    assert (out / "trials.md").read_text().count("\n") == 10  # header, rule, 8 trials


@needs_data
def test_a_diverged_trial_reports_the_worst_metric_to_the_search(tmp_path, monkeypatch):
    import ray.tune

    monkeypatch.chdir(tmp_path)
    reports = []
    monkeypatch.setattr(ray.tune, "report", reports.append)
    run = {"config": str(tiny_config(tmp_path, "sgd")), "run_dir": str(tmp_path / "run"), "seed": 0,
           "overrides": [f"--{LR}=1e6"], "metric": "val_loss", "mode": "min", "extras": False}
    fit_trial({"run": run, "params": {"model.net.dropout": 0.0}})
    assert reports[-1]["status"] == "diverged" and reports[-1]["val_loss"] == math.inf  # min: the worst is +inf
    assert reports[-1]["epochs"] == len(reports) - 1  # one report per validated epoch before it, then this one


@needs_data
@pytest.mark.slow
def test_a_killed_driver_resumes_without_redoing_finished_trials(tmp_path, local_ray, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, space, out = tiny_config(tmp_path, "sgd", lr=0.1), lr_space(tmp_path, 1e-2, 1.0), tmp_path / "search"
    args = f"{str(config)!r}, {str(space)!r}, {str(out)!r}, num_samples=4, max_concurrent=1"
    done = kill_driver_when(f"from deeptrain.tools.tune import tune; tune({args})", f"{out}/trials/*/{RESULT}", 2)
    before = {path: (path.stat().st_mtime_ns, path.read_text()) for path in done}
    tune(str(config), str(space), str(out), num_samples=4, max_concurrent=1)
    trials = read_trials(out)
    assert len(trials) == 4 and all(t["status"] == "ok" for t in trials)
    assert {path: (path.stat().st_mtime_ns, path.read_text()) for path in done} == before  # not trained again
    assert {p.parent.name for p in done} <= {t["trial"] for t in trials}


@needs_data
@pytest.mark.slow
def test_start_from_config_trains_the_configs_own_values_first(tmp_path, local_ray, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, space, out = tiny_config(tmp_path, "sgd", lr=0.05), lr_space(tmp_path, 1e-3, 1.0), tmp_path / "search"
    tune(str(config), str(space), str(out), num_samples=2, max_concurrent=1, start_from_config=True)
    first, second = read_trials(out)  # in the order they started
    assert float(first[LR]) == 0.05 and float(second[LR]) != 0.05


@needs_data
def test_start_from_config_reads_the_values_after_the_overrides_and_checks_them_against_the_space(tmp_path, monkeypatch):
    from deeptrain.tools.tune import config_point

    monkeypatch.chdir(tmp_path)
    config = tiny_config(tmp_path, "sgd", lr=0.05)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({LR: {"loguniform": [1e-3, 1.0]},
                                                         "data.batch_size": {"choice": [128, 256]}}))
    space = load_space(str(tmp_path / "space.yaml"))
    assert config_point(str(config), space, ["--data.batch_size=128"]) == {LR: 0.05, "data.batch_size": 128}
    with pytest.raises(ValueError, match=r"data.batch_size is 64 in .*sgd.yaml, outside the space's choice \[128, 256\]"):
        config_point(str(config), space, ["--data.batch_size=64"])
    with pytest.raises(ValueError, match=r"init_args.lr is 0.05 in .*, outside the space's \[0.001, 0.01\]"):
        config_point(str(config), load_space(str(lr_space(tmp_path, 1e-3, 1e-2))), [])
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump({"model.net.no_such_key": {"uniform": [0, 1]}}))
    with pytest.raises(ValueError, match=r"sgd.yaml has no value for model.net.no_such_key"):
        config_point(str(config), load_space(str(tmp_path / "missing.yaml")), [])


def test_the_space_maps_dotted_keys_to_ray_distributions(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({LR: {"loguniform": [1e-4, 1e-1]}, "model.net.dropout": {"uniform": [0, 0.5]},
                                     "model.net.activation": {"choice": ["elu", "selu"]}, "model.net.depth": {"randint": [2, 4]}}))
    domains = load_space(str(space))
    assert (domains[LR].lower, domains[LR].upper) == (1e-4, 1e-1) and "LogUniform" in type(domains[LR].get_sampler()).__name__
    assert domains["model.net.activation"].categories == ["elu", "selu"]
    assert {domains["model.net.depth"].sample() for _ in range(200)} == {2, 3, 4}  # both ends included


@pytest.mark.parametrize("spec, message", [
    ({LR: {"normal": [0, 1]}}, "is not a distribution; use one of {loguniform|uniform|choice|randint"),
    ({LR: {"loguniform": [0, 1]}}, "loguniform needs low > 0"),
    ({LR: {"uniform": [1, 0]}}, r"needs \[low, high\] numbers with low < high"),
    ({LR: {"choice": []}}, "choice needs a non-empty list"),
])
def test_a_bad_space_fails_with_one_clear_error(tmp_path, spec, message):
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match=message):
        load_space(str(tmp_path / "space.yaml"))


def test_bad_arguments_fail_with_one_clear_error(tmp_path):
    space, config = lr_space(tmp_path), tmp_path / "c.yaml"
    config.write_text("trainer: {max_epochs: 1}\n")
    with pytest.raises(ValueError, match=r"metric must be one of \['val_acc', 'val_loss'\], got 'acc'"):
        tune(str(config), str(space), str(tmp_path), metric="acc")
    with pytest.raises(ValueError, match="mode must be one of"):
        tune(str(config), str(space), str(tmp_path), mode="up")


def test_best_config_gets_the_base_configs_logger_and_checkpoint_folders_back(tmp_path):
    run = tmp_path / "trial"
    (run / "tb" / "version_0").mkdir(parents=True)
    trial_logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": str(run)}}
    (run / "tb" / "version_0" / "config.yaml").write_text(yaml.safe_dump({
        "seed_everything": 3, "trainer": {"logger": trial_logger, "enable_progress_bar": False, "callbacks": None, "max_epochs": 7},
        "checkpoint": {"dirpath": str(run / "checkpoints"), "monitor": "val_loss"},
        "last_checkpoint": {"dirpath": str(run / "checkpoints")}, "model": {"net": {"dropout": 0.25}}}))
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"trainer": {"logger": {"init_args": {"name": "mine"}}}}))
    best = yaml.safe_load(write_best_config(run, base, tmp_path / "best.yaml").read_text())
    assert best == {"seed_everything": 3, "trainer": {"logger": {"init_args": {"name": "mine"}}, "max_epochs": 7},
                    "checkpoint": {"monitor": "val_loss"}, "last_checkpoint": {}, "model": {"net": {"dropout": 0.25}}}
