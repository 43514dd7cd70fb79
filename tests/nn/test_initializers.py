"""Initializers: statistics against their formulas, truncation, seeding, errors.

Every registered name must appear in STATS or EXACT, so a new initializer
cannot go untested.
"""

import math

import pytest
import torch
from torch import nn

from deeptrain.nn.initializers import (
    DISTRIBUTIONS,
    INITIALIZERS,
    MODES,
    TRUNCATED_NORMAL_STD as T,
    fans,
    get_initializer,
    init_linear_,
)

N = 2000  # weights are (N, N): fan_in = fan_out = fan_avg = N

# name -> (kwargs, expected mean, expected variance)
STATS = {
    "variance_scaling": ({}, 0.0, 1 / N),
    "glorot_uniform": ({}, 0.0, 1 / N),
    "glorot_normal": ({}, 0.0, 1 / N),
    "he_uniform": ({}, 0.0, 2 / N),
    "he_normal": ({}, 0.0, 2 / N),
    "lecun_uniform": ({}, 0.0, 1 / N),
    "lecun_normal": ({}, 0.0, 1 / N),
    "random_normal": ({}, 0.0, 0.05**2),
    "random_uniform": ({}, 0.0, 0.1**2 / 12),
    "truncated_normal": ({}, 0.0, (0.05 * T) ** 2),  # Keras: cut at 2 stddev, not rescaled
    "orthogonal": ({}, 0.0, 1 / N),
    "xavier_uniform": ({}, 0.0, 1 / N),
    "xavier_normal": ({"gain": 2.0}, 0.0, 4 / N),
    "kaiming_uniform": ({}, 0.0, 2 / N),  # gain^2 = 2 / (1 + a^2), a = 0
    "kaiming_normal": ({"a": 1.0, "mode": "fan_out"}, 0.0, 1 / N),
    "uniform": ({"a": -1.0, "b": 3.0}, 1.0, 16 / 12),
    "normal": ({"mean": 0.5, "std": 0.1}, 0.5, 0.01),
    "trunc_normal": ({}, 0.0, T**2),
    "sparse": ({"sparsity": 0.25, "std": 0.01}, 0.0, 0.75 * 0.01**2),
    "torch_default": ({}, 0.0, 1 / (3 * N)),
}
EXACT = {"zeros", "ones", "constant", "identity", "eye"}
# Keras truncated normals: name -> pre-truncation std, cut at 2 of it
KERAS_TRUNCATED = {
    "he_normal": math.sqrt(2 / N) / T,
    "glorot_normal": math.sqrt(1 / N) / T,
    "lecun_normal": math.sqrt(1 / N) / T,
    "variance_scaling": math.sqrt(1 / N) / T,
    "truncated_normal": 0.05,
}
UNIFORM_LIMITS = {
    "he_uniform": math.sqrt(6 / N),
    "glorot_uniform": math.sqrt(3 / N),
    "lecun_uniform": math.sqrt(3 / N),
    "random_uniform": 0.05,
    "xavier_uniform": math.sqrt(3 / N),
    "kaiming_uniform": math.sqrt(6 / N),
    "torch_default": 1 / math.sqrt(N),
}


def draw(name, shape=(N, N), seed=0, **kwargs):
    return get_initializer(name, **kwargs)(torch.empty(shape), torch.Generator().manual_seed(seed))


def test_every_initializer_is_covered():
    assert set(STATS) | EXACT == set(INITIALIZERS.names())


@pytest.mark.parametrize("name", sorted(STATS))
def test_mean_and_variance_match_formula(name):
    kwargs, mean, var = STATS[name]
    w = draw(name, **kwargs).double()
    assert w.var().item() == pytest.approx(var, rel=0.02)
    assert abs(w.mean().item() - mean) < 5 * math.sqrt(var / w.numel())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_variance_scaling_modes_and_distributions(mode, distribution):
    w = draw("variance_scaling", (1000, 3000), scale=3.0, mode=mode, distribution=distribution)
    n = {"fan_in": 3000, "fan_out": 1000, "fan_avg": 2000}[mode]  # weight is (out, in)
    assert w.double().var().item() == pytest.approx(3.0 / n, rel=0.02)


@pytest.mark.parametrize("name", sorted(KERAS_TRUNCATED))
def test_keras_truncation_at_two_pre_truncation_stds(name):
    bound = 2 * KERAS_TRUNCATED[name]
    top = draw(name).abs().max().item()
    assert top <= bound * (1 + 1e-6)
    assert top > 0.99 * bound  # 4M draws reach the cut: it is not tighter than it should be


def test_torch_trunc_normal_uses_absolute_bounds():
    w = draw("trunc_normal", (500, 500), mean=1.0, std=3.0, a=0.5, b=2.0)
    assert w.min() >= 0.5 and w.max() <= 2.0


