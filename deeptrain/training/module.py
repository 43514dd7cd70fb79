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

from deeptrain.nn.mlp import MLP, MLPConfig
from deeptrain.nn.normalization import InputNormalizer
from deeptrain.training.penalties import linear_weights, weight_penalty

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


class Classifier(L.LightningModule):
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
        label_smoothing: cross-entropy label smoothing in [0, 1).

    Example:
        >>> model = Classifier(MLPConfig(widths=[300, 100]), input_shape=(1, 28, 28), num_classes=10)
        >>> model(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)).shape
        torch.Size([4, 10])
    """

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
    ):
        super().__init__()
        net = MLPConfig.coerce(net).to_dict()  # plain values in hparams: checkpoints load with weights_only
        input_shape = [int(s) for s in input_shape]
        self.save_hyperparameters()
        for key in ("optimizer", "lr_scheduler"):  # Python callables cannot go into a checkpoint; CLI dicts can
            if callable(self.hparams.get(key)):
                del self.hparams[key], self._hparams_initial[key]
        if scheduler_interval not in INTERVALS:
            raise ValueError(f"scheduler_interval = {scheduler_interval!r} is not valid; valid choices: {', '.join(INTERVALS)}")
        for key, value in (("l1", l1), ("l2", l2)):
            if value < 0:
                raise ValueError(f"{key} must be >= 0, got {value}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")

        self.net = MLP(input_shape, num_classes, net)
        self.normalizer = InputNormalizer(input_shape)
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.lr = lr
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self._penalized = linear_weights(self.net)
        self._best_val_loss = float("inf")

    # ---- forward and steps -------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw images (uint8 or float, pixel units) -> logits (B, num_classes)."""
        return self.net(self.normalizer(x))

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
        self.train_acc(logits, y)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, accuracy: MulticlassAccuracy) -> None:
        x, y = batch
        logits = self(x)
        self.log(f"{stage}_loss", F.cross_entropy(logits, y), on_epoch=True, prog_bar=True)
        accuracy(logits, y)
        self.log(f"{stage}_acc", accuracy, on_epoch=True, prog_bar=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(dim=-1)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.net.apply_max_norm_()  # constraints act after each update, as Keras' kernel_constraint

    # ---- setup, optimizers, logging -----------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if datamodule is None:
            return
        check_data_fits(self, datamodule)
        if not bool(self.normalizer.fitted) and hasattr(datamodule, "input_stats"):
            self.normalizer.set_stats(*datamodule.input_stats())
        if self.net.config.activation.lower() == "selu" and getattr(datamodule, "normalize", "standardize") != "standardize":
            warnings.warn("SELU network with inputs that are not standardized: set data.normalize: standardize", stacklevel=2)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameters())
        if self.lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = self.lr
        if self.lr_scheduler is None:
            return optimizer
        if needs_total_steps(self.lr_scheduler):
            scheduler = self.lr_scheduler(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
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
        if isinstance(self.logger, TensorBoardLogger):
            self.logger.log_hyperparams(self.hparams, {name: float("nan") for name in HP_METRICS})

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
