"""Sparse models: magnitude pruning with ``torch.nn.utils.prune``, sparsity reports, and
state dicts without the pruning reparametrization.

While pruned, a layer holds ``weight_orig`` (a Parameter) and ``weight_mask`` (a buffer)
and recomputes ``weight = weight_orig * weight_mask`` before every forward; a *plain*
state dict has just ``weight`` (the product), which any unpruned copy of the model loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Mapping

import torch
from torch import nn
from torch.nn.utils import prune

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
SCOPES = ("global", "layer")


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    zeros: int
    total: int

    @property
    def sparsity(self) -> float:
        return self.zeros / max(self.total, 1)


def prunable_weights(model: nn.Module, include_head: bool = True, head: str = "head") -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every Linear/Conv layer (their ``weight`` is pruned; biases are not).

    Args:
        include_head: also the output layer, i.e. any module whose name ends with ``head``.
    """
    return [
        (name, m) for name, m in model.named_modules()
        if isinstance(m, PRUNABLE_TYPES) and (include_head or name.split(".")[-1] != head)
    ]


def is_pruned(module: nn.Module, name: str = "weight") -> bool:
    return prune.is_pruned(module) and hasattr(module, f"{name}_mask")


def effective_weight(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The weight the forward uses: ``orig * mask`` while pruned, else the weight itself."""
    if is_pruned(module, name):
        return getattr(module, f"{name}_orig") * getattr(module, f"{name}_mask")
    return getattr(module, name)


def magnitude_prune_(
    layers: Iterable[tuple[str, nn.Module]], amount: float, scope: Literal["global", "layer"] = "global"
) -> None:
    """Zero the ``amount`` fraction of smallest-|w| weights, over all ``layers`` together
    (``global``) or in each layer (``layer``); masks stay in place (``prune.remove`` or
    :func:`make_permanent_` fixes them). On already-pruned layers ``amount`` is a
    fraction of the weights still alive, as in ``torch.nn.utils.prune``."""
    if scope not in SCOPES:
        raise ValueError(f"scope = {scope!r} is not valid; valid choices: {', '.join(SCOPES)}")
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"amount must be a fraction in [0, 1], got {amount}")
    params = [(m, "weight") for _, m in layers]
    if not params:
        raise ValueError("no layer to prune")
    if scope == "global":
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    else:
        for module, name in params:
            prune.l1_unstructured(module, name=name, amount=amount)


def make_permanent_(model: nn.Module) -> int:
    """Fold every pruning mask into its weight and drop the reparametrization; returns how many."""
    count = 0
    for module in model.modules():
        for hook in [h for h in module._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]:
            prune.remove(module, hook._tensor_name)
            count += 1
    return count


def sparsity_report(layers: Iterable[tuple[str, nn.Module]]) -> tuple[list[LayerSparsity], LayerSparsity]:
    """Exact zeros in each layer's effective weight, and over all of them (``global``)."""
    rows = []
    for name, module in layers:
        weight = effective_weight(module)
        rows.append(LayerSparsity(name, int((weight == 0).sum()), weight.numel()))
    total = LayerSparsity("global", sum(r.zeros for r in rows), sum(r.total for r in rows))
    return rows, total


def plain_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``X_orig`` and ``X_mask`` entries replaced by ``X = X_orig * X_mask``, in place of ``X_orig``."""
    out = {}
    for key, value in state.items():
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in state:
            base = key[: -len("_orig")]
            out[base] = value * state[base + "_mask"].to(value.dtype)
        elif not (key.endswith("_mask") and key[: -len("_mask")] + "_orig" in state):
            out[key] = value
    return out


def load_state_dict_any_(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load ``state`` whether it or ``model`` (or neither) carries pruning reparametrizations.

    The state is made plain; for each layer of ``model`` that is still pruned, its weight
    goes into ``weight_orig`` and its non-zeros become the mask, so the model computes
    exactly what the saved one did and pruned weights stay pruned.
    """
    state = plain_state_dict(state)
    for prefix, module in model.named_modules():
        for hook in [h for h in module._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]:
            key = f"{prefix}.{hook._tensor_name}" if prefix else hook._tensor_name
            weight = state.pop(key)
            state[key + "_orig"] = weight
            state[key + "_mask"] = (weight != 0).to(weight.dtype)
    model.load_state_dict(state)
