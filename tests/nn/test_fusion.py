import pytest
import torch
from torch import nn

from deeptrain.nn.fusion import fold_bn_into_next_linear, fuse_batchnorm
from deeptrain.nn.mlp import MLP, MLPConfig
from deeptrain.training.module import Classifier

SHAPE = (3, 6, 6)


def trained_stats_(net: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN non-trivial running statistics and affine parameters, as after training."""
    g = torch.Generator().manual_seed(seed)
    net.train()
    with torch.no_grad():
        for _ in range(5):  # inputs far from N(0, 1), so the running stats matter
            net(torch.randn(64, *SHAPE, generator=g) * 3 + 2)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return net.eval()


def assert_same_function(net: nn.Module, fused: nn.Module) -> None:
    x = torch.randn(200, *SHAPE, generator=torch.Generator().manual_seed(1)) * 3 + 2
    with torch.no_grad():
        expected, actual = net(x), fused(x)
    # 1e-5 of the output's scale: a float32 rounding budget over the whole network.
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5 * expected.abs().max().item())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())


PLACEMENTS = {
    "before": dict(norm="batch", norm_position="before"),
    "after": dict(norm="batch", norm_position="after"),
    "input": dict(input_norm=True),
    "input+before+dropout": dict(norm="batch", norm_position="before", input_norm=True, dropout=0.3),
    "input+after+dropout": dict(norm="batch", norm_position="after", input_norm=True, dropout=0.3),
    "after+alpha_dropout_top": dict(norm="batch", norm_position="after", dropout=0.2, dropout_kind="alpha",
                                    dropout_placement="top", dropout_top_k=2),
    "gated+before": dict(norm="batch", norm_position="before", activation="swiglu", input_norm=True),
    "gated+after": dict(norm="batch", norm_position="after", activation="reglu", dropout=0.1),
}


@pytest.mark.parametrize("placement", PLACEMENTS, ids=list(PLACEMENTS))
def test_fused_mlp_computes_the_eval_model(placement):
    kwargs = {"depth": 4, "width": 24, "activation": "elu", **PLACEMENTS[placement]}
    torch.manual_seed(0)
    net = trained_stats_(MLP(SHAPE, 5, MLPConfig(**kwargs)))
    fused = fuse_batchnorm(net)
    assert_same_function(net, fused)
    assert not fused.training
    assert any(isinstance(m, nn.BatchNorm1d) for m in net.modules())  # the original is untouched


def test_bn_after_the_last_activation_goes_into_the_head():
    net = trained_stats_(MLP(SHAPE, 5, MLPConfig(depth=2, width=8, norm="batch", norm_position="after")))
    fused = fuse_batchnorm(net)
    bn = net.backbone[-1].norm
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(fused.head.weight, net.head.weight * scale)


def test_fold_into_next_linear_matches_the_formula_and_adds_a_bias():
    bn = nn.BatchNorm1d(4).eval()
    bn.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5, 3.0]))
    bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0, 9.0]))
    linear = nn.Linear(4, 2, bias=False)
    fused = fold_bn_into_next_linear(bn, linear)
    x = torch.randn(10, 4)
    torch.testing.assert_close(fused(x), linear(bn(x)))
    with pytest.raises(ValueError, match="in_features"):
        fold_bn_into_next_linear(bn, nn.Linear(3, 2))


def test_classifier_is_fused_through_its_net_and_keeps_its_normalizer():
    torch.manual_seed(0)
    model = Classifier(MLPConfig(depth=3, width=16, norm="batch", input_norm=True), input_shape=SHAPE, num_classes=5)
    model.normalizer.set_stats(torch.full(SHAPE, 100.0), torch.full(SHAPE, 40.0))
    trained_stats_(model.net)
    fused = fuse_batchnorm(model)
    assert isinstance(fused, Classifier) and fused is not model
    x = torch.randint(0, 256, (50, *SHAPE), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model.eval()(x), rtol=0, atol=1e-5 * model(x).abs().max().item())


def test_an_unfoldable_module_is_refused():
    with pytest.raises(TypeError, match="MLP"):
        fuse_batchnorm(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))


@pytest.mark.slow
def test_a_compiled_model_is_fused_into_an_eager_copy_that_runs_the_fused_network():
    # The copy of an nn.Module.compile'd module would otherwise call the ORIGINAL module's compiled forward.
    model = Classifier(MLPConfig(depth=2, width=8, norm="batch"), input_shape=SHAPE, num_classes=5, compile=True)
    trained_stats_(model.net)
    model.net.compile()
    fused = fuse_batchnorm(model)  # nothing is called compiled here: no compilation cost
    assert model._compiled_call_impl is not None and model.net._compiled_call_impl is not None
    assert fused._compiled_call_impl is None and fused.net._compiled_call_impl is None
    assert not any(isinstance(m, nn.BatchNorm1d) for m in fused.modules())
    x = torch.randint(0, 256, (20, *SHAPE), dtype=torch.uint8)
    with torch.no_grad():
        expected = model.net._call_impl(model.normalizer(x))  # the eager original
        torch.testing.assert_close(fused(x), expected, rtol=0, atol=1e-5 * expected.abs().max().item())
