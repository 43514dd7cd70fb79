"""Every bad input gets a clear error before training: the key, the bad value, the valid choices;
the CLI prints one ``error:`` line and exits non-zero, never a traceback from deep inside."""

from __future__ import annotations

import copy
import random
import string
from argparse import ArgumentError
from pathlib import Path

import lightning as L
import pytest
import yaml
from reliability_helpers import make_images, tiny_config

from deeptrain.cli import USER_ERRORS, build_cli, main, user_message
from deeptrain.data.datamodule import ImageDataModule
from deeptrain.data.sources import SOURCES
from deeptrain.nn.activations import ACTIVATIONS
from deeptrain.nn.initializers import INITIALIZERS
from deeptrain.nn.mlp import DROPOUT_KINDS, DROPOUT_PLACEMENTS, NORMS, POSITIONS, MLPConfig
from deeptrain.nn.registry import normalize_name
from deeptrain.training.checkpoint_io import AtomicCheckpointIO, IncompatibleCheckpointError
from deeptrain.training.module import Classifier

# ---- the fuzzer ----------------------------------------------------------------------------------


def misspell(rng: random.Random, valid: list[str]) -> str:
    """A random valid name with one letter inserted, dropped or changed, that is not valid itself."""
    valid_keys = {normalize_name(v) for v in valid}
    while True:
        word, i = rng.choice(valid), rng.randrange(len(rng.choice(valid)) + 1)
        i = min(i, len(word))
        letter = rng.choice(string.ascii_lowercase)
        word = rng.choice([word[:i] + letter + word[i:], word[:i] + word[i + 1:], word[:i] + letter + word[i + 1:]])
        if word and normalize_name(word) not in valid_keys:
            return word


def name(*choices):
    return lambda rng: (misspell(rng, list(choices)), list(choices))


def out_of_range(*makers):
    return lambda rng: (rng.choice(makers)(rng), None)


# key -> rng -> (bad value, valid choices to be listed or None). Bad names, out-of-range
# numbers, wrong types, empty lists.
MUTATIONS = {
    "model.net.activation": name(*ACTIVATIONS.names()),
    "model.net.kernel_init": name(*INITIALIZERS.names()),
    "model.net.head_init": name(*INITIALIZERS.names()),
    "model.net.norm": name(*NORMS),
    "model.net.norm_position": name(*POSITIONS),
    "model.net.dropout_kind": name(*DROPOUT_KINDS),
    "model.net.dropout_placement": name(*DROPOUT_PLACEMENTS),
    "model.scheduler_interval": name("epoch", "step"),
    "data.dataset": name(*SOURCES.names()),
    "data.normalize": name("standardize", "scale", "none"),
    "nonfinite.action": name("stop", "skip"),
    "model.optimizer.class_path": lambda rng: ("torch.optim." + misspell(rng, ["SGD", "Adam", "NAdam", "RMSprop"]), None),
    "model.lr_scheduler.class_path": lambda rng: (
        "torch.optim.lr_scheduler." + misspell(rng, ["StepLR", "OneCycleLR", "ExponentialLR"]), None),
    "model.net.dropout": out_of_range(lambda r: round(r.uniform(1, 10), 3), lambda r: -round(r.uniform(0.01, 1), 3),
                                      lambda r: "half"),
    "model.net.widths": out_of_range(lambda r: [], lambda r: [16, 0], lambda r: [-r.randint(1, 99)],
                                     lambda r: ["wide"]),
    "model.net.depth": out_of_range(lambda r: 0, lambda r: -r.randint(1, 9)),  # with widths removed
    "model.net.max_norm": out_of_range(lambda r: -round(r.uniform(0.1, 5), 2), lambda r: 0),
    "model.net.bn_momentum": out_of_range(lambda r: round(r.uniform(1.1, 9), 2)),
    "model.l2": out_of_range(lambda r: -round(r.uniform(1e-4, 1), 4)),
    "model.label_smoothing": out_of_range(lambda r: round(r.uniform(1, 3), 2), lambda r: -0.5),
    "data.batch_size": out_of_range(lambda r: 0, lambda r: -r.randint(1, 64), lambda r: "big", lambda r: 2.5),
    "data.eval_batch_size": out_of_range(lambda r: 0, lambda r: -r.randint(1, 9)),
    "data.val_size": out_of_range(lambda r: -r.randint(1, 9)),
    "data.crop_padding": out_of_range(lambda r: -r.randint(1, 9)),
    "data.image_size": out_of_range(lambda r: 0, lambda r: -r.randint(1, 9)),
    "trainer.max_epochs": out_of_range(lambda r: "many", lambda r: [3]),
    "early_stopping.patience": out_of_range(lambda r: "soon"),
    "last_checkpoint.every_n_train_steps": out_of_range(lambda r: -r.randint(1, 99)),
    "nonfinite.max_skipped": out_of_range(lambda r: -r.randint(1, 9)),
}