@pytest.mark.parametrize("name", sorted(UNIFORM_LIMITS))
def test_uniform_limits(name):
    top = draw(name).abs().max().item()
    assert UNIFORM_LIMITS[name] * 0.999 < top <= UNIFORM_LIMITS[name] * (1 + 1e-6)


def test_orthogonal_rows_are_orthonormal():
    w = draw("orthogonal", (64, 128), gain=1.0)
    assert torch.allclose(w @ w.T, torch.eye(64), atol=1e-5)
    assert torch.allclose(draw("orthogonal", (32, 32), gain=3.0).pow(2).sum(1), torch.full((32,), 9.0))


@pytest.mark.parametrize("name", sorted(STATS))
def test_seeded_draws_repeat_and_leave_global_rng_alone(name):
    kwargs = STATS[name][0]
    state = torch.get_rng_state()
    a, b, c = (draw(name, (64, 48), seed=s, **kwargs) for s in (7, 7, 8))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_exact_initializers():
    assert torch.equal(draw("zeros", (3, 4)), torch.zeros(3, 4))
    assert torch.equal(draw("ones", (3, 4)), torch.ones(3, 4))
    assert torch.equal(draw("constant", (3, 4), value=2.5), torch.full((3, 4), 2.5))
    assert torch.equal(draw("identity", (3, 4), gain=2.0), 2 * torch.eye(3, 4))
    assert torch.equal(draw("eye", (4, 3)), torch.eye(4, 3))
    assert torch.equal(draw("zeros", (5,)), torch.zeros(5))  # 1-D biases too


def test_sparse_zeros_per_column():
    w = draw("sparse", (101, 300), sparsity=0.3)
    assert ((w == 0).sum(0) == math.ceil(0.3 * 101)).all()


def test_fans_follow_torch_layout():
    assert fans(nn.Linear(3, 5).weight) == (3.0, 5.0)
    assert fans(nn.Conv2d(3, 8, 5).weight) == (75.0, 200.0)


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match=r"unknown initializer 'he_norml'.*he_normal.*torch_default"):
        get_initializer("he_norml")


def test_bad_kwarg_names_argument_and_accepted_ones():
    with pytest.raises(ValueError, match=r"'he_normal'.*scale.*accepted: \(none\)"):
        get_initializer("he_normal", scale=3)
    with pytest.raises(ValueError, match=r"'variance_scaling'.*stddev.*accepted: scale, mode, distribution"):
        get_initializer("variance_scaling", stddev=1)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"mode": "fan_sum"}, r"mode must be one of fan_in, fan_out, fan_avg; got 'fan_sum'"),
        ({"distribution": "normal"}, r"distribution must be one of truncated_normal.*got 'normal'"),
        ({"scale": 0.0}, r"scale must be a positive number; got 0.0"),
    ],
)
def test_bad_values_fail_when_built(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        get_initializer("variance_scaling", **kwargs)


def test_bad_torch_values_fail_when_built():
    with pytest.raises(ValueError, match="fan_avg"):
        get_initializer("kaiming_normal", mode="fan_avg")
    with pytest.raises(ValueError, match="swish"):
        get_initializer("kaiming_uniform", nonlinearity="swish")
    with pytest.raises(ValueError, match="sparsity"):
        get_initializer("sparse", sparsity=1.5)


def test_callable_spec_and_config():
    init = get_initializer(nn.init.constant_, val=3.0)
    assert torch.equal(init(torch.empty(2)), torch.full((2,), 3.0))
    vs = get_initializer("variance_scaling", scale=2.0)
    assert vs.get_config() == {"name": "variance_scaling", "scale": 2.0}
    assert "scale=2.0" in repr(vs)


def test_init_linear_torch_default_reproduces_nn_linear():
    ref_seed, layer = 123, nn.Linear(40, 30)
    torch.manual_seed(ref_seed)
    ref = nn.Linear(40, 30)
    torch.manual_seed(ref_seed)
    init_linear_(layer, "torch_default", "torch_default")
    assert torch.equal(layer.weight, ref.weight) and torch.equal(layer.bias, ref.bias)


def test_init_linear_weight_and_bias_choices():
    layer = init_linear_(nn.Linear(20, 10), "identity", "constant", bias_kwargs={"value": 0.5})
    assert torch.equal(layer.weight, torch.eye(10, 20)) and torch.equal(layer.bias, torch.full((10,), 0.5))
    assert layer.weight.requires_grad  # filled in place, still a leaf parameter
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = init_linear_(nn.Linear(20, 10), "he_normal", generator=g1)
    b = init_linear_(nn.Linear(20, 10), "he_normal", generator=g2)
    assert torch.equal(a.weight, b.weight) and (a.bias == 0).all()
    assert init_linear_(nn.Linear(4, 3, bias=False), "lecun_normal").bias is None
    with pytest.raises(ValueError, match="takes no arguments"):
        init_linear_(nn.Linear(4, 3), bias_init="torch_default", bias_kwargs={"a": 1})
