"""Weight initializers with exact Keras (and torch) semantics, looked up by name.

Every initializer is a free function ``fn_(tensor, ..., generator=None) -> tensor``
that fills ``tensor`` in place under ``no_grad`` and returns it. The Keras names
(``he_normal``, ``glorot_uniform``, ...) are thin presets of ``variance_scaling_``,
like ``keras.initializers.HeNormal`` is a preset of ``VarianceScaling``; the torch
names (``kaiming_normal``, ``xavier_uniform``, ...) keep ``torch.nn.init``'s
semantics. Pass a ``torch.Generator`` to seed a draw without touching the global RNG.

Fans follow torch's layout: a Linear weight has shape (out, in), so
``fan_in = in`` and ``fan_out = out`` (times the receptive field for convolutions).

Examples:
    >>> init_linear_(nn.Linear(300, 100), "he_normal")  # Keras HeNormal weight, zero bias
    Linear(in_features=300, out_features=100, bias=True)
    >>> init = get_initializer("variance_scaling", scale=2.0, mode="fan_avg")
    >>> init(torch.empty(100, 300), generator=torch.Generator().manual_seed(0)).shape
    torch.Size([100, 300])
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from deeptrain.nn.registry import Registry, normalize_name

Initializer = Callable[..., Tensor]

INITIALIZERS: Registry[Initializer] = Registry("initializer")

MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")

# Std of N(0, 1) truncated to [-2, 2]; dividing by it makes the variance *after*
# truncation hit the target (Keras: scipy.stats.truncnorm.std(a=-2, b=2)).
TRUNCATED_NORMAL_STD = 0.87962566103423978


def fans(tensor: Tensor) -> tuple[float, float]:
    """(fan_in, fan_out) of a weight; for 1-D tensors both are its length (as in Keras)."""
    if tensor.dim() < 2:
        n = float(tensor.numel()) if tensor.dim() == 1 else 1.0
        return n, n
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(tensor)
    return float(fan_in), float(fan_out)


def _check_choice(arg: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{arg} must be one of {', '.join(choices)}; got {value!r}")


# --------------------------------------------------------------------------- Keras


@INITIALIZERS.register("variance_scaling")
def variance_scaling_(
    tensor: Tensor,
    scale: float = 1.0,
    mode: str = "fan_in",
    distribution: str = "truncated_normal",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Keras ``VarianceScaling``: draws with variance ``scale / n``.

    ``n`` is fan_in, fan_out or (fan_in + fan_out) / 2 (at least 1). Distributions:
    ``truncated_normal``: N(0, s) cut at ±2s with s = sqrt(scale / n) / 0.8796...,
    so the variance after truncation is scale / n; ``untruncated_normal``:
    N(0, sqrt(scale / n)); ``uniform``: U(-l, l) with l = sqrt(3 * scale / n).

    Args:
        tensor: the weight to fill in place.
        scale: positive scaling factor (2 for He, 1 for Glorot and LeCun).
        mode: one of ``fan_in``, ``fan_out``, ``fan_avg``.
        distribution: one of ``truncated_normal``, ``untruncated_normal``, ``uniform``.
        generator: optional RNG, so the draw can be seeded on its own.
    """
    if not scale > 0:
        raise ValueError(f"scale must be a positive number; got {scale!r}")
    _check_choice("mode", mode, MODES)
    _check_choice("distribution", distribution, DISTRIBUTIONS)
    fan_in, fan_out = fans(tensor)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    variance = scale / max(1.0, n)
    if distribution == "truncated_normal":
        std = math.sqrt(variance) / TRUNCATED_NORMAL_STD
        # torch's trunc_normal_ takes absolute cut-offs, not multiples of std.
        return nn.init.trunc_normal_(tensor, 0.0, std, -2 * std, 2 * std, generator=generator)
    if distribution == "untruncated_normal":
        return nn.init.normal_(tensor, 0.0, math.sqrt(variance), generator=generator)
    limit = math.sqrt(3 * variance)
    return nn.init.uniform_(tensor, -limit, limit, generator=generator)


