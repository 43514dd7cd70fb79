"""Activations and gated layers, tested over every registered name."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deeptrain.nn.activations import (
    ACTIVATIONS,
    GATED_LAYERS,
    RELU_LIKE,
    SATURATING_BOUNDS,
    SwiGLU,
    SwishBeta,
    activation_name,
    get_activation,
    get_gated_layer,
    is_gated,
    keras_activation_defaults,
)

LEARNABLE = {"prelu", "swish_beta"}
ALIASES = {"linear": "identity", "logistic": "sigmoid", "swish": "silu", "squared_relu": "relu2",
           "hard_swish": "hardswish", "hard_silu": "hardswish", "hardsigmoid": "hard_sigmoid", "hardtanh": "hard_tanh",
           "logsigmoid": "log_sigmoid", "tanhshrink": "tanh_shrink", "softshrink": "soft_shrink", "hardshrink": "hard_shrink"}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_every_activation_builds_and_its_gradient_is_the_derivative(name):
    act = get_activation(name).double().eval()  # eval: RReLU's slope fixed, so a derivative exists
    x = torch.randn(16, 8, dtype=torch.float64, requires_grad=True)
    assert act(x).shape == x.shape
    assert torch.autograd.gradcheck(act, (x,), eps=1e-6, atol=1e-5)  # autograd vs finite differences


def finite_difference(loss, p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """d loss / d p by central differences, element by element."""
    grad = torch.empty_like(p)
    with torch.no_grad():
        for i in range(p.numel()):
            p.view(-1)[i] += eps
            up = loss()
            p.view(-1)[i] -= 2 * eps
            down = loss()
            p.view(-1)[i] += eps
            grad.view(-1)[i] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_learnable_activations_get_the_gradient_of_their_parameters(name):
    act = get_activation(name).double()
    params = list(act.parameters())
    assert bool(params) == (ACTIVATIONS.get(name) in {ACTIVATIONS.get(n) for n in LEARNABLE})
    if not params:
        return
    x = torch.randn(16, 8, dtype=torch.float64)
    act(x).square().sum().backward()
    for p in params:
        expected = finite_difference(lambda: act(x).square().sum(), p.data)
        torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_activation_name_round_trips_to_canonical(name):
    assert activation_name(get_activation(name)) == ALIASES.get(name, name)


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_bad_kwarg_names_activation_and_argument(name):
    with pytest.raises(ValueError, match=rf"{name}.*not_an_arg"):
        get_activation(name, not_an_arg=1)


def test_bad_kwarg_lists_accepted_ones():
    with pytest.raises(ValueError, match=r"'relu'.*alpha.*accepted: inplace"):
        get_activation("relu", alpha=1)


def test_unknown_name_lists_activations_and_gated_layers():
    with pytest.raises(ValueError) as err:
        get_activation("relu7")
    assert "'relu7'" in str(err.value)
    for name in ACTIVATIONS.names() + GATED_LAYERS.names():
        assert name in str(err.value)


def test_gated_name_as_activation_points_to_gated_layer():
    with pytest.raises(ValueError, match=r"gated layer.*get_gated_layer"):
        get_activation("swiglu")


def test_kwargs_reach_the_module():
    assert get_activation("leaky_relu", negative_slope=0.2).negative_slope == 0.2
    assert get_activation("ELU", alpha=0.5).alpha == 0.5  # names are case-insensitive
    assert get_activation("prelu", num_parameters=8, init=0.1).weight.shape == (8,)
    assert get_activation("swish_beta", beta=2.0).beta.item() == 2.0


def test_class_instance_callable_and_none_specs():
    assert isinstance(get_activation(nn.ELU, alpha=0.3), nn.ELU)
    inst = nn.Tanh()
    assert get_activation(inst) is inst
    with pytest.raises(ValueError, match="already built"):
        get_activation(inst, alpha=1)
    x = torch.randn(5)
    assert torch.equal(get_activation(torch.tanh)(x), torch.tanh(x))
    assert torch.equal(get_activation(F.leaky_relu, negative_slope=0.3)(x), F.leaky_relu(x, 0.3))
    with pytest.raises(ValueError, match="alpha"):
        get_activation(F.leaky_relu, alpha=0.3)
    assert isinstance(get_activation(None), nn.Identity)
    with pytest.raises(ValueError, match="unexpected"):
        get_activation(nn.ReLU, alpha=1)


def test_custom_modules_compute_their_formula():
    x = torch.linspace(-4, 4, 101)
    assert torch.allclose(SwishBeta()(x), F.silu(x))
    assert torch.allclose(SwishBeta(beta=50.0)(x), F.relu(x), atol=1e-2)
    assert torch.allclose(SwishBeta(beta=0.0)(x), x / 2)
    assert torch.allclose(get_activation("relu2")(x), F.relu(x) ** 2)


@pytest.mark.parametrize("name", sorted(SATURATING_BOUNDS))
def test_saturating_bounds(name):
    lo, hi = SATURATING_BOUNDS[name]
    y = get_activation(name)(torch.tensor([-100.0, 0.0, 100.0]))
    assert y.min() >= lo and y.max() <= hi
    assert torch.allclose(y[[0, 2]], torch.tensor([lo, hi]))


@pytest.mark.parametrize("name", sorted(RELU_LIKE))
def test_relu_like_zero_output_means_zero_gradient(name):
    assert name in ACTIVATIONS
    x = (torch.randn(1000) * 5).requires_grad_()
    y = get_activation(name)(x)
    y.sum().backward()
    dead = y == 0
    assert dead.any()
    assert (x.grad[dead] == 0).all()


@pytest.mark.parametrize("name", GATED_LAYERS.names())
def test_gated_layers_map_in_to_out_and_backpropagate(name):
    layer = get_gated_layer(name, 12, 7)
    assert is_gated(name) and is_gated(layer) and not is_gated("relu")
    assert isinstance(layer.proj, nn.Linear) and layer.proj.weight.shape == (14, 12)
    assert activation_name(layer) == name
    assert layer(torch.randn(4, 12)).shape == (4, 7)
    layer = layer.double()
    x = torch.randn(4, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-5)  # to the input
    layer(x).square().sum().backward()  # and to the projection weights
    weight = layer.proj.weight
    torch.testing.assert_close(weight.grad, finite_difference(lambda: layer(x).square().sum(), weight.data),
                               rtol=1e-5, atol=1e-6)
    assert get_gated_layer(name, 12, 7, bias=False).proj.bias is None


def test_swiglu_is_silu_of_first_half_times_second():
    layer = SwiGLU(6, 3)
    x = torch.randn(2, 6)
    a, b = layer.proj(x)[:, :3], layer.proj(x)[:, 3:]
    assert torch.allclose(layer(x), F.silu(a) * b)


# Keras 3's formulas (keras.activations), written out: each Keras name must compute its own.
X = torch.linspace(-8, 8, 161)
KERAS_FORMULAS = {
    "relu6": lambda x: x.clamp(0, 6),
    "hard_sigmoid": lambda x: (x / 6 + 0.5).clamp(0, 1),  # Keras 3: relu6(x + 3) / 6
    "hard_silu": lambda x: x * (x / 6 + 0.5).clamp(0, 1),  # x * hard_sigmoid(x)
    "hard_swish": lambda x: x * (x / 6 + 0.5).clamp(0, 1),
    "softsign": lambda x: x / (1 + x.abs()),
    "swish": lambda x: x * torch.sigmoid(x),
    "silu": lambda x: x * torch.sigmoid(x),
    "linear": lambda x: x,
    "hard_tanh": lambda x: x.clamp(-1, 1),
    "log_sigmoid": lambda x: torch.log(torch.sigmoid(x)),
    "tanh_shrink": lambda x: x - torch.tanh(x),
    "soft_shrink": lambda x: torch.where(x > 0.5, x - 0.5, torch.where(x < -0.5, x + 0.5, 0.0)),  # threshold 0.5
    "hard_shrink": lambda x: torch.where(x.abs() > 0.5, x, 0.0),
}


@pytest.mark.parametrize("name", sorted(KERAS_FORMULAS))
def test_keras_names_compute_keras_formulas(name):
    assert name in ACTIVATIONS
    torch.testing.assert_close(get_activation(name)(X), KERAS_FORMULAS[name](X))


# (name, defaults, slope of the negative side): torch's, and Keras 3's function defaults.
SLOPES = [("leaky_relu", "torch", 0.01), ("leaky_relu", "keras", 0.2), ("prelu", "torch", 0.25), ("prelu", "keras", 0.0)]


@pytest.mark.parametrize("name, defaults, slope", SLOPES)
def test_negative_slopes_follow_the_chosen_defaults(name, defaults, slope):
    kwargs = keras_activation_defaults(name, width=8) if defaults == "keras" else {}
    act = get_activation(name, **kwargs)
    x = -torch.rand(4, 8) - 0.5
    torch.testing.assert_close(act(x), slope * x)


def test_keras_layer_slope_and_per_unit_prelu():
    # keras.layers.LeakyReLU() defaults to 0.3: an explicit argument wins over the function's 0.2
    from deeptrain.nn.mlp import MLP, MLPConfig

    cfg = MLPConfig(depth=1, width=6, activation="leaky_relu", activation_args={"negative_slope": 0.3}, activation_defaults="keras")
    assert MLP((4,), 2, cfg).backbone[0].act.negative_slope == 0.3
    prelu = MLP((4,), 2, MLPConfig(depth=1, width=6, activation="prelu", activation_defaults="keras")).backbone[0].act
    assert prelu.weight.shape == (6,) and (prelu.weight == 0).all()  # Keras: one slope per unit, from 0


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_keras_defaults_differ_only_where_keras_differs(name):
    expected = {"leaky_relu": {"negative_slope": 0.2}, "prelu": {"num_parameters": 8, "init": 0.0}}
    assert keras_activation_defaults(name, width=8) == expected.get(name, {})
