"""Activation statistics per hidden layer on a fixed probe batch: the signal that vanishes, explodes,
saturates or dies, and SELU's self-normalization, as numbers.

For every activation module of the network (each hidden block's ``act``, or its gated layer)
a forward hook records its input ``z`` (the pre-activation: the Linear's output, or the
norm's when the norm comes before the activation) and its output ``a``. From them:

- ``mean``, ``std``: of ``a`` over the probe batch and all units;
- ``saturated``: for sigmoid/tanh (``SATURATING_BOUNDS``), the fraction of outputs within
  ``saturation_tol`` of a bound, where the derivative is almost 0;
- ``preact_beyond``: the fraction of ``|z| > preact_threshold`` (for any activation);
- ``dead``: for ReLU-like activations (``RELU_LIKE``), the fraction of units whose output
  is 0 for every example of the probe batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Literal, Optional

import lightning as L
import torch
from torch import Tensor, nn

from deeptrain.callbacks.grad_norms import layer_labels, network_of
from deeptrain.callbacks.tensorboard_layout import add_figure, add_multiline_charts, log_scalars
from deeptrain.nn.activations import RELU_LIKE, SATURATING_BOUNDS, activation_name, is_gated

MODES = ("train", "eval")


@dataclass
class LayerStats:
    """Statistics of one activation layer on one batch (None where they do not apply)."""

    mean: float
    std: float
    preact_std: Optional[float]
    preact_beyond: Optional[float]
    saturated: Optional[float]
    dead: Optional[float]


def activation_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(label, module) of every activation or gated layer in ``model``, in module order.

    ``Identity`` is skipped: it stands in for absent layers (e.g. no input norm).
    """
    found = [(name, m) for name, m in network_of(model).named_modules() if activation_name(m) not in (None, "identity")]
    return list(zip(layer_labels([name for name, _ in found]), (m for _, m in found)))


