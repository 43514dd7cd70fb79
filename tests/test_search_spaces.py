"""Every search space under configs/search/ names its config, and each key is one that config takes."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from deeptrain.tools.study import param_args
from deeptrain.tools.tune import load_space

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted((ROOT / "configs" / "search").glob("*.yaml"))


def load_experiment(name: str):
    """A script of experiments/ as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_of(space: Path) -> Path:
    """The config named by the space's own command line (``--config configs/...yaml``)."""
    match = re.search(r"--config (configs/\S+\.yaml)", space.read_text())
    assert match, f"{space.name} names no --config in its comments"
    return ROOT / match.group(1)


def dig(config: dict, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


@pytest.mark.parametrize("space", SPACES, ids=lambda p: p.stem)
def test_a_sampled_point_of_the_space_lands_in_its_config(space, tmp_path, monkeypatch):
    from deeptrain.cli import build_cli

    monkeypatch.chdir(tmp_path)
    domains = load_space(str(space))
    params = {key: domain.sample() for key, domain in domains.items()}
    cli = build_cli(["--config", str(config_of(space)), *param_args(params), "--trainer.logger=false"], run=False)
    for key, value in params.items():
        assert dig(cli.config, key) == pytest.approx(value), key


def test_every_exercise_config_of_cifar10_has_a_search_space():
    searched = {config_of(space).stem for space in SPACES if "cifar10" in space.name}
    assert searched >= {"batchnorm", "selu", "alpha_dropout", "onecycle", "best"}


def test_the_search_driver_reads_each_cifar10_space_budget_from_its_command():
    driver = load_experiment("cifar10_search")
    onecycle = driver.search_command(ROOT / "configs/search/cifar10_onecycle.yaml")
    assert onecycle == {"num_samples": 8, "asha": False, "grace_period": 1, "epochs": [], "start_from_config": False}
    batchnorm = driver.search_command(ROOT / "configs/search/cifar10_batchnorm.yaml")
    assert batchnorm == {"num_samples": 10, "asha": True, "grace_period": 2, "epochs": ["--trainer.max_epochs=12"],
                         "start_from_config": False}
    full = driver.search_command(ROOT / "configs/search/cifar10_batchnorm_full.yaml")
    assert full == {"num_samples": 6, "asha": False, "grace_period": 1, "epochs": [], "start_from_config": True}


@pytest.mark.parametrize("space", [s for s in SPACES if "--start_from_config true" in s.read_text()], ids=lambda p: p.stem)
def test_a_space_that_starts_from_its_config_holds_the_configs_own_values(space, tmp_path, monkeypatch):
    from deeptrain.tools.tune import config_point

    monkeypatch.chdir(tmp_path)
    domains = load_space(str(space))
    assert list(config_point(str(config_of(space)), domains, [])) == list(domains)  # raises for a value outside the space


def test_the_search_report_gives_a_winners_longer_budget_a_row_of_its_own(tmp_path, monkeypatch):
    report = load_experiment("search_report")
    best = tmp_path / "best"
    (best / "search").mkdir(parents=True)
    (best / "search" / "trials.csv").write_text("trial,status,val_acc\na,ok,0.56\nb,stopped,0.50\n")
    (best / "winner.json").write_text(json.dumps({"model.label_smoothing": 0.09}))
    for folder, accs in {"seeds": [0.590, 0.594], "seeds60": [0.600, 0.596]}.items():
        for seed, acc in enumerate(accs):
            run = best / folder / "runs" / "best" / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "result.json").write_text(json.dumps({"status": "ok", "val_acc": acc}))
    out = tmp_path / "search.md"
    monkeypatch.setattr(sys, "argv", ["search_report.py", "--studies", str(tmp_path), "--out", str(out)])
    report.main()
    rows = [line for line in out.read_text().splitlines() if line.startswith("| best")]
    assert len(rows) == 2
    assert rows[0].startswith("| best | ") and "2: 59.20% ± 0.28 (59.00%)" in rows[0] and rows[0].endswith("| no |")
    assert rows[1].startswith("| best, 60 epochs | ") and "2: 59.80% ± 0.28 (59.60%)" in rows[1] and rows[1].endswith("| yes |")


def fake_study(root: Path, name: str, seeds: list[float]) -> None:
    """A search folder of experiments/cifar10_search.py: two trials, a winner, and its seeds' results."""
    (root / name / "search").mkdir(parents=True)
    (root / name / "search" / "trials.csv").write_text("trial,status,val_acc\na,ok,0.55\nb,stopped,0.50\n")
    (root / name / "winner.json").write_text(json.dumps({"data.batch_size": 32}))
    for seed, acc in enumerate(seeds):
        run = root / name / "seeds" / "runs" / name / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps({"status": "ok", "val_acc": acc}))


def test_a_full_budget_search_gets_its_row_and_answers_the_exercise_question(tmp_path, monkeypatch):
    report = load_experiment("search_report")
    fake_study(tmp_path, "batchnorm", [0.541, 0.540])
    fake_study(tmp_path, "batchnorm_full", [0.556, 0.558])
    out = tmp_path / "search.md"
    monkeypatch.setattr(sys, "argv", ["search_report.py", "--studies", str(tmp_path), "--out", str(out)])
    report.main()
    lines = out.read_text().splitlines()
    rows = [line for line in lines if line.startswith("| batchnorm")]
    assert rows[0].startswith("| batchnorm | ") and rows[0].endswith("| no |")
    assert rows[1].startswith("| batchnorm, full-budget search | ") and "2: 55.70% ± 0.14 (55.60%)" in rows[1]
    assert rows[1].endswith("| yes |")
    question = next(line for line in lines if "batch norm's gain" in line)
    assert "55.70% ± 0.14 (55.60%)" in question  # the full-budget seeds, not the short search's
