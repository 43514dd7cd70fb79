"""Monte Carlo dropout (Gal & Ghahramani, 2016): predict with dropout left on.

T stochastic passes of a dropout network sample T thinned sub-networks; the mean of
their softmax outputs is a better prediction than the single deterministic pass, and
their spread says how unsure the network is. Done right means:

- only the dropout layers sample; every other layer (BatchNorm above all) runs in eval
  mode, with its running statistics, which it must not update (Keras users force
  ``training=True`` on the whole model and silently turn BN into batch statistics);
- nothing about the model changes: weights, BN buffers and every module's
  ``training`` flag are exactly as before, whatever they were;
- the T passes are a few large batched forwards, not T Python calls: the input block
  is repeated T times along the batch, and as dropout draws an independent mask for
  every element, each copy is an independent sample. Batching is only this simple
  because BN is in eval mode: in train mode it would mix the copies;
- for a chain of per-row layers (the MLP), the rows are better repeated at the first
  dropout layer (``share_prefix``): what comes before it is deterministic and runs once.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional

import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

# Dropout, Dropout1d/2d/3d, AlphaDropout and FeatureAlphaDropout all derive from _DropoutNd.
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (_DropoutNd,)

# Rows per forward pass when chunk_size is not given. Repeating the *input* on a CPU, a block
# must stay cache-sized: 1,000 CIFAR rows (3,072 floats each) ran as fast as a loop of T passes,
# 40,000 rows 1.8x slower (benchmarks/mc_dropout.py --chunk-sizes). Repeating at the first
# dropout layer (share_prefix) copies narrow hidden rows, and an accelerator wants few large
# launches: both take large blocks.
CPU_INPUT_BLOCK_FLOATS = 4 * 2**20  # 16 MB of float32: 1,365 CIFAR rows, 5,349 Fashion-MNIST rows
LARGE_CHUNK_SIZE = 40_000  # about 4M activations of width 100 (16 MB in float32) per layer


def default_chunk_size(device: torch.device, row_numel: int, share_prefix: bool) -> int:
    if torch.device(device).type != "cpu" or share_prefix:
        return LARGE_CHUNK_SIZE
    return max(1, CPU_INPUT_BLOCK_FLOATS // max(1, row_numel))


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """The dropout layers of ``model`` that actually drop something (``p > 0``)."""
    return [m for m in model.modules() if isinstance(m, DROPOUT_TYPES) and m.p > 0]


def has_dropout(model: nn.Module) -> bool:
    return bool(dropout_modules(model))


@contextlib.contextmanager
def mc_dropout_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Every dropout layer in train mode, every other module in eval mode; all flags restored on exit.

    Examples:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5)).train()
        >>> with mc_dropout_mode(net):
        ...     [m.training for m in net]
        [False, False, True]
        >>> [m.training for m in net]
        [True, True, True]
    """
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        for m in dropout_modules(model):
            m.train()
        yield model
    finally:
        for m, flag in flags:  # module by module: eval()/train() would overwrite mixed states
            m.training = flag


def _device_of(model: nn.Module, x: torch.Tensor) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), x)
    return tensor.device


@contextlib.contextmanager
def _seeded(seed: Optional[int], device: torch.device) -> Iterator[None]:
    """Seed the dropout masks in a forked RNG, so the caller's random stream is not disturbed."""
    if seed is None:
        yield
        return
    accelerator = device.type != "cpu"
    devices = [device.index or 0] if accelerator else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if accelerator else "cuda"):
        torch.default_generator.manual_seed(int(seed))
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(int(seed))
        yield