def set_key(config: dict, key: str, value) -> None:
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    if key == "model.net.depth":
        config["model"]["net"].pop("widths")
    if key == "model.lr_scheduler.class_path":
        node.setdefault("init_args", {})


def mutations(seed: int, count: int):
    """``count`` seeded cases, a quarter with two mutations at once: (key, value, choices) lists."""
    rng = random.Random(seed)
    for _ in range(count):
        keys = rng.sample(sorted(MUTATIONS), 2 if rng.random() < 0.25 else 1)
        yield [(k, *MUTATIONS[k](rng)) for k in keys]


@pytest.fixture(scope="module")
def parser(tiny_images, tmp_path_factory):
    """One CLI parser for all cases: building it costs more than parsing a config."""
    tmp = tmp_path_factory.mktemp("fuzz")
    cli = build_cli(["--config", str(tiny_config(tmp, tiny_images)), "--trainer.logger", "false"], run=False)
    cli.parser.exit_on_error = False
    return cli.parser, yaml.safe_load((tmp / "tiny.yaml").read_text())


def config_error(parser, config: dict, path: Path) -> str:
    """Parse and instantiate ``config`` as the CLI does; the message the CLI would print."""
    path.write_text(yaml.safe_dump(config))
    try:
        parser.instantiate_classes(parser.parse_args(["--config", str(path)]))
    except ArgumentError as err:  # jsonargparse's parse errors (printed after the usage line)
        return str(err)
    except USER_ERRORS as err:  # what main prints as "error: <message>"
        return user_message(err)
    pytest.fail(f"no error for {path.read_text()}")


@pytest.mark.slow
def test_fuzzed_configs_all_fail_with_a_message_naming_the_key_or_value(parser, tmp_path):
    parse, base = parser
    for i, case in enumerate(mutations(seed=8, count=40)):
        config = copy.deepcopy(base)
        for key, value, _ in case:
            set_key(config, key, value)
        message = config_error(parse, config, tmp_path / f"case{i}.yaml")
        assert "Traceback" not in message
        named = [(k, v, c) for k, v, c in case if k.split(".")[-1] in message or str(v) in message]
        assert named, f"case {i} {case}: the message names neither key nor value:\n{message}"
        for key, value, choices in named:
            if choices and key != "model.lr_scheduler.class_path":
                assert any(c in message for c in choices), f"case {i} {key}={value!r}: no valid choice listed:\n{message}"


def test_fuzzer_covers_every_mutation():
    seen = {k for case in mutations(seed=8, count=40) for k, _, _ in case}
    assert len(seen) >= 0.8 * len(MUTATIONS), sorted(set(MUTATIONS) - seen)


# ---- end to end through main(): one "error:" line, exit code, no traceback --------------------


def cli_error(capsys, *args: str, code: int = 1) -> str:
    with pytest.raises(SystemExit) as stop:
        main(list(args))
    err = capsys.readouterr().err
    assert stop.value.code == code, err[-2000:]
    assert "Traceback" not in err
    return err


def test_unknown_activation_is_one_line(tiny_images, tmp_path, capsys):
    err = cli_error(capsys, "fit", "--config", str(tiny_config(tmp_path, tiny_images)), "--model.net.activation", "relux")
    (line,) = [l for l in err.splitlines() if l.startswith("error:")]
    assert "'relux'" in line and "leaky_relu" in line


def test_unknown_optimizer_class_path(tiny_images, tmp_path, capsys):
    err = cli_error(capsys, "fit", "--config", str(tiny_config(tmp_path, tiny_images)),
                    "--model.optimizer.class_path", "torch.optim.Nadamx", code=2)
    assert 'error: Parser key "model.optimizer"' in err and "Nadamx" in err


def test_val_size_larger_than_the_data_fails_before_training(tiny_images, tmp_path, capsys):
    err = cli_error(capsys, "fit", "--config", str(tiny_config(tmp_path, tiny_images)), "--data.val_size", "500")
    assert "error: invalid val_size=500: expected fewer than the 96 training examples" in err


