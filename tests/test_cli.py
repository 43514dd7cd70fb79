"""End-to-end tests of the training entry point (``train.py`` / the ``deeptrain`` script)."""

import csv
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from deeptrain.cli import build_cli

ROOT = Path(__file__).resolve().parents[1]
# pretrain_autoencoder*.yaml configure `deeptrain autoencoder` (tests/training/test_transfer_configs.py)
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml")
                 if not p.name.startswith("pretrain_autoencoder") and p.parent.name != "search")
DATA = Path(os.environ.get("DEEPTRAIN_DATA_DIR", ROOT.parent / "shared" / "data"))
CIFAR_JPEG = DATA / "cifar10-jpeg"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_config_parses_and_builds(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = build_cli(["--config", str(config), "--trainer.logger=false"], run=False)
    assert cli.model.net.num_classes == cli.datamodule.num_classes
    assert tuple(cli.model.net.input_shape) == tuple(cli.datamodule.input_shape)


@pytest.mark.slow
def test_print_config_round_trips(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / "configs/cifar10/baseline.yaml"), "--print_config"],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    ).stdout
    printed = yaml.safe_load(out)
    assert printed["model"]["net"]["depth"] == 20
    assert printed["model"]["optimizer"]["class_path"] == "torch.optim.NAdam"


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_JPEG.exists(), reason=f"no CIFAR-10 image folder at {CIFAR_JPEG}")
def test_fast_dev_run_cifar10_baseline_on_the_image_folder(tmp_path):
    cmd = [
        sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / "configs/cifar10/baseline.yaml"),
        "--data.dataset", "image_folder", "--data.data_dir", str(CIFAR_JPEG), "--trainer.fast_dev_run=true",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "`Trainer.fit` stopped: `max_steps=1` reached." in proc.stderr  # one training step ...
    assert "val_acc=" in proc.stdout  # ... and one validation batch, on the decoded folder


@pytest.mark.slow
def test_unknown_activation_is_a_clean_cli_error(tmp_path):
    cmd = [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / "configs/fashion_mnist/mlp.yaml"),
           "--model.net.activation", "relux", "--trainer.fast_dev_run=true"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert "relux" in proc.stderr and "leaky_relu" in proc.stderr


def test_the_cli_flushes_denormal_floats_to_zero(tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    torch.set_flush_denormal(False)
    try:
        tiny = torch.tensor([1e-30]) * torch.tensor([1e-10])  # 1e-40: a denormal float32
        assert tiny.item() != 0.0
        build_cli(["--config", str(ROOT / "configs/fashion_mnist/mlp.yaml"), "--trainer.logger=false"], run=False)
        assert (torch.tensor([1e-30]) * torch.tensor([1e-10])).item() == 0.0
    finally:
        torch.set_flush_denormal(False)


# ---- one command line ---------------------------------------------------------------------------
from deeptrain import cli as cli_module  # noqa: E402
from deeptrain.cli import COMMANDS, LIGHTNING_COMMANDS, main  # noqa: E402

EVERY_COMMAND = [*LIGHTNING_COMMANDS, *COMMANDS]
FASHION = DATA / "FashionMNIST" / "raw"
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason=f"no Fashion-MNIST in {FASHION}")


def help_of(args, capsys) -> str:
    with pytest.raises(SystemExit) as exit:
        main([*args, "--help"])
    assert exit.value.code == 0
    return capsys.readouterr().out


def test_the_top_level_help_lists_every_command_with_its_line(capsys):
    out = " ".join(help_of([], capsys).split())
    listed = out.split("Available subcommands:")[1]
    for name in EVERY_COMMAND:
        line = LIGHTNING_COMMANDS.get(name) or cli_module.description(cli_module.command_function(name))
        assert f"{name} {' '.join(line.split())[:40]}" in listed, name


