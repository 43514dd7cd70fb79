"""The deep MLP of chapter 11: any depth and width, every initializer and
activation, batch/layer norm before or after the activation, (alpha) dropout,
max-norm. Input of any shape is flattened; the output is logits.

    x (B, *input_shape) -> flatten (B, D) -> [input_norm] -> backbone (B, width) -> head (B, num_classes)

``backbone`` (the reusable hidden blocks) and ``head`` (the output layer) are
separate submodules so layers can be reused, frozen or replaced.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Optional, Sequence

import torch
from torch import nn

from deeptrain.nn.activations import GATED_LAYERS, get_activation, is_gated, keras_activation_defaults
from deeptrain.nn.initializers import init_linear_
from deeptrain.nn.normalization import KerasBatchNorm1d
from deeptrain.nn.sparsity import effective_weight, is_pruned

NORMS = ("none", "batch", "layer")
POSITIONS = ("before", "after")
SEMANTICS = ("torch", "keras")
# BatchNorm momentum (torch convention: weight of the new batch) and epsilon per semantics
BN_DEFAULTS = {"torch": {"momentum": 0.1, "eps": 1e-5}, "keras": {"momentum": 0.01, "eps": 1e-3}}
DROPOUT_KINDS = ("standard", "alpha")
DROPOUT_PLACEMENTS = ("all", "top", "output")
LECUN_INITS = ("lecun_normal", "lecun_uniform")


DEFAULT_DEPTH, DEFAULT_WIDTH = 2, 100


@dataclass
class MLPConfig:
    """Everything that defines the network, as plain values (YAML- and checkpoint-friendly).

    Args:
        depth: number of hidden layers (with ``widths`` given, leave depth and width at their defaults).
        width: units per hidden layer.
        widths: explicit list of hidden widths, e.g. ``[300, 100]``.
        activation: a registered name (``deeptrain.nn.activations.ACTIVATIONS``) or a gated
            layer kind (``swiglu``, ``geglu``, ``reglu``), which brings its own Linear pair.
        activation_args: keyword arguments of the activation, e.g. ``{negative_slope: 0.2}``.
        activation_defaults: whose defaults fill the activation arguments not in
            ``activation_args``: ``torch`` (``leaky_relu`` slope 0.01, one PReLU slope from 0.25)
            or ``keras`` (Keras 3: ``leaky_relu`` slope 0.2 as ``Dense(activation="leaky_relu")``,
            a PReLU slope per unit from 0); see :func:`~deeptrain.nn.activations.keras_activation_defaults`.
        kernel_init: initializer of the hidden layers' weights (Keras or torch names).
        kernel_init_args: its keyword arguments, e.g. ``{scale: 2, mode: fan_avg}``.
        bias_init: initializer of every bias (Keras' default: zeros).
        head_init: initializer of the output layer's weight (Keras' Dense default: glorot_uniform).
        norm: ``none``, ``batch`` or ``layer`` normalization in each hidden block.
        norm_position: ``before`` the activation (the Linear before it then has no bias)
            or ``after`` it.
        input_norm: a BatchNorm1d over the flattened input, as the very first layer.
        bn_semantics: ``torch`` (``nn.BatchNorm1d``: the moving variance is updated with the
            unbiased batch variance) or ``keras`` (:class:`~deeptrain.nn.normalization.KerasBatchNorm1d`:
            the biased one, as Keras's ``BatchNormalization``). Also picks the defaults below.
        bn_momentum: torch's momentum, i.e. ``1 - keras_momentum`` (Keras 0.99 -> 0.01); None:
            0.1 with torch semantics, 0.01 with keras.
        bn_eps: BatchNorm epsilon; None: 1e-5 with torch semantics, 1e-3 with keras.
        dropout: dropout rate in [0, 1).
        dropout_kind: ``standard`` (nn.Dropout) or ``alpha`` (nn.AlphaDropout, for SELU).
        dropout_placement: after ``all`` hidden blocks, the ``top`` ``dropout_top_k`` ones, or
            only after the last one (``output``: just before the output layer).
        dropout_top_k: how many of the top hidden blocks get dropout with ``placement=top``.
        max_norm: if set, each hidden unit's incoming weight vector is rescaled to an L2 norm
            of at most this radius after every optimizer step.
    """

    depth: int = DEFAULT_DEPTH
    width: int = DEFAULT_WIDTH
    widths: Optional[list[int]] = None
    activation: str = "relu"
    activation_args: dict[str, Any] = field(default_factory=dict)
    activation_defaults: Literal["torch", "keras"] = "torch"
    kernel_init: str = "he_normal"
    kernel_init_args: dict[str, Any] = field(default_factory=dict)
    bias_init: str = "zeros"
    head_init: str = "glorot_uniform"
    norm: Literal["none", "batch", "layer"] = "none"
    norm_position: Literal["before", "after"] = "before"
    input_norm: bool = False
    bn_semantics: Literal["torch", "keras"] = "torch"
    bn_momentum: Optional[float] = None
    bn_eps: Optional[float] = None
    dropout: float = 0.0
    dropout_kind: Literal["standard", "alpha"] = "standard"
    dropout_placement: Literal["all", "top", "output"] = "all"
    dropout_top_k: int = 1
    max_norm: Optional[float] = None

    def __post_init__(self) -> None:
        _check_choice("norm", self.norm, NORMS)
        _check_choice("norm_position", self.norm_position, POSITIONS)
        _check_choice("bn_semantics", self.bn_semantics, SEMANTICS)
        _check_choice("activation_defaults", self.activation_defaults, SEMANTICS)
        _check_choice("dropout_kind", self.dropout_kind, DROPOUT_KINDS)
        _check_choice("dropout_placement", self.dropout_placement, DROPOUT_PLACEMENTS)
        if self.widths is not None and len(self.widths) == 0:
            raise ValueError("net.widths is an empty list; give at least one hidden width or use depth/width")
        if self.widths is not None and (self.depth, self.width) != (DEFAULT_DEPTH, DEFAULT_WIDTH):
            raise ValueError(f"net.widths {list(self.widths)} and net.depth {self.depth} / net.width {self.width} are "
                             "both set, and widths would win: set net.widths null (--model.net.widths null) to use "
                             "depth x width, or leave depth and width out")
        if self.widths is None and self.depth < 1:
            raise ValueError(f"net.depth must be >= 1, got {self.depth}")
        for w in self.hidden_widths:
            if w < 1:
                raise ValueError(f"hidden widths must be >= 1, got {self.hidden_widths}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"net.dropout must be in [0, 1), got {self.dropout}")
        if self.max_norm is not None and self.max_norm <= 0:
            raise ValueError(f"net.max_norm must be > 0, got {self.max_norm}")
        if self.bn_momentum is not None and not 0.0 <= self.bn_momentum <= 1.0:
            raise ValueError(f"net.bn_momentum must be in [0, 1] (torch convention), got {self.bn_momentum}")
        if self.bn_eps is not None and self.bn_eps <= 0:
            raise ValueError(f"net.bn_eps must be > 0, got {self.bn_eps}")

    @property
    def hidden_widths(self) -> list[int]:
        return list(self.widths) if self.widths is not None else [self.width] * self.depth

    def batch_norm(self, width: int) -> nn.BatchNorm1d:
        """A BatchNorm over ``width`` features with this config's semantics, momentum and epsilon."""
        defaults = BN_DEFAULTS[self.bn_semantics]
        momentum = defaults["momentum"] if self.bn_momentum is None else self.bn_momentum
        eps = defaults["eps"] if self.bn_eps is None else self.bn_eps
        cls = KerasBatchNorm1d if self.bn_semantics == "keras" else nn.BatchNorm1d
        return cls(width, eps=eps, momentum=momentum)

    def activation_kwargs(self, width: int) -> dict[str, Any]:
        """The activation's arguments: ``activation_args`` over the chosen library's defaults."""
        defaults = keras_activation_defaults(self.activation, width) if self.activation_defaults == "keras" else {}
        return {**defaults, **self.activation_args}

    @classmethod
    def coerce(cls, value: "MLPConfig | dict | None") -> "MLPConfig":
        """Accept a config, a dict (from YAML or a checkpoint) or None (defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"unknown net option(s) {unknown}; valid options: {sorted(known)}")
            return cls(**value)
        raise TypeError(f"net must be an MLPConfig or a dict, got {type(value).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_choice(key: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"net.{key} = {value!r} is not valid; valid choices: {', '.join(choices)}")


def _dropout_flags(cfg: MLPConfig) -> list[bool]:
    """Which hidden blocks (bottom to top) end with a dropout layer."""
    n = len(cfg.hidden_widths)
    if cfg.dropout == 0.0:
        return [False] * n
    if cfg.dropout_placement == "all":
        return [True] * n
    top = 1 if cfg.dropout_placement == "output" else cfg.dropout_top_k
    return [i >= n - top for i in range(n)]


def _norm(cfg: MLPConfig, width: int) -> nn.Module:
    if cfg.norm == "batch":
        return cfg.batch_norm(width)
    return nn.LayerNorm(width)


def hidden_block(cfg: MLPConfig, in_features: int, out_features: int, dropout: bool) -> nn.Sequential:
    """One hidden layer as a named Sequential in execution order:
    linear -> [norm] -> act -> [norm] -> [dropout] (a gated layer replaces linear + act)."""
    norm_before = cfg.norm != "none" and cfg.norm_position == "before"
    layers: "OrderedDict[str, nn.Module]" = OrderedDict()
    if is_gated(cfg.activation):
        layers["gated"] = GATED_LAYERS.get(cfg.activation)(in_features, out_features, bias=not norm_before)
        if norm_before:
            layers["norm"] = _norm(cfg, out_features)
    else:
        # BN right after the Linear subtracts the mean, so the Linear's bias would be redundant.
        layers["linear"] = nn.Linear(in_features, out_features, bias=not norm_before)
        if norm_before:
            layers["norm"] = _norm(cfg, out_features)
        layers["act"] = get_activation(cfg.activation, **cfg.activation_kwargs(out_features))
    if cfg.norm != "none" and cfg.norm_position == "after":
        layers["norm"] = _norm(cfg, out_features)
    if dropout:
        layers["dropout"] = nn.AlphaDropout(cfg.dropout) if cfg.dropout_kind == "alpha" else nn.Dropout(cfg.dropout)
    return nn.Sequential(layers)


class MLP(nn.Module):
    """A deep multilayer perceptron for classification (logits out; softmax belongs to the loss).

    Examples:
        >>> net = MLP((3, 32, 32), 10, MLPConfig(depth=20, width=100, activation="elu", kernel_init="he_normal"))
        >>> net(torch.randn(8, 3, 32, 32)).shape
        torch.Size([8, 10])
    """

    # A chain of per-row layers: MC dropout may run the part below the first dropout once
    # and repeat its output (deeptrain.nn.mc_dropout, share_prefix).
    mc_share_prefix = True

    def __init__(self, input_shape: Sequence[int], num_classes: int, config: MLPConfig | dict | None = None, **overrides: Any):
        super().__init__()
        cfg = MLPConfig.coerce(config)
        if overrides:
            cfg = MLPConfig.coerce({**cfg.to_dict(), **overrides})
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.config = cfg
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        in_features = math.prod(self.input_shape)

        self.flatten = nn.Flatten()
        self.input_norm = cfg.batch_norm(in_features) if cfg.input_norm else nn.Identity()
        widths = cfg.hidden_widths
        blocks = [
            hidden_block(cfg, n_in, n_out, dropout)
            for n_in, n_out, dropout in zip([in_features] + widths[:-1], widths, _dropout_flags(cfg))
        ]
        self.backbone = nn.Sequential(*blocks)
        self.head = nn.Linear(widths[-1], self.num_classes)
        self.reset_parameters()
        warn_if_not_self_normalizing(cfg)

    def hidden_linears(self) -> list[nn.Linear]:
        """The Linear of each hidden block, bottom to top (the gated layers' projection too)."""
        return [block.gated.proj if hasattr(block, "gated") else block.linear for block in self.backbone]

    def reset_parameters(self) -> None:
        cfg = self.config
        for linear in self.hidden_linears():
            init_linear_(linear, cfg.kernel_init, cfg.bias_init, weight_kwargs=cfg.kernel_init_args)
        init_linear_(self.head, cfg.head_init, cfg.bias_init)

    @torch.no_grad()
    def apply_max_norm_(self) -> None:
        """Rescale each hidden unit's incoming weights to an L2 norm <= max_norm (Keras' MaxNorm).

        A pruned layer (``torch.nn.utils.prune``) computes ``weight = weight_orig * weight_mask``
        before each forward pass; its trained parameter is ``weight_orig``, so that is rescaled,
        by the norm of the effective (masked) row.
        """
        if self.config.max_norm is None:
            return
        for linear in self.hidden_linears():
            # weight is (out, in): row i holds the incoming weights of unit i.
            if is_pruned(linear):
                linear.weight_orig.mul_(max_norm_scale(effective_weight(linear), self.config.max_norm))
            else:
                torch.renorm(linear.weight, p=2, dim=0, maxnorm=self.config.max_norm, out=linear.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.input_norm(self.flatten(x)))  # (B, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, num_classes)


def warn_if_not_self_normalizing(cfg: MLPConfig) -> list[str]:
    """SELU self-normalizes only under the conditions of Klambauer et al. (2017); warn when broken."""
    if cfg.activation.lower() != "selu":
        return []
    problems = []
    if cfg.kernel_init not in LECUN_INITS:
        problems.append(f"kernel_init is {cfg.kernel_init!r}, not LeCun ({' or '.join(LECUN_INITS)})")
    if cfg.norm != "none" or cfg.input_norm:
        problems.append("the network uses normalization layers")
    if cfg.dropout > 0 and cfg.dropout_kind != "alpha":
        problems.append("it uses standard dropout (use dropout_kind: alpha)")
    if problems:
        warnings.warn(
            "SELU network will not self-normalize: " + "; ".join(problems) + ". Inputs must also be standardized.",
            stacklevel=3,
        )
    return problems


def max_norm_scale(weight: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Per-row factor (out, 1) that brings each row's L2 norm to at most ``max_norm``:
    ``min(1, max_norm / (||w_i|| + 1e-7))``, as ``torch.renorm`` computes it."""
    norms = torch.linalg.vector_norm(weight, dim=1, keepdim=True)
    return torch.where(norms > max_norm, max_norm / (norms + 1e-7), torch.ones_like(norms))
