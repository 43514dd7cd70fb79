"""Fold BatchNorm layers into neighbouring Linear layers for inference.

In eval mode a BatchNorm is an affine map per feature,

    BN(z) = s * z + t,   s = gamma / sqrt(running_var + eps),   t = beta - s * running_mean,

so it can be absorbed by an adjacent Linear (y = W x + b), removing its runtime cost:

- BN right *after* a Linear (``norm_position: before`` the activation): ``BN(W x + b)`` is the
  Linear ``W' = diag(s) W``, ``b' = s * b + t`` (torch's ``fuse_linear_bn_eval``).
- BN *before* a Linear, with only eval-time identities (dropout) in between -- the input BN,
  or a BN placed after the activation, whose next Linear is the next block's (or the head):
  ``W BN(x) + b = W (s * x + t) + b`` is the Linear ``W' = W diag(s)``, ``b' = b + W t``.
  torch has no helper for this direction; :func:`fold_bn_into_next_linear` does it in float64.
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_linear_bn_eval

from deeptrain.nn.activations import GLU
from deeptrain.nn.mlp import MLP

ModuleT = TypeVar("ModuleT", bound=nn.Module)
# Modules that are the identity in eval mode: a BN may be folded across them.
EVAL_IDENTITIES = (nn.Identity, nn.Dropout, nn.AlphaDropout, nn.FeatureAlphaDropout)


def bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, t)`` in float64 with ``BN(z) = s * z + t`` in eval mode (running statistics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{bn} has no running statistics (track_running_stats=False): it cannot be folded")
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - scale * mean


@torch.no_grad()
def fold_bn_into_next_linear(bn: nn.modules.batchnorm._BatchNorm, linear: nn.Linear) -> nn.Linear:
    """A new Linear equal to ``linear(bn(x))`` in eval mode: ``W' = W diag(s)``, ``b' = b + W t``."""
    if linear.in_features != bn.num_features:
        raise ValueError(f"cannot fold {bn} into {linear}: {bn.num_features} features != in_features {linear.in_features}")
    scale, shift = bn_scale_shift(bn)
    weight = linear.weight.double()  # (out, in)
    bias = linear.bias.double() if linear.bias is not None else torch.zeros(linear.out_features, dtype=torch.float64)
    fused = nn.Linear(linear.in_features, linear.out_features, bias=True, device=linear.weight.device,
                      dtype=linear.weight.dtype)
    fused.weight.copy_(weight * scale)  # scales column j (input feature j) by s_j
    fused.bias.copy_(bias + weight @ shift)
    return fused.train(linear.training)


def _execution_order(net: MLP) -> list[tuple[nn.Module, str]]:
    """(parent, child name) of every layer of the MLP in the order they run."""
    order = [(net, "flatten"), (net, "input_norm")]
    for block in net.backbone:
        order += [(block, name) for name, _ in block.named_children()]
    return order + [(net, "head")]


def _next_linear(order: list[tuple[nn.Module, str]], start: int) -> tuple[nn.Module, str]:
    """The first Linear (or gated layer's input projection) after ``start``, across eval identities."""
    for parent, name in order[start + 1 :]:
        module = getattr(parent, name)
        if isinstance(module, nn.Linear):
            return parent, name
        if isinstance(module, GLU):
            return module, "proj"
        if not isinstance(module, EVAL_IDENTITIES):
            break
    raise ValueError(f"BatchNorm at position {start} is neither after a Linear nor followed by one: cannot fold it")


def fuse_mlp_batchnorm_(net: MLP) -> MLP:
    """Fold every BatchNorm of ``net`` (already in eval mode) into a Linear, in place; BNs become Identity."""
    order = _execution_order(net)
    for i, (parent, name) in enumerate(order):
        bn = getattr(parent, name)
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            continue
        prev_parent, prev_name = order[i - 1]
        previous = getattr(prev_parent, prev_name)
        if isinstance(previous, nn.Linear) and prev_parent is parent:  # Linear -> BN
            setattr(prev_parent, prev_name, fuse_linear_bn_eval(previous, bn))
        else:  # BN -> [dropout] -> Linear (input BN, or BN after the activation)
            next_parent, next_name = _next_linear(order, i)
            setattr(next_parent, next_name, fold_bn_into_next_linear(bn, getattr(next_parent, next_name)))
        setattr(parent, name, nn.Identity())
    return net


def fuse_batchnorm(model: ModuleT) -> ModuleT:
    """An eval-mode copy of ``model`` with every BatchNorm folded into a neighbouring Linear.

    The result computes the same function as ``model.eval()`` (to float rounding) with no
    BatchNorm modules left; ``model`` itself is not changed. The copy runs eagerly even if
    ``model`` was compiled (compile it again if wanted). Parameter and buffer names stay
    the same except that the BNs' disappear and a Linear that had no bias gains one.

    Args:
        model: an :class:`~deeptrain.nn.mlp.MLP`, or any module whose ``.net`` is one (the
            :class:`~deeptrain.training.module.Classifier`).

    Returns:
        The fused copy, in eval mode.

    Raises:
        TypeError: ``model`` is neither an MLP nor has an MLP as ``.net``.
        ValueError: a BatchNorm has no running statistics or no Linear to fold into.

    Examples:
        >>> net = MLP((3, 8, 8), 10, MLPConfig(depth=3, width=16, norm="batch", input_norm=True))
        >>> fused = fuse_batchnorm(net)
        >>> any(isinstance(m, nn.BatchNorm1d) for m in fused.modules())
        False
    """
    net = model if isinstance(model, MLP) else getattr(model, "net", None)
    if not isinstance(net, MLP):
        raise TypeError(f"fuse_batchnorm needs an MLP or a module with an MLP as .net, got {type(model).__name__}")
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        # The copy of a module compiled with nn.Module.compile holds a compiled function bound to
        # the ORIGINAL module: drop it, or the copy would run the unfused network. The fused copy is eager.
        module._compiled_call_impl = None
    fuse_mlp_batchnorm_(fused if isinstance(fused, MLP) else fused.net)
    return fused