@pytest.mark.parametrize("command", EVERY_COMMAND)
def test_each_command_has_its_own_help(command, capsys):
    out = help_of([command], capsys)
    assert out.startswith(f"usage: deeptrain [options] {command} ")
    takes_a_config = command in LIGHTNING_COMMANDS or cli_module.is_model_command(cli_module.command_function(command))
    assert ("--data.batch_size BATCH_SIZE" in out) == takes_a_config
    assert ("--trainer.max_epochs MAX_EPOCHS" in out) == takes_a_config
    if command in COMMANDS:  # its own options, from its signature, with the docstring's help
        function = cli_module.command_function(command)
        positional = cli_module.positional_lists(function) if not takes_a_config else []
        own = [p for p in inspect.signature(function).parameters if p not in cli_module.MODEL_ARGS | set(positional)]
        assert all(f"--{p} " in out for p in own), own
        assert all(f"{p} [{p} ...]" in out for p in positional), positional


def test_no_module_parses_by_hand_or_edits_sys_argv():
    sources = {p: p.read_text() for p in (ROOT / "deeptrain").rglob("*.py")}
    assert not [p for p, text in sources.items() if "import argparse" in text and "SUPPRESS" not in text]
    assert not [p for p, text in sources.items() if re.search(r"sys\.argv\s*(\[.*\])?\s*=(?!=)", text)]


