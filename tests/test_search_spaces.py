"""Every search space under configs/search/ names its config, and each key is one that config takes."""

import re
from pathlib import Path

import pytest

from deeptrain.tools.study import param_args
from deeptrain.tools.tune import load_space

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted((ROOT / "configs" / "search").glob("*.yaml"))


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
    import importlib.util

    spec = importlib.util.spec_from_file_location("cifar10_search", ROOT / "experiments" / "cifar10_search.py")
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    onecycle = driver.search_command(ROOT / "configs/search/cifar10_onecycle.yaml")
    assert onecycle == {"num_samples": 8, "asha": False, "grace_period": 1, "epochs": []}
    batchnorm = driver.search_command(ROOT / "configs/search/cifar10_batchnorm.yaml")
    assert batchnorm == {"num_samples": 10, "asha": True, "grace_period": 2, "epochs": ["--trainer.max_epochs=12"]}