@contextlib.contextmanager
def record_activations(layers: list[tuple[str, nn.Module]]) -> Iterator[dict[str, tuple[Optional[Tensor], Tensor]]]:
    """Forward hooks filling ``{label: (z, a)}`` with each layer's detached input and output."""
    records: dict[str, tuple[Optional[Tensor], Tensor]] = {}

    def hook(label: str, gated: bool):
        def fn(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            z = None if gated else inputs[0].detach()
            records[label] = (z, output.detach())

        return fn

    handles = [m.register_forward_hook(hook(label, is_gated(m))) for label, m in layers]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def summarize(z: Optional[Tensor], a: Tensor, kind: Optional[str], saturation_tol: float = 0.02,
              preact_threshold: float = 3.0) -> LayerStats:
    """Statistics of one layer's pre-activation ``z`` and activation ``a`` (B, units)."""
    a = a.float().flatten(1)
    stats = [a.mean(), a.std()]
    if z is not None:
        z = z.float().flatten(1)
        stats += [z.std(), (z.abs() > preact_threshold).float().mean()]
    if kind in SATURATING_BOUNDS:
        low, high = SATURATING_BOUNDS[kind]
        stats.append(((a - low < saturation_tol) | (high - a < saturation_tol)).float().mean())
    if kind in RELU_LIKE:
        stats.append((a == 0).all(dim=0).float().mean())  # a unit silent on every example
    values = iter(torch.stack(stats).tolist())  # one host sync per layer
    mean, std = next(values), next(values)
    preact_std, beyond = (next(values), next(values)) if z is not None else (None, None)
    saturated = next(values) if kind in SATURATING_BOUNDS else None
    dead = next(values) if kind in RELU_LIKE else None
    return LayerStats(mean, std, preact_std, beyond, saturated, dead)


@contextlib.contextmanager
def preserved_state(model: nn.Module, mode: str) -> Iterator[None]:
    """Run ``model`` in ``mode`` and leave no trace: every module's train/eval flag, every buffer
    (batch-norm running statistics) and the global RNG states are restored on exit."""
    if mode not in MODES:
        raise ValueError(f"mode = {mode!r} is not valid; valid choices: {', '.join(MODES)}")
    flags = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    devices = [d.index for d in {b.device for b in model.buffers()} | {p.device for p in model.parameters()}
               if d.type == "cuda"]
    with torch.random.fork_rng(devices=devices):  # dropout masks must not shift the training stream
        model.train(mode == "train")
        try:
            yield
        finally:
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
            for module, flag in flags:
                module.training = flag


def probe_statistics(model: nn.Module, x: Tensor, mode: str = "train", saturation_tol: float = 0.02,
                     preact_threshold: float = 3.0) -> dict[str, LayerStats]:
    """{layer label: statistics} of every activation layer of ``model`` on the batch ``x``.

    ``mode="train"`` runs the forward as training does (batch norm on batch statistics,
    dropout on) without changing anything; ``"eval"`` as inference does.
    """
    layers = activation_layers(model)
    with preserved_state(model, mode), torch.no_grad(), record_activations(layers) as records:
        model(x)
    kinds = {label: activation_name(m) for label, m in layers}
    return {label: summarize(*records[label], kinds[label], saturation_tol, preact_threshold) for label in records}


class ActivationStatistics(L.Callback):
    """Logs each hidden layer's activation statistics on a fixed probe batch of validation data.

    The probe batch is the first ``probe_size`` validation examples. It is measured at the
    start of training and every ``every_n_epochs`` epoch ends; the model's train/eval flags,
    its buffers and the RNG stream of training are left exactly as they were.

    Logged tags (one chart per quantity in TensorBoard's Custom Scalars tab):
    ``act_mean/<layer>``, ``act_std/<layer>``, ``preact_std/<layer>``,
    ``preact_beyond/<layer>``, ``act_saturated/<layer>`` (sigmoid, tanh) and
    ``act_dead/<layer>`` (ReLU-like); with ``log_figure``, an image
    ``activations/profile`` of the statistics against depth.

    Args:
        probe_size: examples in the probe batch.
        every_n_epochs: measure at every n-th epoch end.
        at_train_start: also measure before the first step.
        mode: ``train`` (batch norm on batch statistics, dropout on, as in training) or
            ``eval`` (running statistics, no dropout, as at inference).
        saturation_tol: distance to a sigmoid/tanh bound counted as saturated.
        preact_threshold: ``|z|`` above which ``preact_beyond`` counts a pre-activation.
        log_figure: also draw the profile against depth as a TensorBoard image.
        probe: a batch of inputs to use instead of the validation data's first examples.

    Examples:
        >>> trainer = L.Trainer(callbacks=[ActivationStatistics(probe_size=512)])
    """

    def __init__(self, probe_size: int = 512, every_n_epochs: int = 1, at_train_start: bool = True,
                 mode: Literal["train", "eval"] = "train", saturation_tol: float = 0.02,
                 preact_threshold: float = 3.0, log_figure: bool = True, probe: Optional[Tensor] = None):
        if probe_size < 1 or every_n_epochs < 1:
            raise ValueError(f"probe_size and every_n_epochs must be >= 1, got {probe_size}, {every_n_epochs}")
        if mode not in MODES:
            raise ValueError(f"mode = {mode!r} is not valid; valid choices: {', '.join(MODES)}")
        self.probe_size, self.every_n_epochs, self.at_train_start = probe_size, every_n_epochs, at_train_start
        self.mode, self.saturation_tol, self.preact_threshold = mode, saturation_tol, preact_threshold
        self.log_figure = log_figure
        self.probe: Optional[Tensor] = probe
        self.history: list[dict[str, Any]] = []  # [{"epoch", "step", "layers": {label: LayerStats}}]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.probe is None:
            with torch.random.fork_rng(devices=[]):  # a shuffled loader would draw a seed
                self.probe = probe_batch(trainer, self.probe_size)
        self.probe = self.probe.to(pl_module.device)
        add_multiline_charts(trainer, "activations", {
            "activation std per layer": [r"^act_std/"],
            "activation mean per layer": [r"^act_mean/"],
            "pre-activation std per layer": [r"^preact_std/"],
            f"fraction of |z| > {self.preact_threshold:g}": [r"^preact_beyond/"],
            "fraction saturated (sigmoid/tanh)": [r"^act_saturated/"],
            "fraction of dead units (ReLU-like)": [r"^act_dead/"],
        })
        if self.at_train_start:
            self.measure(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.measure(trainer, pl_module)

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, LayerStats]:
        stats = probe_statistics(pl_module, self.probe, self.mode, self.saturation_tol, self.preact_threshold)
        step = trainer.global_step
        self.history.append({"epoch": trainer.current_epoch, "step": step, "layers": stats})
        log_scalars(trainer, stats_to_metrics(stats), step)
        if self.log_figure and trainer.is_global_zero:
            figure = plot_profile(stats, title=f"epoch {trainer.current_epoch}, step {step}")
            add_figure(trainer, "activations/profile", figure, step)
        return stats


def stats_to_metrics(stats: dict[str, LayerStats]) -> dict[str, float]:
    """``{"act_std/<layer>": ...}`` for every statistic that applies to a layer."""
    names = {"mean": "act_mean", "std": "act_std", "preact_std": "preact_std", "preact_beyond": "preact_beyond",
             "saturated": "act_saturated", "dead": "act_dead"}
    return {f"{names[key]}/{label}": value for label, s in stats.items()
            for key, value in asdict(s).items() if value is not None}


def probe_batch(trainer: L.Trainer, size: int) -> Tensor:
    """The first ``size`` inputs of the validation data (the DataModule's, else the trainer's)."""
    datamodule = getattr(trainer, "datamodule", None)
    loaders = datamodule.val_dataloader() if datamodule is not None else trainer.val_dataloaders
    if loaders is None:
        raise ValueError("ActivationStatistics needs validation data for its probe batch; the trainer has none")
    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    parts, n = [], 0
    for batch in loader:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        parts.append(x[: size - n])
        n += len(parts[-1])
        if n >= size:
            break
    if not parts:
        raise ValueError("ActivationStatistics: the validation loader yielded no batch")
    return torch.cat(parts)


def plot_profile(stats: dict[str, LayerStats], title: str = "") -> Any:
    """A figure of each statistic against depth (one point per activation layer)."""
    from matplotlib.figure import Figure

    depth = range(1, len(stats) + 1)
    layers = list(stats.values())
    figure = Figure(figsize=(10, 3.6))  # no pyplot: no global backend switch, nothing to close
    left, right = figure.subplots(1, 2)
    left.plot(depth, [s.mean for s in layers], "o-", ms=3, label="activation mean")
    left.plot(depth, [s.std for s in layers], "o-", ms=3, label="activation std")
    if layers[0].preact_std is not None:
        left.plot(depth, [s.preact_std for s in layers], "o-", ms=3, label="pre-activation std")
    left.set(xlabel="hidden layer", title="signal")
    left.legend(fontsize=8)
    for key, label in (("saturated", "saturated"), ("dead", "dead"), ("preact_beyond", "|z| beyond threshold")):
        values = [getattr(s, key) for s in layers]
        if all(v is not None for v in values):
            right.plot(depth, values, "o-", ms=3, label=label)
    right.set(xlabel="hidden layer", ylim=(-0.02, 1.02), title="fraction of units")
    right.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure
