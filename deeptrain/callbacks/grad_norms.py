"""Watching gradients as they flow: per-layer gradient norms, update ratios, clipping, histograms.

Vanishing gradients show up as the lower layers' gradient norms falling orders of magnitude
below the upper layers'; exploding ones as the total norm shooting up; a learning rate
that is too large as ``||update|| / ||weight||`` far above ~1e-3 (too small: far below).
"""

from __future__ import annotations

import re
from typing import Any, Optional, Sequence

import lightning as L
import torch
from torch import Tensor, nn

from deeptrain.callbacks.tensorboard_layout import add_histograms, add_multiline_charts, log_scalars


def layer_labels(names: Sequence[str]) -> list[str]:
    """Chart labels for module paths, zero-padded so TensorBoard lists layer 2 before layer 10.

    ``["backbone.2.linear", "backbone.10.linear", "head"]`` -> ``["backbone.02.linear", "backbone.10.linear", "head"]``.
    """
    width = max((len(n) for name in names for n in re.findall(r"\d+", name)), default=0)
    return [re.sub(r"\d+", lambda m: m.group().zfill(width), name) for name in names]


def network_of(module: nn.Module) -> nn.Module:
    """The network inside a LightningModule that keeps it in ``.net`` (the Classifier), else the module:
    layer names then read ``backbone.3.linear`` rather than ``net.backbone.3.linear``."""
    net = getattr(module, "net", None)
    return net if isinstance(net, nn.Module) else module