def test_image_folder_without_class_folders(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = cli_error(capsys, "fit", "--config", str(tiny_config(tmp_path, tmp_path / "empty")))
    assert f"error: no class folders in {tmp_path / 'empty'}" in err


def test_unreadable_image_names_the_file(tmp_path, capsys):
    images = make_images(tmp_path / "images", n=24)
    bad = sorted((images / "train").rglob("*.png"))[-1]
    bad.write_bytes(b"not a png")
    err = cli_error(capsys, "fit", "--config", str(tiny_config(tmp_path, images)), "--data.val_size", "8")
    assert f"error: cannot decode image {bad}" in err


def test_truncated_idx_file_names_the_file(tmp_path, capsys):
    raw = Path(__file__).resolve().parents[3] / "shared" / "data" / "FashionMNIST" / "raw"
    if not (raw / "t10k-labels-idx1-ubyte").is_file():
        pytest.skip("no Fashion-MNIST")
    copy_raw = tmp_path / "FashionMNIST" / "raw"
    copy_raw.mkdir(parents=True)
    for f in raw.iterdir():
        (copy_raw / f.name).symlink_to(f)
    (copy_raw / "t10k-labels-idx1-ubyte").unlink()
    (copy_raw / "t10k-labels-idx1-ubyte").write_bytes((raw / "t10k-labels-idx1-ubyte").read_bytes()[:5000])
    config = tiny_config(tmp_path, tmp_path)
    err = cli_error(capsys, "fit", "--config", str(config), "--data.dataset", "fashion_mnist", "--data.data_dir",
                    str(tmp_path), "--data.val_size", "5000")
    assert f"error: {copy_raw / 't10k-labels-idx1-ubyte'} is truncated: 5000 bytes, expected 10008" in err


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_images, tmp_path_factory) -> Path:
    """A checkpoint of the tiny config (3 classes, widths 16-16) after one epoch."""
    tmp = tmp_path_factory.mktemp("ckpt")
    main(["fit", "--config", str(tiny_config(tmp, tiny_images, max_epochs=1)), "--trainer.logger", "false"])
    (path,) = tmp.glob("**/last.ckpt")
    return path


def test_checkpoint_for_other_classes_than_the_data_names_layers_shapes_and_options(tiny_checkpoint, tmp_path, capsys):
    """The CLI takes the model options from the checkpoint; the data's class count it cannot."""
    four_classes = make_images(tmp_path / "images", classes=4)
    err = cli_error(capsys, "validate", "--config", str(tiny_config(tmp_path, four_classes)),
                    "--ckpt_path", str(tiny_checkpoint))
    assert f"error: checkpoint {tiny_checkpoint} does not fit this model" in err
    assert "net.head.weight is (3, 16) in the checkpoint but (4, 16) in the model" in err
    assert "model.num_classes: 3 in the checkpoint, 4 here" in err


def test_checkpoint_of_another_architecture(tiny_checkpoint, tiny_images, tmp_path):
    model = Classifier(MLPConfig(widths=[8, 16], activation="rrelu"), input_shape=(1, 4, 4), num_classes=3)
    data = ImageDataModule("image_folder", data_dir=str(tiny_images), val_size=32, cache_dir=str(tmp_path))
    trainer = L.Trainer(logger=False, enable_progress_bar=False, plugins=[AtomicCheckpointIO()])
    with pytest.raises(IncompatibleCheckpointError) as err:
        trainer.validate(model, data, ckpt_path=tiny_checkpoint)
    message = str(err.value)
    assert "net.backbone.0.linear.weight is (16, 16) in the checkpoint but (8, 16) in the model" in message
    assert "model.net.widths: [16, 16] in the checkpoint, [8, 16] here" in message


def test_truncated_checkpoint_is_named(tiny_checkpoint, tiny_images, tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(tiny_checkpoint.read_bytes()[:2000])
    err = cli_error(capsys, "fit", "--config", str(tiny_config(tmp_path, tiny_images)), "--ckpt_path", str(bad))
    assert f"error: checkpoint {bad} cannot be read" in err and "truncated" in err


def test_debug_env_shows_the_traceback(tiny_images, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPTRAIN_DEBUG", "1")
    with pytest.raises(ValueError, match="unknown activation 'relux'"):
        main(["fit", "--config", str(tiny_config(tmp_path, tiny_images)), "--model.net.activation", "relux"])


def test_classifier_load_from_checkpoint_rebuilds_its_model(tiny_checkpoint):
    model = Classifier.load_from_checkpoint(tiny_checkpoint)
    assert model.net.hidden_linears()[0].weight.shape == (16, 16)
