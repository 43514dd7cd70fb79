"""The CLI's cheaper stand-in for Lightning's default profiler: swapped in only for the default."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.profilers import PassThroughProfiler, SimpleProfiler

from deeptrain.cli import build_cli
from deeptrain.training.profiler import NoProfiler

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "fashion_mnist" / "mlp.yaml"


@pytest.mark.parametrize("args, profiler", [([], NoProfiler), (["--trainer.profiler", "simple"], SimpleProfiler)])
def test_the_cli_replaces_only_lightnings_default_profiler(tmp_path, monkeypatch, args, profiler):
    monkeypatch.chdir(tmp_path)
    trainer = build_cli(["--config", str(CONFIG), "--trainer.logger=false", *args], run=False).trainer
    assert type(trainer.profiler) is profiler


def test_no_profiler_profiles_nothing_with_one_reusable_context():
    profiler = NoProfiler()
    assert isinstance(profiler, PassThroughProfiler)  # what Lightning treats as "no profiler"
    with profiler.profile("a") as value:
        pass
    assert value is None and profiler.profile("b") is profiler.profile("c")
    assert profiler.summary() == ""
