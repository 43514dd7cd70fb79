"""Activation functions and gated linear units, looked up by name.

``ACTIVATIONS`` maps names to element-wise activation factories
``(**kwargs) -> nn.Module``; ``GATED_LAYERS`` maps names to gated linear units
``(in_features, out_features, bias=True) -> nn.Module``, which replace a
``Linear + activation`` pair. ``get_activation`` accepts a name, a module class,
a module instance or a plain callable, like timm's ``get_act_layer``.
Keras's names are registered as aliases (``hard_swish``, ``hard_silu``, ``relu6``, ...);
:func:`keras_activation_defaults` gives Keras's default arguments where they differ from
torch's (``leaky_relu``: slope 0.2 against torch's 0.01).

Examples:
    >>> get_activation("leaky_relu", negative_slope=0.2)
    LeakyReLU(negative_slope=0.2)
    >>> SwiGLU(16, 8)(torch.randn(4, 16)).shape
    torch.Size([4, 8])
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deeptrain.nn.registry import Registry, normalize_name

ActivationSpec = Union[str, type, nn.Module, Callable[[Tensor], Tensor], None]

ACTIVATIONS: Registry[Callable[..., nn.Module]] = Registry("activation")
GATED_LAYERS: Registry[type[nn.Module]] = Registry("gated layer")

# Output range of the saturating activations: an activation-statistics callback
# counts units stuck near these bounds, where the gradient vanishes.
SATURATING_BOUNDS: dict[str, tuple[float, float]] = {
    "sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "hard_sigmoid": (0.0, 1.0), "hard_tanh": (-1.0, 1.0),
}

# Activations whose output is exactly zero only where their gradient is zero too,
# so a unit that outputs zero on every input is "dead" (it will never learn again).
# hardswish is flat at zero for x <= -3.
RELU_LIKE: frozenset[str] = frozenset({"relu", "relu6", "relu2", "hardswish"})

# Module class -> canonical registry name (the first name given), for diagnostics.
_CANONICAL: dict[type, str] = {}


# --------------------------------------------------------------------------- modules


class SwishBeta(nn.Module):
    """Swish with a learnable slope (Ramachandran et al. 2017, "Searching for Activation Functions").

    ``f(x) = x * sigmoid(beta * x)``: beta = 1 gives SiLU, beta -> inf tends to ReLU,
    beta = 0 gives the linear x / 2. One beta is learned for the whole layer.

    Args:
        beta: initial value of the learnable beta.
    """

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.beta * x)

    def extra_repr(self) -> str:
        return f"beta={self.beta.item():.4g}"


class SquaredReLU(nn.Module):
    """Squared ReLU (So et al. 2021, "Primer"): ``f(x) = max(0, x)^2``."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x).square()


class Lambda(nn.Module):
    """Wraps a plain function ``Tensor -> Tensor`` (e.g. ``torch.tanh``) as a module."""

    def __init__(self, fn: Callable[[Tensor], Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return _callable_name(self.fn)


class GLU(nn.Module):
    """Gated linear unit (Dauphin et al. 2017; variants: Shazeer 2020, "GLU Variants Improve Transformer").

    ``a, b = split(x W + c)`` into halves, then ``f(x) = gate(a) * b``. One Linear of
    width ``2 * out_features`` computes both halves; it is exposed as ``.proj`` so
    initializers can reach ``.proj.weight``.

    Args:
        in_features: input width.
        out_features: output width (the Linear inside is twice as wide).
        bias: whether the Linear has a bias.
        gate: the gate function; sigmoid gives the original GLU.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        gate: Callable[[Tensor], Tensor] = torch.sigmoid,
    ):
        super().__init__()
        self.proj = nn.Linear(in_features, 2 * out_features, bias=bias)
        self.gate = gate

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.proj(x).chunk(2, dim=-1)  # (B, out) each
        return self.gate(a) * b

    def extra_repr(self) -> str:
        return f"gate={_callable_name(self.gate)}"


class SwiGLU(GLU):
    """GLU gated by Swish: ``f(x) = silu(x W) * (x V)`` (Shazeer 2020)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias, gate=F.silu)


class GEGLU(GLU):
    """GLU gated by GELU: ``f(x) = gelu(x W) * (x V)`` (Shazeer 2020)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias, gate=F.gelu)


class ReGLU(GLU):
    """GLU gated by ReLU: ``f(x) = relu(x W) * (x V)`` (Shazeer 2020)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias, gate=F.relu)