def weight_layers(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(label, weight) of every layer with a weight matrix or kernel (ndim >= 2), in module order.

    Biases, norm scales and learnable activation slopes are left out of the per-layer charts
    (they still count in the total norm).
    """
    named = [(name, p) for name, p in network_of(module).named_parameters() if p.ndim >= 2 and p.requires_grad]
    labels = layer_labels([name.removesuffix(".weight") for name, _ in named])
    return list(zip(labels, (p for _, p in named)))


def _norms(tensors: Sequence[Tensor]) -> Tensor:
    """L2 norm of each tensor, stacked into one (n,) float32 tensor on their device."""
    return torch.stack([torch.linalg.vector_norm(t, dtype=torch.float32) for t in tensors])


class GradientNormLogger(L.Callback):
    """Logs the gradient of every layer, the size of every update and how often clipping acts.

    Every ``every_n_steps`` optimizer steps, before clipping (Lightning calls
    ``on_before_optimizer_step`` before it clips):

    - ``grad_norm/<layer>``: ``||dL/dW||_2`` of each layer's weight, and ``grad_norm/total``,
      the L2 norm of all gradients of the model as one vector (what norm clipping compares);
    - ``update_ratio/<layer>``: ``||W_after - W_before||_2 / ||W_before||_2`` across that step
      (the step includes the optimizer and any max-norm constraint);
    - with ``trainer.gradient_clip_val`` set: ``clip/active_fraction``, the fraction of the
      optimizer steps since the last log where clipping changed the gradient (counted on
      every step, on the device, without waiting for it, from the total norm computed here
      before Lightning clips), and ``clip/grad_norm_after``, the total norm of the gradient
      the optimizer actually used.

    At each training epoch end, with a TensorBoard logger: histograms ``grad_hist/<layer>``
    (the gradient of the epoch's last logging step, before clipping) and ``weight_hist/<layer>``.
    In TensorBoard's Custom Scalars tab all layers share one chart per quantity.

    Steps that do not log cost one modulo (plus, with clipping, one total norm on the device,
    which ``clip_grad_norm_`` then computes again: Lightning keeps the norm it clips with to
    itself); a logging step waits for the device once.

    Args:
        every_n_steps: log every this many optimizer steps (the first step is logged).
        update_ratio: log ``update_ratio/*`` (copies the weights on logging steps).
        histograms: log the per-layer histograms at epoch end.

    Examples:
        >>> trainer = L.Trainer(callbacks=[GradientNormLogger(every_n_steps=50)], gradient_clip_val=1.0)

    In YAML (``trainer.callbacks``)::

        - class_path: deeptrain.callbacks.grad_norms.GradientNormLogger
          init_args: {every_n_steps: 50}
    """

    def __init__(self, every_n_steps: int = 50, update_ratio: bool = True, histograms: bool = True):
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be an int >= 1, got {every_n_steps!r}")
        self.every_n_steps = every_n_steps
        self.update_ratio = update_ratio
        self.histograms = histograms
        self._layers: list[tuple[str, nn.Parameter]] = []
        self._params: list[nn.Parameter] = []
        self._clip_val = 0.0
        self._clip_algorithm = "norm"
        self._clip_count: Optional[Tensor] = None
        self._clip_steps = 0
        self._pending_step: Optional[int] = None  # a logging step whose update is still to measure
        self._weights_before: list[Tensor] = []
        self._grad_snapshot: list[tuple[str, Tensor]] = []

    # -- setup --------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._layers = weight_layers(pl_module)
        self._params = [p for p in pl_module.parameters() if p.requires_grad]
        self._clip_val = float(trainer.gradient_clip_val or 0.0)
        algorithm = trainer.gradient_clip_algorithm
        self._clip_algorithm = str(getattr(algorithm, "value", algorithm) or "norm")
        self._clip_count = torch.zeros((), device=pl_module.device)
        self._clip_steps = 0
        charts = {
            "L2 norm of each layer's weight gradient, before clipping (and the total)": [r"^grad_norm/"],
            "update ratio ||dW|| / ||W|| per layer": [r"^update_ratio/"],
        }
        if self._clip_val > 0:
            charts[f"gradient clipping ({self._clip_algorithm} at {self._clip_val:g})"] = [r"^clip/"]
        add_multiline_charts(trainer, "gradients", charts)

    def _is_logging_step(self, step: int) -> bool:
        return step % self.every_n_steps == 0

    # -- every optimizer step -------------------------------------------------------------
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        step = trainer.global_step
        if self._clip_val > 0:
            self._count_clipping()
        if not self._is_logging_step(step):
            return
        grads = [(label, p.grad) for label, p in self._layers if p.grad is not None]
        all_grads = [p.grad for p in self._params if p.grad is not None]
        if not all_grads:
            return
        norms = [torch.linalg.vector_norm(g, dtype=torch.float32) for _, g in grads]
        values = torch.stack([*norms, torch.linalg.vector_norm(_norms(all_grads))]).tolist()  # the host sync
        metrics = {f"grad_norm/{label}": v for (label, _), v in zip(grads, values)}
        metrics["grad_norm/total"] = values[-1]
        log_scalars(trainer, metrics, step)
        if self.histograms:
            self._grad_snapshot = [(label, g.detach().clone()) for label, g in grads]
        if self.update_ratio or self._clip_val > 0:
            self._weights_before = [p.detach().clone() for _, p in self._layers] if self.update_ratio else []
            self._pending_step = step

    @torch.no_grad()
    def _count_clipping(self) -> None:
        """Adds 1 (on the device) when Lightning's clipping is about to change the gradient."""
        grads = [p.grad for p in self._params if p.grad is not None]
        if not grads:
            return
        if self._clip_algorithm == "value":
            active = torch.nn.utils.get_total_norm(grads, float("inf")) > self._clip_val
        else:  # clip_grad_norm_ scales by clip / (norm + 1e-6) when that is below 1
            active = torch.nn.utils.get_total_norm(grads, 2.0) + 1e-6 > self._clip_val
        self._clip_count += active
        self._clip_steps += 1

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # The optimizer has stepped: the weights moved and p.grad is the clipped gradient it used.
        if self._pending_step is None or trainer.global_step == self._pending_step:
            return
        parts, labels = [], []
        if self._weights_before:
            after = [p.detach() for _, p in self._layers]
            deltas = _norms([a - b for a, b in zip(after, self._weights_before)])
            parts.append(deltas / _norms(self._weights_before).clamp_min(1e-12))
            labels += [f"update_ratio/{label}" for label, _ in self._layers]
        if self._clip_val > 0:  # this step's clipping has happened and is counted by now
            grads = [p.grad for p in self._params if p.grad is not None]
            parts += [torch.linalg.vector_norm(_norms(grads)).view(1), self._clip_count.view(1).float()]
            labels += ["clip/grad_norm_after", "clip/active_fraction"]
        if not parts:  # no weight matrices to compare
            self._pending_step = None
            return
        metrics = dict(zip(labels, torch.cat(parts).tolist()))  # one host sync
        if self._clip_val > 0:
            metrics["clip/active_fraction"] /= max(1, self._clip_steps)
            self._clip_count.zero_()
            self._clip_steps = 0
        log_scalars(trainer, metrics, self._pending_step)
        self._pending_step, self._weights_before = None, []

    # -- epoch end --------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.histograms:
            return
        # Fall back to the last step's (clipped) gradient when no logging step fell in this epoch.
        grads = self._grad_snapshot or [(label, p.grad) for label, p in self._layers if p.grad is not None]
        step = trainer.global_step
        add_histograms(trainer, [(f"weight_hist/{label}", p) for label, p in self._layers], step)
        add_histograms(trainer, [(f"grad_hist/{label}", g) for label, g in grads], step)
        self._grad_snapshot = []
