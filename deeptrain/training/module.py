"""The LightningModule for image classification with a deep MLP."""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Literal, Optional, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from torch.optim.lr_scheduler import OneCycleLR
from torchmetrics.classification import MulticlassAccuracy

from deeptrain._lightning import CheapHookName, attached_trainer, drop_hparams
from deeptrain.nn.mc_dropout import mc_predict
from deeptrain.nn.mlp import MLP, MLPConfig
from deeptrain.nn.normalization import InputNormalizer
from deeptrain.training.checkpoint_io import check_checkpoint_fits
from deeptrain.training.compile import compile_step_, foreach_by_default_
from deeptrain.training.penalties import linear_weights, weight_penalty
from deeptrain.training.run_hparams import run_hparams
from deeptrain.training.tensorboard import declare_hparams, purge_replayed_steps
from deeptrain.training.transfer import InitFrom, apply_init_from, mark_applied, reused_layers

INTERVALS = ("epoch", "step")
HP_METRICS = ("hp/best_val_loss", "hp/best_val_acc", "hp/best_epoch")


def needs_total_steps(factory: Any) -> bool:
    """True for a scheduler factory (class or partial) with an unset ``total_steps`` (OneCycleLR)."""
    keywords = getattr(factory, "keywords", None)
    if keywords is not None and "total_steps" in keywords:
        return keywords["total_steps"] is None
    try:
        param = inspect.signature(factory).parameters.get("total_steps")
    except (TypeError, ValueError):
        return False
    return param is not None and param.default is None


def finite_total_steps(trainer: L.Trainer) -> int:
    """The optimizer steps of the whole fit, for a schedule defined over it (1cycle)."""
    steps = trainer.estimated_stepping_batches
    if steps == float("inf"):
        raise ValueError(f"OneCycleLR needs the length of the fit, but trainer.max_epochs = {trainer.max_epochs} "
                         f"and trainer.max_steps = {trainer.max_steps} leave it unbounded; set trainer.max_epochs "
                         "(or trainer.max_steps, or lr_scheduler.init_args.total_steps)")
    return int(steps)


