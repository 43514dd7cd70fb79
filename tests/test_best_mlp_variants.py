"""The variants of configs/cifar10/best_mlp.yaml that experiments/best_mlp_runs.py trains: each is a
config the CLI accepts, and it changes what its name says (and nothing when it is `full`)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def load_runs_module():
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        spec = importlib.util.spec_from_file_location("best_mlp_runs", ROOT / "experiments" / "best_mlp_runs.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "experiments"))


RUNS = load_runs_module()


@pytest.mark.parametrize("variant", list(RUNS.VARIANTS))
def test_a_variant_is_a_config_the_cli_takes(variant, tmp_path, monkeypatch):
    from deeptrain.cli import build_cli

    monkeypatch.chdir(tmp_path)
    path = tmp_path / f"{variant}.yaml"
    path.write_text(yaml.safe_dump(RUNS.variant_config(RUNS.VARIANTS[variant][1]), sort_keys=False))
    model = build_cli(["--config", str(path), "--trainer.logger=false"], run=False).model
    base = build_cli(["--config", str(ROOT / "configs/cifar10/best_mlp.yaml"), "--trainer.logger=false"], run=False).model
    net, full = model.hparams.net, base.hparams.net
    expected = {
        "full": lambda: net == full,
        "no_batchnorm": lambda: net["norm"] == "none" and not net["input_norm"] and full["norm"] == "batch",
        "no_dropout": lambda: net["dropout"] == 0 < full["dropout"],
        "no_label_smoothing": lambda: model.hparams.label_smoothing == 0 < base.hparams.label_smoothing,
        "no_onecycle": lambda: model.lr_scheduler is None and base.lr_scheduler is not None,
        "exercise_shape": lambda: sum(isinstance(m, torch.nn.Linear) for m in model.net.modules()) == 21,
        "wide": lambda: list(net["widths"]) == [4096, 2048, 1024],
        "deep": lambda: len(net["widths"]) == len(full["widths"]) + 1,
    }
    if variant in expected:
        assert expected[variant](), variant
    else:  # data and optimizer variants: compare the resolved configs
        assert RUNS.variant_config(RUNS.VARIANTS[variant][1]) != RUNS.variant_config({})


def test_the_ablation_sets_each_variant_against_the_full_recipes_seeds_at_its_budget(tmp_path):
    def run(best, epochs):
        return {"best": best, "epochs": epochs}

    summary = {"full-s0-e60": run(0.60, 60), "full-s1-e60": run(0.62, 60), "no_dropout-s0-e60": run(0.65, 60),
               "no_dropout-s1-e60": run(0.63, 60), "no_batchnorm-s0-e60": run(0.50, 41),  # stopped at epoch 41
               "full-s0-e120": run(0.70, 120), "wide-s0-e120": run(0.71, 120)}  # one full seed at 120: no baseline
    rows = {r["variant"]: r for r in RUNS.ablation(summary)}
    assert set(rows) == {"full", "no_dropout"}
    assert rows["no_dropout"]["delta"] == pytest.approx(0.03)  # mean(0.65, 0.63) - mean(0.60, 0.62)
    assert rows["no_dropout"]["in_full_stds"] == pytest.approx(0.03 / 0.0141421, rel=1e-4)
    assert rows["no_dropout"]["seeds"] == 2 and rows["full"]["delta"] == 0
    lines = RUNS.ablation_lines(list(rows.values()))
    assert "| no_dropout | dropout | 60 | 2 | 64.00% ± 1.41 | +3.00 | +2.1 |" in lines
    RUNS.plot_ablation(list(rows.values()), tmp_path / "ablation.png")
    assert (tmp_path / "ablation.png").stat().st_size > 0