# --------------------------------------------------------------------------- registries


def _identity() -> nn.Module:
    # nn.Identity swallows any argument; this factory rejects them.
    return nn.Identity()


def _add(registry: Registry, factory: Callable, *names: str, module_type: type | None = None) -> None:
    registry.register(*names)(factory)
    _CANONICAL[module_type or factory] = normalize_name(names[0])


_add(ACTIVATIONS, _identity, "identity", "linear", module_type=nn.Identity)
_add(ACTIVATIONS, nn.Sigmoid, "sigmoid", "logistic")
_add(ACTIVATIONS, nn.Tanh, "tanh")
_add(ACTIVATIONS, nn.ReLU, "relu")
_add(ACTIVATIONS, nn.ReLU6, "relu6")  # Keras's relu6: min(max(0, x), 6)
_add(ACTIVATIONS, nn.LeakyReLU, "leaky_relu")
_add(ACTIVATIONS, nn.RReLU, "rrelu")
_add(ACTIVATIONS, nn.PReLU, "prelu")
_add(ACTIVATIONS, nn.ELU, "elu")
_add(ACTIVATIONS, nn.SELU, "selu")
_add(ACTIVATIONS, nn.CELU, "celu")
_add(ACTIVATIONS, nn.GELU, "gelu")
_add(ACTIVATIONS, nn.SiLU, "silu", "swish")
_add(ACTIVATIONS, SwishBeta, "swish_beta")
_add(ACTIVATIONS, nn.Mish, "mish")
_add(ACTIVATIONS, nn.Softplus, "softplus")
_add(ACTIVATIONS, SquaredReLU, "relu2", "squared_relu")
_add(ACTIVATIONS, nn.Hardswish, "hardswish", "hard_swish", "hard_silu")  # Keras 3: hard_silu, alias hard_swish
# Keras 3's hard_sigmoid is relu6(x + 3) / 6, torch's Hardsigmoid (Keras 2's was clip(0.2 x + 0.5, 0, 1)).
_add(ACTIVATIONS, nn.Hardsigmoid, "hard_sigmoid", "hardsigmoid")
_add(ACTIVATIONS, nn.Softsign, "softsign")
_add(ACTIVATIONS, nn.Hardtanh, "hard_tanh", "hardtanh")
_add(ACTIVATIONS, nn.LogSigmoid, "log_sigmoid", "logsigmoid")
_add(ACTIVATIONS, nn.Tanhshrink, "tanh_shrink", "tanhshrink")
# Keras's threshold (0.5) is torch's lambd (0.5)
_add(ACTIVATIONS, nn.Softshrink, "soft_shrink", "softshrink")
_add(ACTIVATIONS, nn.Hardshrink, "hard_shrink", "hardshrink")

_add(GATED_LAYERS, GLU, "glu")
_add(GATED_LAYERS, SwiGLU, "swiglu")
_add(GATED_LAYERS, GEGLU, "geglu")
_add(GATED_LAYERS, ReGLU, "reglu")


# --------------------------------------------------------------------------- lookups


def get_activation(spec: ActivationSpec, **kwargs: Any) -> nn.Module:
    """Builds an element-wise activation module from a spec.

    Args:
        spec: a registered name (``"relu"``), an ``nn.Module`` subclass (built with
            ``kwargs``), an ``nn.Module`` instance (returned as is), a plain callable
            such as ``torch.tanh`` (wrapped in ``Lambda``, ``kwargs`` bound to it), or
            ``None`` (identity).
        **kwargs: arguments of the activation, e.g. ``negative_slope=0.2``.

    Raises:
        ValueError: unknown name (the message lists valid names), a gated layer name
            (those need widths: use ``get_gated_layer``), or arguments the activation
            does not accept.
    """
    if spec is None:
        spec = "identity"
    if isinstance(spec, str):
        return _build(_lookup_activation(spec), normalize_name(spec), kwargs)
    if isinstance(spec, nn.Module):
        if kwargs:
            raise ValueError(f"activation {spec!r} is already built; got extra arguments {sorted(kwargs)}")
        return spec
    if isinstance(spec, type) and issubclass(spec, nn.Module):
        return _build(spec, spec.__name__, kwargs)
    if callable(spec):
        _check_kwargs(spec, _callable_name(spec), kwargs)
        return Lambda(functools.partial(spec, **kwargs) if kwargs else spec)
    raise TypeError(f"activation must be a name, an nn.Module class or instance, or a callable; got {spec!r}")