@INITIALIZERS.register("glorot_uniform")
def glorot_uniform_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Keras ``GlorotUniform`` (Glorot & Bengio 2010): U(±sqrt(6 / (fan_in + fan_out)))."""
    return variance_scaling_(tensor, 1.0, "fan_avg", "uniform", generator)


@INITIALIZERS.register("glorot_normal")
def glorot_normal_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Keras ``GlorotNormal``: truncated normal with variance 2 / (fan_in + fan_out)."""
    return variance_scaling_(tensor, 1.0, "fan_avg", "truncated_normal", generator)


@INITIALIZERS.register("he_uniform")
def he_uniform_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Keras ``HeUniform`` (He et al. 2015): U(±sqrt(6 / fan_in))."""
    return variance_scaling_(tensor, 2.0, "fan_in", "uniform", generator)


@INITIALIZERS.register("he_normal")
def he_normal_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Keras ``HeNormal``: truncated normal with variance 2 / fan_in."""
    return variance_scaling_(tensor, 2.0, "fan_in", "truncated_normal", generator)


@INITIALIZERS.register("lecun_uniform")
def lecun_uniform_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Keras ``LecunUniform`` (LeCun et al. 1998): U(±sqrt(3 / fan_in))."""
    return variance_scaling_(tensor, 1.0, "fan_in", "uniform", generator)


@INITIALIZERS.register("lecun_normal")
def lecun_normal_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Keras ``LecunNormal``: truncated normal with variance 1 / fan_in (the SELU initializer)."""
    return variance_scaling_(tensor, 1.0, "fan_in", "truncated_normal", generator)


@INITIALIZERS.register("random_normal")
def random_normal_(
    tensor: Tensor, mean: float = 0.0, stddev: float = 0.05, generator: torch.Generator | None = None
) -> Tensor:
    """Keras ``RandomNormal``: N(mean, stddev)."""
    return nn.init.normal_(tensor, mean, stddev, generator=generator)


@INITIALIZERS.register("random_uniform")
def random_uniform_(
    tensor: Tensor, minval: float = -0.05, maxval: float = 0.05, generator: torch.Generator | None = None
) -> Tensor:
    """Keras ``RandomUniform``: U(minval, maxval)."""
    return nn.init.uniform_(tensor, minval, maxval, generator=generator)


@INITIALIZERS.register("truncated_normal")
def truncated_normal_(
    tensor: Tensor, mean: float = 0.0, stddev: float = 0.05, generator: torch.Generator | None = None
) -> Tensor:
    """Keras ``TruncatedNormal``: N(mean, stddev) redrawn outside mean ± 2 stddev.

    No rescaling, so the resulting std is 0.8796... * stddev.
    """
    if not stddev > 0:
        raise ValueError(f"stddev must be a positive number; got {stddev!r}")
    lo, hi = mean - 2 * stddev, mean + 2 * stddev
    return nn.init.trunc_normal_(tensor, mean, stddev, lo, hi, generator=generator)


@INITIALIZERS.register("zeros")
def zeros_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Keras ``Zeros``: 0 everywhere."""
    return nn.init.zeros_(tensor)


@INITIALIZERS.register("ones")
def ones_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Keras ``Ones``: 1 everywhere."""
    return nn.init.ones_(tensor)


