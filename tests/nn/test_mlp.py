import pytest
import torch
from torch import nn

from deeptrain.nn.mlp import MLP, MLPConfig


def make(**kwargs):
    return MLP((3, 8, 8), 10, MLPConfig(**kwargs))


def test_shapes_depth_width_and_widths():
    net = make(depth=5, width=16)
    assert len(net.backbone) == 5
    assert net(torch.randn(4, 3, 8, 8)).shape == (4, 10)
    assert [l.out_features for l in net.hidden_linears()] == [16] * 5
    net = make(widths=[30, 20, 10])
    assert [l.out_features for l in net.hidden_linears()] == [30, 20, 10]
    assert net.hidden_linears()[0].in_features == 3 * 8 * 8
    assert net.head.in_features == 10


def test_state_dict_keys_read_naturally():
    keys = set(make(depth=2, width=4, norm="batch").state_dict())
    assert {"backbone.0.linear.weight", "backbone.0.norm.running_mean", "head.weight", "head.bias"} <= keys


@pytest.mark.parametrize("position", ["before", "after"])
def test_batch_norm_placement_and_bias_removal(position):
    net = make(depth=3, width=8, norm="batch", norm_position=position, activation="elu")
    for block in net.backbone:
        names = [name for name, _ in block.named_children()]
        expected = ["linear", "norm", "act"] if position == "before" else ["linear", "act", "norm"]
        assert names == expected
        assert isinstance(block.norm, nn.BatchNorm1d)
        assert (block.linear.bias is None) == (position == "before")


def test_layer_norm_and_input_batch_norm():
    net = make(depth=2, width=8, norm="layer", input_norm=True)
    assert isinstance(net.backbone[0].norm, nn.LayerNorm)
    assert isinstance(net.input_norm, nn.BatchNorm1d) and net.input_norm.num_features == 192


def test_bn_momentum_and_eps_reach_the_layers():
    net = make(depth=1, width=8, norm="batch", bn_momentum=0.01, bn_eps=1e-3, input_norm=True)
    for bn in (net.backbone[0].norm, net.input_norm):
        assert bn.momentum == 0.01 and bn.eps == 1e-3


@pytest.mark.parametrize(
    "placement, top_k, expected",
    [("all", 1, [True] * 4), ("top", 2, [False, False, True, True]), ("output", 1, [False, False, False, True])],
)
@pytest.mark.parametrize("kind, cls", [("standard", nn.Dropout), ("alpha", nn.AlphaDropout)])
def test_dropout_placement(placement, top_k, expected, kind, cls):
    net = make(depth=4, width=8, dropout=0.3, dropout_kind=kind, dropout_placement=placement, dropout_top_k=top_k)
    has = [isinstance(getattr(block, "dropout", None), cls) for block in net.backbone]
    assert has == expected
    assert all(m.p == 0.3 for m in net.modules() if isinstance(m, cls))


def test_no_dropout_modules_at_rate_zero():
    assert not any(isinstance(m, (nn.Dropout, nn.AlphaDropout)) for m in make(depth=3, dropout=0.0).modules())


def test_max_norm_holds_after_an_optimizer_step():
    torch.manual_seed(0)
    net = make(depth=3, width=32, max_norm=0.5, kernel_init="random_normal", kernel_init_args={"stddev": 1.0})
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    norms_before = [l.weight.norm(dim=1).max().item() for l in net.hidden_linears()]
    assert max(norms_before) > 0.5  # the constraint has something to do
    loss = net(torch.randn(16, 3, 8, 8)).square().mean()
    loss.backward()
    opt.step()
    net.apply_max_norm_()
    for linear in net.hidden_linears():
        assert linear.weight.norm(dim=1).max().item() <= 0.5 + 1e-5


def test_gated_layer_kind():
    net = make(depth=2, width=12, activation="swiglu")
    assert all(hasattr(block, "gated") for block in net.backbone)
    assert net.hidden_linears()[0].out_features == 24  # two halves: value and gate
    out = net(torch.randn(4, 3, 8, 8))
    out.sum().backward()
    assert out.shape == (4, 10)


def test_initializers_reach_hidden_and_head():
    net = make(depth=2, width=8, kernel_init="ones", head_init="zeros", bias_init="ones")
    assert torch.all(net.hidden_linears()[0].weight == 1)
    assert torch.all(net.hidden_linears()[1].bias == 1)
    assert torch.all(net.head.weight == 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"depth": 0}, "depth"),
        ({"widths": []}, "widths"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"norm": "group"}, "none, batch, layer"),
        ({"dropout_kind": "gaussian"}, "standard, alpha"),
        ({"activation": "sigmoidd"}, "sigmoid"),
        ({"kernel_init": "he_normall"}, "he_normal"),
    ],
)
def test_bad_config_errors_name_value_and_choices(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


@pytest.mark.parametrize(
    "kwargs, condition",
    [
        ({"kernel_init": "he_normal"}, "kernel_init is 'he_normal', not LeCun (lecun_normal or lecun_uniform)"),
        ({"kernel_init": "lecun_normal", "norm": "batch"}, "the network uses normalization layers"),
        ({"kernel_init": "lecun_normal", "input_norm": True}, "the network uses normalization layers"),
        ({"kernel_init": "lecun_normal", "dropout": 0.2, "dropout_kind": "standard"},
         "it uses standard dropout (use dropout_kind: alpha)"),
    ],
)
def test_selu_warns_when_self_normalization_is_broken_and_says_which_condition(kwargs, condition):
    with pytest.warns(UserWarning) as record:
        make(activation="selu", **kwargs)
    messages = [str(w.message) for w in record if "self-normalize" in str(w.message)]
    assert messages == [f"SELU network will not self-normalize: {condition}. Inputs must also be standardized."]


def test_selu_with_lecun_and_alpha_dropout_is_quiet(recwarn):
    make(activation="selu", kernel_init="lecun_normal", dropout=0.1, dropout_kind="alpha")
    assert not [w for w in recwarn if "self-normalize" in str(w.message)]


def test_max_norm_constrains_the_trained_weights_of_a_pruned_layer():
    from torch.nn.utils import prune

    torch.manual_seed(0)
    net = make(depth=2, width=16, max_norm=0.5, kernel_init="random_normal", kernel_init_args={"stddev": 1.0})
    for linear in net.hidden_linears():
        prune.l1_unstructured(linear, name="weight", amount=0.5)  # weight = weight_orig * weight_mask
    net(torch.randn(2, 3, 8, 8))
    net.apply_max_norm_()
    for linear in net.hidden_linears():
        effective = linear.weight_orig * linear.weight_mask  # what the next forward pass uses
        norms = effective.norm(dim=1)
        assert norms.max().item() == pytest.approx(0.5, rel=1e-5)  # scaled down to the limit, not below
        assert (linear.weight_orig[linear.weight_mask == 0] != 0).any()  # pruned entries do not count
