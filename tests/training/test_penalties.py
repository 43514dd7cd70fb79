import pytest
import torch
from torch import nn

from deeptrain.nn.mlp import MLP, MLPConfig
from deeptrain.training.penalties import linear_weights, weight_penalty


def test_penalties_equal_their_formula_over_linear_weights_only():
    torch.manual_seed(0)
    net = MLP((1, 4, 4), 3, MLPConfig(depth=2, width=5, norm="batch", norm_position="after"))
    for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm1d)):
        nn.init.constant_(bn.weight, 7.0)  # would change the result if BN were penalized
    for linear in (m for m in net.modules() if isinstance(m, nn.Linear)):
        nn.init.constant_(linear.bias, 5.0)  # likewise for biases
    weights = linear_weights(net)
    assert len(weights) == 3  # two hidden layers + head
    l1_expected = sum(w.abs().sum() for w in weights).item()
    l2_expected = sum((w**2).sum() for w in weights).item()
    assert weight_penalty(weights, l1=0.01).item() == pytest.approx(0.01 * l1_expected, rel=1e-6)
    assert weight_penalty(weights, l2=0.02).item() == pytest.approx(0.02 * l2_expected, rel=1e-6)
    both = weight_penalty(weights, l1=0.01, l2=0.02).item()
    assert both == pytest.approx(0.01 * l1_expected + 0.02 * l2_expected, rel=1e-6)
    assert weight_penalty(weights).item() == 0.0


def test_penalty_gradient_is_l2_times_two_w():
    w = nn.Parameter(torch.randn(3, 4))
    weight_penalty([w], l2=0.5).backward()
    torch.testing.assert_close(w.grad, 0.5 * 2 * w.detach())