def get_gated_layer(spec: str | type[nn.Module], in_features: int, out_features: int, bias: bool = True) -> nn.Module:
    """Builds a gated linear unit (``"swiglu"``, ``"geglu"``, ...) mapping (B, in) -> (B, out)."""
    cls = GATED_LAYERS.get(spec) if isinstance(spec, str) else spec
    return cls(in_features, out_features, bias=bias)


def is_gated(spec: Any) -> bool:
    """Whether ``spec`` (a name, class or instance) is a gated linear unit rather than an activation."""
    if isinstance(spec, str):
        return spec in GATED_LAYERS
    return isinstance(spec, GLU) or (isinstance(spec, type) and issubclass(spec, GLU))


def activation_name(module: nn.Module) -> str | None:
    """Canonical registry name of an activation or gated module (``nn.Sigmoid()`` -> ``"sigmoid"``), else None."""
    for cls in type(module).__mro__:
        if cls in _CANONICAL:
            return _CANONICAL[cls]
    return None


def keras_activation_defaults(spec: ActivationSpec, width: int | None = None) -> dict[str, Any]:
    """Keras 3's default arguments of an activation, where they differ from torch's (else ``{}``).

    - ``leaky_relu``: ``negative_slope=0.2``, the default of Keras's function
      ``keras.activations.leaky_relu``, which ``Dense(activation="leaky_relu")`` uses. Keras's
      *layer* ``LeakyReLU()`` defaults to 0.3 (the book's "0.3 for leaky ReLU"): for it, pass
      ``negative_slope=0.3``. torch's default is 0.01. (Keras 2 called the slope ``alpha``.)
    - ``prelu``: Keras's ``PReLU()`` learns one slope per unit, initialized at 0
      (``alpha_initializer="zeros"``): ``num_parameters=width, init=0.0``; torch's learns one
      shared slope from 0.25.

    Every other registered activation already has Keras's defaults (``elu`` alpha 1,
    ``gelu`` exact, ``selu``'s constants, ...).
    """
    if not isinstance(spec, str) or spec not in ACTIVATIONS:
        return {}
    factory = ACTIVATIONS.get(spec)
    if factory is nn.LeakyReLU:
        return {"negative_slope": 0.2}
    if factory is nn.PReLU:
        return {"init": 0.0} if width is None else {"num_parameters": width, "init": 0.0}
    return {}


def _lookup_activation(name: str) -> Callable[..., nn.Module]:
    if name in ACTIVATIONS:
        return ACTIVATIONS.get(name)
    gated = ", ".join(GATED_LAYERS.names())
    if name in GATED_LAYERS:
        raise ValueError(
            f"{name!r} is a gated layer, not an element-wise activation: it replaces Linear + activation "
            f"and needs widths; build it with get_gated_layer({name!r}, in_features, out_features) "
            f"(gated layers: {gated})"
        )
    raise ValueError(
        f"unknown activation {name!r}; valid choices: {', '.join(ACTIVATIONS.names())}; "
        f"gated layers (in place of Linear + activation): {gated}"
    )


def _build(factory: Callable[..., nn.Module], name: str, kwargs: dict[str, Any]) -> nn.Module:
    _check_kwargs(factory, name, kwargs)
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"activation {name!r} rejected arguments {kwargs}: {err}") from err


def _check_kwargs(fn: Callable, name: str, kwargs: dict[str, Any]) -> None:
    """Raises a ValueError naming the arguments ``fn`` does not accept (a TypeError deep in torch says less)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins such as torch.tanh have no signature
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if isinstance(fn, type):
        accepted = [n for n in accepted if n != "self"]
    else:
        accepted = accepted[1:]  # a plain function's first argument is the input tensor
    bad = sorted(set(kwargs) - set(accepted))
    if bad:
        raise ValueError(
            f"activation {name!r} got unexpected argument(s) {', '.join(bad)}; "
            f"accepted: {', '.join(accepted) or '(none)'}"
        )


def _callable_name(fn: Callable) -> str:
    if isinstance(fn, functools.partial):
        args = ", ".join(f"{k}={v!r}" for k, v in fn.keywords.items())
        return f"{_callable_name(fn.func)}({args})"
    return getattr(fn, "__qualname__", None) or repr(fn)