def _block_sizes(n: int, samples: int, chunk_size: int) -> tuple[int, int]:
    """(images per block, copies per forward) so that one forward has at most ~chunk_size rows."""
    images = max(1, min(n, chunk_size // samples))
    copies = max(1, min(samples, chunk_size // images))
    return images, copies


def _repeat(x: torch.Tensor, k: int) -> torch.Tensor:
    return x.repeat(k, *([1] * (x.dim() - 1)))  # (k*b, ...): copy j is rows j*b .. j*b+b-1


class _RepeatAtFirstDropout:
    """Forward pre-hooks on every dropout layer: the first one to run repeats its input k times.

    The deterministic layers before it then run once per input instead of once per copy.
    """

    def __init__(self, model: nn.Module):
        self.copies, self.pending = 1, False
        self.handles = [m.register_forward_pre_hook(self._hook) for m in dropout_modules(model)]

    def _hook(self, module: nn.Module, args: tuple) -> Optional[tuple]:
        if not self.pending:
            return None
        self.pending = False
        return (_repeat(args[0], self.copies), *args[1:])

    def __call__(self, model: nn.Module, xb: torch.Tensor, k: int) -> torch.Tensor:
        self.copies, self.pending = k, True
        logits = model(xb)
        if self.pending:
            raise RuntimeError("share_prefix: no dropout layer ran in the forward pass")
        return logits

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@contextlib.contextmanager
def _forward_copies(model: nn.Module, share_prefix: bool) -> Iterator[Callable[[torch.Tensor, int], torch.Tensor]]:
    """A function ``(xb, k) -> logits (k*b, C)`` of k stochastic copies of the block xb."""
    if not share_prefix:
        yield lambda xb, k: model(_repeat(xb, k))
        return
    repeater = _RepeatAtFirstDropout(model)
    try:
        yield lambda xb, k: repeater(model, xb, k)
    finally:
        repeater.remove()


def _sample_block(forward: Callable[[torch.Tensor, int], torch.Tensor], xb: torch.Tensor, samples: int,
                  copies: int) -> torch.Tensor:
    """Softmax outputs of ``samples`` stochastic passes over one block: (samples, b, C)."""
    out = []
    for start in range(0, samples, copies):
        k = min(copies, samples - start)
        logits = forward(xb, k)  # (k*b, C)
        out.append(logits.float().softmax(dim=-1).view(k, xb.shape[0], -1))
    return torch.cat(out)  # (samples, b, C)


def _check_args(model: nn.Module, samples: int, chunk_size: Optional[int]) -> None:
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if not has_dropout(model):
        raise ValueError(
            f"{type(model).__name__} has no dropout layer with p > 0 (looked for {[t.__name__ for t in DROPOUT_TYPES]} "
            "and subclasses): MC dropout would repeat the deterministic prediction"
        )


def _blocks(model: nn.Module, x: torch.Tensor, samples: int, chunk_size: Optional[int], seed: Optional[int],
            share_prefix: Optional[bool]) -> Iterator[torch.Tensor]:
    """(T, b, C) softmax outputs, block by block, in MC mode; modes restored when exhausted."""
    _check_args(model, samples, chunk_size)
    if share_prefix is None:
        share_prefix = bool(getattr(model, "mc_share_prefix", False))
    device = _device_of(model, x)
    x = x.to(device)
    chunk_size = chunk_size or default_chunk_size(device, x[0].numel() if len(x) else 1, share_prefix)
    images, copies = _block_sizes(len(x), samples, chunk_size)
    with mc_dropout_mode(model), _seeded(seed, device), _forward_copies(model, share_prefix) as forward:
        for xb in x.split(images):
            yield _sample_block(forward, xb, samples, copies)


@torch.no_grad()
def mc_sample(model: nn.Module, x: torch.Tensor, samples: int = 100, chunk_size: Optional[int] = None,
              seed: Optional[int] = None, share_prefix: Optional[bool] = None) -> torch.Tensor:
    """All ``samples`` MC-dropout softmax outputs of ``model`` (which returns logits): (samples, N, C).

    Args and behaviour as :func:`mc_predict`, which reduces this without keeping it.
    """
    return torch.cat(list(_blocks(model, x, samples, chunk_size, seed, share_prefix)), dim=1)


@torch.no_grad()
def mc_predict(model: nn.Module, x: torch.Tensor, samples: int = 100, chunk_size: Optional[int] = None,
               seed: Optional[int] = None, share_prefix: Optional[bool] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of the class probabilities over ``samples`` MC-dropout passes.

    .. math::
        \\bar p(x) = \\frac{1}{T} \\sum_{t=1}^T \\mathrm{softmax}(f_{\\theta \\odot m_t}(x)),
        \\qquad \\sigma(x) = \\sqrt{\\frac{1}{T} \\sum_t (p_t(x) - \\bar p(x))^2}

    (the population std, as NumPy's ``std``). ``model`` may be any module that maps ``x``
    to logits and contains dropout; it is used as it is (a :class:`Classifier` takes raw
    pixels and normalizes them itself).

    Args:
        model: the network; its weights, buffers and train/eval flags are left untouched.
        x: a batch of inputs (N, ...), moved to the model's device.
        samples: T, the number of stochastic passes.
        chunk_size: at most this many rows (inputs x copies) go through one forward pass;
            the memory bound. With N * T <= chunk_size it is a single forward. Default:
            40,000, except when the input itself is repeated on a CPU: 16 MB of input
            rows (1,365 CIFAR-10 images), which keeps each block in cache.
        seed: seeds the dropout masks (in a forked RNG, so the caller's stream is not
            disturbed); the same seed and chunk_size give the same result.
        share_prefix: repeat the rows at the first dropout layer that runs instead of at
            the input, so the deterministic layers below it run once, not T times (with
            dropout only before the output layer, MC costs about one forward). Valid when
            everything before that layer acts on each row alone and feeds only into it (a
            chain, as the MLP; not a skip connection around the dropout). Default: the
            model's ``mc_share_prefix`` attribute, else False.

    Returns:
        ``(mean, std)``, both (N, C) float32.

    Raises:
        ValueError: if ``samples`` or ``chunk_size`` < 1, or the model has no active dropout layer.

    Examples:
        >>> net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3))
        >>> mean, std = mc_predict(net, torch.randn(5, 8), samples=20, seed=0)
        >>> mean.shape, bool(torch.allclose(mean.sum(-1), torch.ones(5)))
        (torch.Size([5, 3]), True)
    """
    means, stds = [], []
    for probs in _blocks(model, x, samples, chunk_size, seed, share_prefix):  # (T, b, C), b * T <= chunk_size
        std, mean = torch.std_mean(probs, dim=0, correction=0)
        means.append(mean)
        stds.append(std)
    return torch.cat(means), torch.cat(stds)