@INITIALIZERS.register("constant")
def constant_(tensor: Tensor, value: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """Keras ``Constant``: ``value`` everywhere."""
    return nn.init.constant_(tensor, value)


@INITIALIZERS.register("orthogonal")
def orthogonal_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Keras ``Orthogonal`` (Saxe et al. 2014): ``gain * Q`` with Q (semi-)orthogonal from QR of N(0, 1).

    For a square (n, n) weight the entries have variance gain^2 / n.
    """
    return nn.init.orthogonal_(tensor, gain, generator=generator)


@INITIALIZERS.register("identity")
def identity_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Keras ``Identity``: ``gain * I`` (2-D weights only; non-square gets ones on the diagonal)."""
    if tensor.dim() != 2:
        raise ValueError(f"identity needs a 2-D weight; got shape {tuple(tensor.shape)}")
    with torch.no_grad():
        return nn.init.eye_(tensor).mul_(gain)


# --------------------------------------------------------------------------- torch


@INITIALIZERS.register("xavier_uniform")
def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """torch ``xavier_uniform_``: U(±gain * sqrt(6 / (fan_in + fan_out)))."""
    return nn.init.xavier_uniform_(tensor, gain, generator=generator)


@INITIALIZERS.register("xavier_normal")
def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """torch ``xavier_normal_``: N(0, gain * sqrt(2 / (fan_in + fan_out))), untruncated."""
    return nn.init.xavier_normal_(tensor, gain, generator=generator)


@INITIALIZERS.register("kaiming_uniform")
def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """torch ``kaiming_uniform_``: U(±gain * sqrt(3 / fan)), gain = ``calculate_gain(nonlinearity, a)``.

    With the defaults (leaky_relu, a=0) gain = sqrt(2), i.e. He uniform.
    """
    _check_choice("mode", mode, MODES[:2])
    return nn.init.kaiming_uniform_(tensor, a, mode, nonlinearity, generator=generator)


@INITIALIZERS.register("kaiming_normal")
def kaiming_normal_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """torch ``kaiming_normal_``: N(0, gain / sqrt(fan)), untruncated (unlike Keras ``he_normal``)."""
    _check_choice("mode", mode, MODES[:2])
    return nn.init.kaiming_normal_(tensor, a, mode, nonlinearity, generator=generator)


@INITIALIZERS.register("uniform")
def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """torch ``uniform_``: U(a, b)."""
    return nn.init.uniform_(tensor, a, b, generator=generator)


@INITIALIZERS.register("normal")
def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """torch ``normal_``: N(mean, std)."""
    return nn.init.normal_(tensor, mean, std, generator=generator)


@INITIALIZERS.register("trunc_normal")
def trunc_normal_(
    tensor: Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """torch ``trunc_normal_``: N(mean, std) redrawn outside the *absolute* bounds [a, b]."""
    if not a < b:
        raise ValueError(f"trunc_normal needs a < b; got a={a!r}, b={b!r}")
    return nn.init.trunc_normal_(tensor, mean, std, a, b, generator=generator)


@INITIALIZERS.register("eye")
def eye_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """torch ``eye_``: the identity matrix (2-D weights only)."""
    return nn.init.eye_(tensor)


@INITIALIZERS.register("sparse")
def sparse_(
    tensor: Tensor, sparsity: float = 0.1, std: float = 0.01, generator: torch.Generator | None = None
) -> Tensor:
    """torch ``sparse_`` (Martens 2010): N(0, std) with ``ceil(sparsity * rows)`` zeros in every column.

    Re-implemented because ``torch.nn.init.sparse_`` draws the zero positions from
    the global RNG (ignoring ``generator``) in a Python loop over columns.
    """
    if tensor.dim() != 2:
        raise ValueError(f"sparse needs a 2-D weight; got shape {tuple(tensor.shape)}")
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1]; got {sparsity!r}")
    rows, cols = tensor.shape
    num_zeros = math.ceil(sparsity * rows)
    with torch.no_grad():
        tensor.normal_(0.0, std, generator=generator)
        # A random permutation of the rows of each column: argsort of uniform noise.
        noise = torch.rand(rows, cols, generator=generator, device=tensor.device)
        zero_rows = noise.argsort(dim=0)[:num_zeros]  # (num_zeros, cols)
        return tensor.scatter_(0, zero_rows, 0.0)


@INITIALIZERS.register("torch_default")
def torch_default_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """What ``nn.Linear.reset_parameters`` does to the weight: U(±1 / sqrt(fan_in)).

    That is ``kaiming_uniform_(a=sqrt(5))``: gain^2 = 2 / (1 + 5), bound = gain * sqrt(3 / fan_in).
    For the matching bias use ``torch_default_bias_`` or ``init_linear_(bias_init="torch_default")``.
    """
    if tensor.dim() < 2:
        raise ValueError(
            f"torch_default needs a weight (>= 2-D) to read fan_in from; got shape {tuple(tensor.shape)}; "
            "for a bias use init_linear_(layer, bias_init='torch_default')"
        )
    return nn.init.kaiming_uniform_(tensor, a=math.sqrt(5), generator=generator)


def torch_default_bias_(bias: Tensor, fan_in: float, generator: torch.Generator | None = None) -> Tensor:
    """What ``nn.Linear.reset_parameters`` does to the bias: U(±1 / sqrt(fan_in)) with the weight's fan_in."""
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return nn.init.uniform_(bias, -bound, bound, generator=generator)


# --------------------------------------------------------------------------- lookups


def get_initializer(spec: str | Initializer, **kwargs: Any) -> Initializer:
    """Returns ``init(tensor, generator=None) -> tensor`` that fills ``tensor`` in place.

    Args:
        spec: a registered name (``"he_normal"``) or a callable ``tensor -> tensor``.
        **kwargs: arguments of the initializer, bound now (e.g. ``scale=2.0``).

    Raises:
        ValueError: unknown name (the message lists valid names), arguments the
            initializer does not accept, or a bad value (checked now, like a Keras
            constructor, by a dry run on a tiny tensor with a private generator).
    """
    if isinstance(spec, str):
        fn, name = INITIALIZERS.get(spec), normalize_name(spec)
    elif callable(spec):
        fn, name = spec, getattr(spec, "__name__", repr(spec))
    else:
        raise TypeError(f"initializer must be a name or a callable; got {spec!r}")
    _check_kwargs(fn, name, kwargs)
    init = BoundInitializer(name, fn, kwargs)
    if isinstance(spec, str):
        init.dry_run()
    return init


class BoundInitializer:
    """An initializer function with its arguments bound; describes its own config (like Keras)."""

    def __init__(self, name: str, fn: Initializer, kwargs: dict[str, Any]):
        self.name, self.fn, self.kwargs = name, fn, dict(kwargs)

    def __call__(self, tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
        with torch.no_grad():
            if generator is None:  # user callables need not accept a generator
                return self.fn(tensor, **self.kwargs)
            return self.fn(tensor, generator=generator, **self.kwargs)

    def dry_run(self) -> None:
        """Surfaces bad argument values now rather than at the first layer; leaves the global RNG alone."""
        try:
            self(torch.empty(4, 4), generator=torch.Generator().manual_seed(0))
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"initializer {self.name!r} rejected arguments {self.kwargs}: {err}") from err

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.kwargs}

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        return f"{type(self).__name__}({self.name!r}{args})"