def test_widths_and_depth_together_are_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"net.widths \[300, 100\] and net.depth 10 .* set net.widths null"):
        build_cli(["--config", str(ROOT / "configs/fashion_mnist/mlp.yaml"), "--model.net.depth", "10",
                   "--trainer.logger=false"], run=False)
    cli = build_cli(["--config", str(ROOT / "configs/fashion_mnist/mlp.yaml"), "--model.net.depth", "10",
                     "--model.net.widths", "null", "--trainer.logger=false"], run=False)
    assert len(cli.model.net.backbone) == 10


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 1-epoch fit of a small Fashion-MNIST MLP through the CLI, in its own working directory."""
    if not FASHION.is_dir():
        pytest.skip(f"no Fashion-MNIST in {FASHION}")
    root = tmp_path_factory.mktemp("run")
    config = root / "tiny.yaml"
    config.write_text(
        "trainer:\n  max_epochs: 1\n  enable_progress_bar: false\n  enable_model_summary: false\n"
        f"  logger: {{class_path: lightning.pytorch.loggers.TensorBoardLogger, init_args: {{save_dir: {root / 'logs'}, "
        "name: tiny, default_hp_metric: false}}\n"
        "model:\n  net: {widths: [32]}\n"
        f"data: {{dataset: fashion_mnist, data_dir: {DATA}, train_size: 2000, val_size: 500, batch_size: 100}}\n")
    main(["fit", "--config", str(config)])
    return config, root


def test_predict_writes_one_row_per_input_and_agrees_with_test(trained_run, capsys):
    config, root = trained_run
    (metrics,) = main(["test", "--config", str(config)])
    main(["predict", "--config", str(config)])
    path = root / "logs" / "tiny" / "version_0" / "predictions.csv"
    assert f"wrote {path}" in capsys.readouterr().out
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 10_000  # the test split
    probs = np.array([[float(r[k]) for k in r if k.startswith("p_")] for r in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    predicted = np.array([int(r["predicted"]) for r in rows])
    assert (predicted == probs.argmax(axis=1)).all()
    accuracy = (predicted == np.array([int(r["label"]) for r in rows])).mean()
    assert accuracy == pytest.approx(metrics["test_acc"], abs=1e-6) and accuracy > 0.5
    assert rows[0]["predicted_name"] == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                         "Sneaker", "Bag", "Ankle boot"][int(rows[0]["predicted"])]
    # evaluation logs into the run it evaluates: no new, empty version_N
    assert sorted(p.name for p in (root / "logs" / "tiny").iterdir()) == ["version_0"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(root / "logs" / "tiny" / "version_0")).Reload().Tags()["scalars"]
    assert "test_acc" in tags and "val_acc" in tags


def test_an_explicit_flag_the_checkpoint_would_replace_is_an_error(trained_run):
    config, root = trained_run
    (best,) = (root / "logs" / "tiny" / "version_0" / "checkpoints").glob("best*.ckpt")
    with pytest.raises(ValueError, match=r"--model.net.widths \[64\] conflicts with the checkpoint's "
                                         r"model.net.widths = \[32\]"):
        build_cli(["test", "--config", str(config), "--ckpt_path", str(best), "--model.net.widths", "[64]"])


def test_evaluating_without_a_checkpoint_is_an_error_unless_asked_for(tmp_path, capsys):
    config = tmp_path / "fresh.yaml"
    config.write_text(
        "trainer: {enable_progress_bar: false, limit_test_batches: 1, logger: {class_path: "
        f"lightning.pytorch.loggers.TensorBoardLogger, init_args: {{save_dir: {tmp_path / 'logs'}, name: fresh}}}}}}\n"
        f"data: {{dataset: fashion_mnist, data_dir: {DATA}, val_size: 500}}\n")
    with pytest.raises(SystemExit) as exit:
        main(["test", "--config", str(config)])
    err = capsys.readouterr().err
    assert exit.value.code == 1 and "no best*.ckpt" in err and "--ckpt_path none" in err and err.count("\n") == 1
    if FASHION.is_dir():
        (metrics,) = main(["test", "--config", str(config), "--ckpt_path", "none"])
        assert 0 <= metrics["test_acc"] <= 0.3  # random weights, on purpose


@needs_fashion
def test_fast_dev_run_leaves_the_working_directory_empty_and_prints_no_noise(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "fit", "--config",
                           str(ROOT / "configs/fashion_mnist/mlp.yaml"), f"--data.data_dir={DATA}",
                           "--trainer.fast_dev_run=true", "--trainer.enable_progress_bar=false"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []
    for noise in ("litlogger", "LeafSpec", "weights_only", "deprecated"):
        assert noise not in proc.stdout + proc.stderr, noise


def test_predict_in_bfloat16_agrees_with_float32(trained_run):
    """The predict-time precision option is Lightning's ``--trainer.precision``: bf16-true casts the
    weights and the normalization (uint8 pixels stay exact), and the CSV holds float32 numbers."""
    config, root = trained_run
    tables = {}
    for precision in ("32-true", "bf16-true"):
        path = root / f"p{precision}.csv"
        main(["predict", "--config", str(config), "--trainer.precision", precision, "--predictions.path", str(path)])
        rows = list(csv.DictReader(path.open()))
        tables[precision] = np.array([[float(r[k]) for k in r if k.startswith("p_")] for r in rows])
    full, half = tables["32-true"], tables["bf16-true"]
    assert (full.argmax(1) == half.argmax(1)).mean() > 0.99
    assert 0 < np.abs(full - half).max() < 0.05  # really computed in bfloat16, and close


@pytest.mark.parametrize("command, args, expected", [
    ("compare", ["a.yaml", "b.yaml", "--out", "o", "--seeds", "2", "--overrides", "[--trainer.max_epochs=1]"],
     {"configs": ["a.yaml", "b.yaml"], "out": "o", "seeds": 2, "overrides": ["--trainer.max_epochs=1"]}),
    ("tune", ["--config", "c.yaml", "--space", "s.yaml", "--out", "o", "--asha", "true"],
     {"config": "c.yaml", "space": "s.yaml", "out": "o", "asha": True}),
])
def test_study_commands_take_their_options_from_the_command_line(command, args, expected, monkeypatch):
    import functools
    import importlib

    module = importlib.import_module(f"deeptrain.tools.{command}")
    original = getattr(module, command)
    received = {}

    @functools.wraps(original)
    def record(**kwargs):
        received.update(kwargs)

    monkeypatch.setattr(module, command, record)
    main([command, *args])
    assert {k: received[k] for k in expected} == expected


def test_the_installed_script_exits_0_without_printing_the_result(tmp_path):
    """A console script hands its function's return value to sys.exit: a command's result must not
    become a printed object and exit code 1."""
    script = Path(sys.executable).parent / "deeptrain"
    if not script.exists():
        pytest.skip(f"no installed deeptrain script beside {sys.executable}")
    proc = subprocess.run([str(script), "schedules", "--steps", "20", "--out", str(tmp_path / "s.png")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr[-2000:]
    assert proc.stdout.strip().endswith(f"wrote {tmp_path / 's.png'}")


def test_prune_takes_the_newest_best_checkpoint_of_the_configs_runs(trained_run):
    config, root = trained_run
    out = root / "pruned.ckpt"
    report = main(["prune", "--config", str(config), "--amount", "0.5", "--out", str(out)])
    assert report["global"].sparsity == pytest.approx(0.5, abs=1e-3) and out.is_file()
    assert sorted(p.name for p in (root / "logs" / "tiny").iterdir()) == ["version_0"]  # no run of its own