class Classifier(CheapHookName, L.LightningModule):
    """Trains an :class:`~deeptrain.nn.mlp.MLP` with cross-entropy.

    Args:
        net: the network (:class:`MLPConfig` or a dict of its fields).
        input_shape: shape of one input image, e.g. ``[3, 32, 32]`` (the CLI links it from the data).
        num_classes: number of classes (the CLI links it from the data).
        optimizer: any ``torch.optim`` optimizer as a callable of the parameters (from YAML:
            ``class_path`` + ``init_args``). Default: NAdam with torch's defaults.
        lr_scheduler: any ``torch.optim.lr_scheduler`` scheduler, or one of
            :mod:`deeptrain.training.schedules`, as a callable of the optimizer. ``OneCycleLR``
            gets ``total_steps`` from the trainer and always steps per batch.
        scheduler_interval: step the scheduler every ``epoch`` or every optimizer ``step``.
        scheduler_monitor: metric that ``ReduceLROnPlateau`` watches.
        lr: if set, overrides the optimizer's learning rate (the LR finder writes here).
        l1: factor of the l1 penalty ``l1 * sum|w|`` over Linear weights.
        l2: factor of the l2 penalty ``l2 * sum w^2`` over Linear weights.
        penalize_output: whether the l1/l2 penalties include the output layer's weights (as the
            book's Keras code, which regularizes every Dense) or only the hidden layers'.
        label_smoothing: cross-entropy label smoothing in [0, 1).
        mc_samples: if > 0, ``predict`` returns MC-dropout estimates over this many passes,
            ``{"probs": mean (B, C), "std": per-class std (B, C)}``, instead of the softmax
            tensor (see :func:`deeptrain.nn.mc_dropout.mc_predict`).
        compile: compile the forward pass (normalizer + network, and so its backward) and the
            optimizer's update with ``torch.compile`` (with an LR schedule, learning rates become
            0-dim tensors, so new values do not recompile); parameter names and checkpoints are
            unchanged, so a checkpoint loads with or without it. Compiling takes a while at the
            first step and at each new batch shape (README, Performance: what it gains).
        init_from: reuse the input BatchNorm and all (or the first k) hidden blocks of another
            run's checkpoint, copied at the first ``setup`` (the file is only read; call
            ``transfer.apply_init_from(model)`` to copy earlier), with a new output layer:
            ``{checkpoint: path, layers: all | k, normalizer: true}``
            (see :mod:`deeptrain.training.transfer`; freeze them with
            :class:`~deeptrain.callbacks.finetuning.FreezeUnfreeze`).
        clipnorm: per-variable gradient clipping, Keras's ``clipnorm``: each parameter's gradient
            ``g`` becomes ``g * c / max(||g||, c)`` on its own. The trainer's
            ``gradient_clip_val`` with ``gradient_clip_algorithm: norm`` is Keras's ``global_clipnorm``
            (one norm over all gradients), with ``value`` Keras's ``clipvalue``; with both set,
            ``clipnorm`` acts first.

    Examples:
        >>> model = Classifier(MLPConfig(widths=[300, 100]), input_shape=(1, 28, 28), num_classes=10)
        >>> model(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)).shape
        torch.Size([4, 10])
    """

    mc_share_prefix = True  # normalizer -> MLP is a chain of per-row layers (see mc_predict)

    def __init__(
        self,
        net: Optional[MLPConfig] = None,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.NAdam,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        scheduler_monitor: str = "val_loss",
        lr: Optional[float] = None,
        l1: float = 0.0,
        l2: float = 0.0,
        label_smoothing: float = 0.0,
        mc_samples: int = 0,
        init_from: Optional[InitFrom] = None,
        compile: bool = False,
        penalize_output: bool = True,
        clipnorm: Optional[float] = None,
    ):
        super().__init__()
        net = MLPConfig.coerce(net).to_dict()  # plain values in hparams: checkpoints load with weights_only
        init_from = InitFrom.coerce(init_from).to_dict() if init_from is not None else None
        input_shape = [int(s) for s in input_shape]
        self.save_hyperparameters()
        # Python callables cannot go into a checkpoint; CLI dicts can
        drop_hparams(self, [key for key in ("optimizer", "lr_scheduler") if callable(self.hparams.get(key))])
        if scheduler_interval not in INTERVALS:
            raise ValueError(f"scheduler_interval = {scheduler_interval!r} is not valid; valid choices: {', '.join(INTERVALS)}")
        for key, value in (("l1", l1), ("l2", l2)):
            if value < 0:
                raise ValueError(f"{key} must be >= 0, got {value}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if mc_samples < 0:
            raise ValueError(f"mc_samples must be >= 0 (0: deterministic predict), got {mc_samples}")
        if clipnorm is not None and clipnorm <= 0:
            raise ValueError(f"clipnorm must be > 0 (or None: no per-variable clipping), got {clipnorm}")

        self.net = MLP(input_shape, num_classes, net)
        self.normalizer = InputNormalizer(input_shape)
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.lr = lr
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self._penalized = linear_weights(self.net, exclude=() if penalize_output else (self.net.head,))
        self._best_val_loss = float("inf")
        self.reused_layers = reused_layers(self.net, init_from)  # names inside self.net, for FreezeUnfreeze
        # the epoch's training loss and correct predictions, summed on the device
        self._epoch_loss_sum, self._epoch_correct, self._epoch_count = None, None, 0
        if compile:
            self._compile_forward()

    # ---- forward and steps -------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw images (uint8 or float, pixel units) -> logits (B, num_classes)."""
        return self.net(self.normalizer(x))

    def _compile_forward(self) -> None:
        # nn.Module.compile wraps __call__ in place: no wrapper module, so state-dict keys stay the
        # same. dynamic=False: one graph per batch shape (train, last batch, eval) beats a dynamic one.
        self.compile(dynamic=False)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_compiled_call_impl"] = None  # bound to this instance: a copy or pickle compiles its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if self.hparams.get("compile"):
            self._compile_forward()

    def penalty(self) -> torch.Tensor:
        return weight_penalty(self._penalized, self.hparams.l1, self.hparams.l2)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        if self.hparams.l1 or self.hparams.l2:
            penalty = self.penalty()
            self.log("train_penalty", penalty, on_step=False, on_epoch=True)
            loss = loss + penalty
        # Per step only device ops: self.log costs ~0.5 ms of Python per call, so it runs on logging
        # steps only; the epoch's loss and correct predictions are summed here (a counter, not a
        # torchmetrics update: 10 us instead of 79 per CPU step) and logged in on_train_epoch_end.
        self._accumulate(loss.detach(), (logits.detach().argmax(dim=1) == y).sum(), len(y))
        if self._is_logging_step():  # every trainer.log_every_n_steps steps
            # Lightning reads a progress-bar value on the host after every later step: only with a bar.
            with_bar = getattr(attached_trainer(self), "progress_bar_callback", None) is not None
            self.log("train_loss_step", loss, prog_bar=with_bar)
        return loss

    def _accumulate(self, loss: torch.Tensor, correct: torch.Tensor, count: int) -> None:
        if self._epoch_loss_sum is None:  # float32 even when the loss is bf16/fp16
            self._epoch_loss_sum = torch.zeros((), device=loss.device, dtype=torch.float32)
            self._epoch_correct = torch.zeros((), device=loss.device, dtype=torch.long)
        self._epoch_loss_sum.add_(loss, alpha=count)
        self._epoch_correct.add_(correct)
        self._epoch_count += count

    def _is_logging_step(self) -> bool:
        """Whether Lightning writes this step's logged values (its ``should_update_logs``, from public
        state: ``global_step`` counts the optimizer steps taken before this one)."""
        trainer = attached_trainer(self)
        if trainer is None or trainer.fast_dev_run:
            return True
        every = trainer.log_every_n_steps
        return every > 0 and ((trainer.global_step + 1) % every == 0 or trainer.should_stop)

    def on_train_epoch_start(self) -> None:
        self._epoch_loss_sum, self._epoch_correct, self._epoch_count = None, None, 0

    def on_train_epoch_end(self) -> None:
        # Same names as self.log(on_step=True, on_epoch=True) gave: train_loss_step/_epoch, and
        # train_loss in callback_metrics; train_acc over the epoch, every rank's batches together.
        if self._epoch_count:
            mean = self._epoch_loss_sum / self._epoch_count
            self.log("train_loss_epoch", mean, prog_bar=True)
            self.log("train_loss", mean, logger=False)
            count = torch.tensor(self._epoch_count, device=self._epoch_correct.device)
            correct, count = self.trainer.strategy.reduce(torch.stack([self._epoch_correct, count]), reduce_op="sum")
            self.log("train_acc", correct / count)

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, accuracy: MulticlassAccuracy) -> None:
        x, y = batch
        logits = self(x)
        # sync_dist: under DDP the epoch value averages every rank's shard (one all-reduce per epoch)
        self.log(f"{stage}_loss", F.cross_entropy(logits, y), on_epoch=True, prog_bar=True, sync_dist=True)
        accuracy(logits, y)
        self.log(f"{stage}_acc", accuracy, on_epoch=True, prog_bar=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor | dict[str, torch.Tensor]:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if self.hparams.mc_samples:  # e.g. Classifier.load_from_checkpoint(path, mc_samples=100)
            mean, std = mc_predict(self, x, samples=self.hparams.mc_samples)
            return {"probs": mean, "std": std}
        return self(x).softmax(dim=-1)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.net.apply_max_norm_()  # constraints act after each update, as Keras' kernel_constraint

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: Optional[float] = None,
                                    gradient_clip_algorithm: Optional[str] = None) -> None:
        """Keras's per-variable ``clipnorm`` (if set), then the trainer's own clipping."""
        if self.hparams.get("clipnorm"):
            clip_per_variable_norm_(
                [p for group in optimizer.param_groups for p in group["params"]], self.hparams.clipnorm
            )
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # ---- setup, optimizers, logging -----------------------------------------------------------
    def setup(self, stage: str) -> None:
        trainer = attached_trainer(self)
        if not (trainer and trainer.ckpt_path):  # a checkpoint about to load brings its own weights
            apply_init_from(self)  # copies init_from's layers, once (before the normalizer check below)
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None:
            return
        check_data_fits(self, datamodule)
        if not bool(self.normalizer.fitted) and hasattr(datamodule, "input_stats"):
            self.normalizer.set_stats(*datamodule.input_stats())
        if self.net.config.activation.lower() == "selu" and getattr(datamodule, "normalize", "standardize") != "standardize":
            warnings.warn("SELU network with inputs that are not standardized: set data.normalize: standardize", stacklevel=2)

    def configure_optimizers(self) -> Any:
        # Frozen parameters stay out: a finetuning callback adds them as their own group when it unfreezes.
        optimizer = self.optimizer([p for p in self.parameters() if p.requires_grad])
        if self.lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = self.lr
        if self.hparams.get("compile"):
            # the update is most of a small-batch step; tensor learning rates let a schedule change them
            # (Adam's foreach path refuses a tensor lr: compiled, the update is one kernel either way)
            compile_step_(optimizer, tensor_lr=self.lr_scheduler is not None)
        else:
            foreach_by_default_(optimizer)
        if self.lr_scheduler is None:
            return optimizer
        if needs_total_steps(self.lr_scheduler):
            scheduler = self.lr_scheduler(optimizer, total_steps=finite_total_steps(self.trainer))
        else:
            scheduler = self.lr_scheduler(optimizer)
        # 1cycle is defined per batch; stepping it per epoch silently stretches it (a common bug).
        interval = "step" if isinstance(scheduler, OneCycleLR) else self.hparams.scheduler_interval
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval, "monitor": self.hparams.scheduler_monitor},
        }

    def on_fit_start(self) -> None:
        # Declare the HParams-view metrics once; their values are logged at each validation end.
        hparams = {**self.hparams, **run_hparams(self.trainer)}  # data settings and seed beside the model's
        for logger in self._tensorboard_loggers():
            declare_hparams(logger, hparams, HP_METRICS)

    def on_train_start(self) -> None:
        if self.trainer.global_step > 0:  # resumed: steps from here on were maybe logged before the kill
            for logger in self._tensorboard_loggers():
                purge_replayed_steps(logger, self.trainer.global_step)

    def _tensorboard_loggers(self) -> list[TensorBoardLogger]:
        if not self.trainer.is_global_zero:  # other ranks write no event files
            return []
        return [logger for logger in self.trainer.loggers if isinstance(logger, TensorBoardLogger)]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["best_val_loss"] = self._best_val_loss  # the hp/ metrics continue after a resume

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        source = getattr(attached_trainer(self), "ckpt_path", None)
        check_checkpoint_fits(self, checkpoint, source, hparams=self.hparams)  # a clear error, not torch's traceback
        self._best_val_loss = float(checkpoint.get("best_val_loss", self._best_val_loss))
        mark_applied(self.hparams)  # these weights already hold any reused layers: never copy over them

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        metrics = self.trainer.callback_metrics
        if "val_loss" not in metrics:
            return
        val_loss = float(metrics["val_loss"])  # one host sync per epoch
        if val_loss < self._best_val_loss:
            self._best_val_loss = val_loss
            self.log_dict(
                {"hp/best_val_loss": val_loss, "hp/best_val_acc": float(metrics["val_acc"]), "hp/best_epoch": float(self.current_epoch)},
                sync_dist=False,
            )


