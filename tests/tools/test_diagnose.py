"""The physics behind the diagnosis plot, at depth 50 on standardized inputs, over several seeds.

Thresholds come from measurements (20 seeds of standard-normal inputs, 5 seeds of real
CIFAR-10 images, batch 256), with margin:
- SELU + LeCun normal: every layer's activation std in [0.90, 1.05] -> asserted in [0.7, 1.3];
- sigmoid + N(0, 1): mean fraction saturated over the top 25 layers 0.535-0.583 -> > 0.5;
  sigmoid + Glorot: 0.000 -> < 0.01;
- first-layer / last-hidden-layer gradient norm: sigmoid + Glorot 0 (float32 underflow: the
  gradient vanished) up to 1e-20 -> < 1e-6; ReLU + He 0.54-10.9 -> within [1/20, 20].
"""

import statistics

import pytest
import torch

from deeptrain.cli import main as cli_main
from deeptrain.tools.diagnose import PRESETS, preset_configs, profile, synthetic_batch

SEEDS = (0, 1, 2)
CONFIGS = preset_configs(PRESETS["depth50"])


def run(name, seed):
    x, y, n = synthetic_batch((3, 32, 32), 10, 256, seed)
    return profile(name, CONFIGS[name], x, y, n, seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_selu_with_lecun_normal_keeps_every_layer_normalized(seed):
    p = run("SELU + LeCun normal", seed)
    assert len(p.act_std) == 50
    assert all(0.7 <= s <= 1.3 for s in p.act_std), p.act_std


@pytest.mark.parametrize("seed", SEEDS)
def test_sigmoid_with_standard_normal_weights_saturates_the_top_layers(seed):
    saturated = statistics.mean(run("sigmoid + N(0, 1)", seed).saturated[25:])
    glorot = statistics.mean(run("sigmoid + Glorot", seed).saturated[25:])
    assert saturated > 0.5 and glorot < 0.01, (saturated, glorot)


@pytest.mark.parametrize("seed", SEEDS)
def test_gradients_vanish_towards_the_input_with_sigmoid_and_glorot_but_not_with_relu_and_he(seed):
    sigmoid, relu = run("sigmoid + Glorot", seed).grad_norm, run("ReLU + He", seed).grad_norm
    assert sigmoid[0] < 1e-6 * sigmoid[-1], (sigmoid[0], sigmoid[-1])
    assert 1 / 20 <= relu[0] / relu[-1] <= 20, (relu[0], relu[-1])


def test_profile_leaves_the_global_rng_alone_and_repeats_itself():
    x, y, n = synthetic_batch((1, 4, 4), 3, 8, 0)
    state = torch.get_rng_state()
    a = profile("a", CONFIGS["ELU + He + BN"], x, y, n, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert profile("b", CONFIGS["ELU + He + BN"], x, y, n, seed=3).grad_norm == a.grad_norm


def test_the_command_writes_a_png_and_a_tensorboard_image(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "d.png"
    cli_main(["diagnose", "--synthetic", "true", "--depth", "5", "--batch_size", "32", "--out", str(out),
              "--tensorboard", str(tmp_path / "tb")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert all(name in printed for name in CONFIGS)
    events = EventAccumulator(str(tmp_path / "tb" / "depth50")).Reload()
    assert events.Tags()["images"] == ["diagnose/depth50"]


def test_a_yaml_of_networks_replaces_the_preset(tmp_path, capsys):
    spec = tmp_path / "mine.yaml"
    spec.write_text("depth: 4\nwidth: 16\nconfigs:\n  tiny selu: {activation: selu, kernel_init: lecun_normal}\n")
    from deeptrain.tools.diagnose import diagnose

    (p,) = diagnose(nets=str(spec), synthetic=True, batch_size=16, out=str(tmp_path / "m.png"), tensorboard=None)
    assert p.name == "tiny selu" and len(p.grad_norm) == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text("depth: 4\n")
    with pytest.raises(ValueError, match="configs"):
        diagnose(nets=str(bad), synthetic=True)


@pytest.mark.parametrize("option", ["--depth", "--width", "--batch_size"])
def test_a_size_below_one_is_a_one_line_error(option, capsys):
    with pytest.raises(SystemExit) as exit:
        cli_main(["diagnose", "--synthetic", "true", option, "0"])
    assert exit.value.code == 1
    assert capsys.readouterr().err.strip() == f"error: diagnose: {option[2:]} must be >= 1, got 0"