def init_linear_(
    linear: nn.Linear,
    weight_init: str | Initializer = "torch_default",
    bias_init: str | Initializer = "zeros",
    weight_kwargs: dict[str, Any] | None = None,
    bias_kwargs: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
) -> nn.Linear:
    """Initializes a Linear's weight and bias in place; returns the layer.

    ``bias_init="torch_default"`` reproduces nn.Linear's bias, U(±1 / sqrt(fan_in)).
    With both left at ``"torch_default"`` this is exactly ``linear.reset_parameters()``.
    """
    get_initializer(weight_init, **(weight_kwargs or {}))(linear.weight, generator)
    if linear.bias is None:
        return linear
    if isinstance(bias_init, str) and normalize_name(bias_init) == "torch_default":
        if bias_kwargs:
            raise ValueError(f"bias_init 'torch_default' takes no arguments; got {sorted(bias_kwargs)}")
        fan_in, _ = fans(linear.weight)
        with torch.no_grad():
            torch_default_bias_(linear.bias, fan_in, generator)
    else:
        get_initializer(bias_init, **(bias_kwargs or {}))(linear.bias, generator)
    return linear


def _check_kwargs(fn: Callable, name: str, kwargs: dict[str, Any]) -> None:
    """Raises a ValueError naming the arguments ``fn`` does not accept and the ones it does."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # no signature to check against
        return
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    accepted = [a for a in accepted if a != "generator"]
    bad = sorted(set(kwargs) - set(accepted))
    if bad:
        raise ValueError(
            f"initializer {name!r} got unexpected argument(s) {', '.join(bad)}; "
            f"accepted: {', '.join(accepted) or '(none)'}"
        )