@torch.no_grad()
def clip_per_variable_norm_(params: Sequence[torch.Tensor], clipnorm: float) -> None:
    """Keras's ``clipnorm``: ``g <- g * c / max(||g||_2, c)`` for each parameter's gradient on its own.

    Unlike ``torch.nn.utils.clip_grad_norm_`` (one norm over all of them: Keras's
    ``global_clipnorm``), each tensor keeps its direction and only the ones whose norm exceeds
    ``c`` shrink, to norm ``c``. No host synchronization: the scale stays on the device.
    """
    for p in params:
        if p.grad is not None:
            # at least float32 (half-precision gradients), and float64 ones in float64
            norm = torch.linalg.vector_norm(p.grad, dtype=torch.promote_types(p.grad.dtype, torch.float32))
            p.grad.mul_((clipnorm / norm.clamp(min=clipnorm)).to(p.grad.dtype))


def check_data_fits(model: Classifier, datamodule: Any) -> None:
    """Fail before training when the data and the model disagree on input shape or classes."""
    expected = {"num_classes": model.net.num_classes, "input_shape": model.net.input_shape}
    for key, model_value in expected.items():
        data_value = getattr(datamodule, key, None)
        if data_value is None:
            continue
        data_value = tuple(int(s) for s in data_value) if key == "input_shape" else int(data_value)
        if data_value != model_value:
            raise ValueError(f"model.{key} = {model_value} does not match the data's {key} = {data_value}")
