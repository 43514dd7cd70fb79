"""Freeze reused layers for the first epochs, then fine-tune them with a lower learning rate.

The chapter's recipe for "B on A": the new output layer starts random, so its large
early errors would wreck the reused weights; freeze those for a few epochs, then unfreeze
them (all, or only the top ones) and train on with a smaller learning rate.

Built on Lightning's ``BaseFinetuning`` (frozen parameters stay out of the optimizer; at
unfreezing they join it as a new parameter group), with two differences:

- Frozen BatchNorm layers run in eval mode, normalizing with their running statistics,
  as Keras does for a layer with ``trainable=False``. ``BaseFinetuning.freeze`` only sets
  ``track_running_stats=False``; a BatchNorm in train mode then normalizes every batch
  with that batch's own statistics, so the frozen layer computes a different function than
  the one it learnt (and one that depends on the batch). The callback puts them in eval mode
  before every training batch, whatever a loop or another callback did to the modes.
- Whether a parameter is already in the optimizer is decided by identity. Lightning's
  ``filter_on_optimizer`` compares values (``torch.equal``), so a fresh layer whose
  values happen to equal a parameter's already there (zero biases, unit BatchNorm
  scales) would be silently left out of training.
"""

from __future__ import annotations

from typing import Iterable, Literal, Optional, Union

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from deeptrain._lightning import attached_trainer


class FreezeUnfreeze(BaseFinetuning):
    """Freeze the reused layers of a :class:`~deeptrain.training.module.Classifier`, then
    unfreeze all or the top ``k`` of them at ``lr / lr_divisor``.

    Epochs ``0 .. unfreeze_at_epoch - 1`` train only the layers that were not frozen (the
    new output layer, and any hidden block that was not reused); from ``unfreeze_at_epoch``
    on, the unfrozen layers train as a new optimizer parameter group whose learning rate is
    the first group's (the output layer's) divided by ``lr_divisor``.

    Args:
        unfreeze_at_epoch: the epoch at whose start the layers are unfrozen (the book: 4);
            None keeps them frozen (the reused layers as a fixed feature extractor).
        layers: what to freeze: ``reused`` (the layers the model copied with ``init_from``)
            or ``k``: the input BatchNorm (if any) and the first ``k`` hidden blocks.
        unfreeze: ``all`` frozen layers, or the top ``k`` of them (the others stay frozen).
        lr_divisor: the unfrozen layers' learning rate is the output layer's divided by this.
        train_bn: once unfrozen, BatchNorm layers train (batch statistics, updated running
            statistics, trainable scale and shift); False keeps them frozen in eval mode.

    Raises:
        ValueError: if the model has no ``net`` MLP, or ``layers: reused`` finds nothing reused.

    Examples:
        >>> callback = FreezeUnfreeze(unfreeze_at_epoch=4, lr_divisor=10)
        >>> trainer = L.Trainer(callbacks=[callback])  # doctest: +SKIP

    Note:
        The unfrozen group follows the first group's LR schedule divided by ``lr_divisor``:
        at unfreezing, every scheduler of the optimizer (torch's, ``OneCycleLR`` and
        ``ReduceLROnPlateau`` included, and :mod:`deeptrain.training.schedules`) gets the
        per-group state it keeps (``base_lrs``, ``min_lrs``, ``max_lr``, momenta) for the new
        group, taken from the first group's (see :func:`extend_schedulers`).
    """

    def __init__(self, unfreeze_at_epoch: Optional[int] = 4, layers: Union[int, Literal["reused"]] = "reused",
                 unfreeze: Union[int, Literal["all"]] = "all", lr_divisor: float = 10.0, train_bn: bool = True):
        super().__init__()
        if unfreeze_at_epoch is not None and (not isinstance(unfreeze_at_epoch, int) or unfreeze_at_epoch < 0):
            raise ValueError(f"invalid unfreeze_at_epoch={unfreeze_at_epoch!r}: expected None or an int >= 0")
        for key, value, choice in (("layers", layers, "reused"), ("unfreeze", unfreeze, "all")):
            if value != choice and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"invalid {key}={value!r}: expected {choice!r} or an int >= 1")
        if not lr_divisor > 0:
            raise ValueError(f"invalid lr_divisor={lr_divisor!r}: expected a number > 0")
        self.unfreeze_at_epoch, self.layers, self.unfreeze = unfreeze_at_epoch, layers, unfreeze
        self.lr_divisor, self.train_bn = float(lr_divisor), train_bn
        self.frozen: list[str] = []  # layer names inside pl_module.net, bottom to top
        self.frozen_bn: list[str] = []  # BatchNorm layers of unfrozen layers kept frozen (train_bn=False)

    # -- what to freeze --------------------------------------------------------------------
    def layer_names(self, pl_module: L.LightningModule) -> list[str]:
        net = getattr(pl_module, "net", None)
        if net is None or not hasattr(net, "backbone"):
            raise ValueError(f"FreezeUnfreeze needs a module with an MLP as `net`, got {type(pl_module).__name__}")
        if self.layers == "reused":
            names = list(getattr(pl_module, "reused_layers", []))
            if not names:
                raise ValueError("FreezeUnfreeze(layers='reused'): the model reused no layers; set "
                                 "model.init_from, or give layers: k to freeze the first k hidden blocks")
            return names
        from deeptrain.training.transfer import reused_layer_names  # callbacks build on training

        return reused_layer_names(net, self.layers)

    @staticmethod
    def _modules(pl_module: L.LightningModule, names: Iterable[str]) -> list[nn.Module]:
        return [pl_module.net.get_submodule(name) for name in names]

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.frozen, self.frozen_bn = self.layer_names(pl_module), []
        self.freeze(self._modules(pl_module, self.frozen), train_bn=False)
        self.hold_frozen_bn_in_eval(pl_module)

    # -- unfreezing ----------------------------------------------------------------------
    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if self.unfreeze_at_epoch is None or epoch < self.unfreeze_at_epoch or not self.frozen:
            return
        k = len(self.frozen) if self.unfreeze == "all" else min(self.unfreeze, len(self.frozen))
        names, self.frozen = self.frozen[len(self.frozen) - k:], self.frozen[: len(self.frozen) - k]
        modules = self._modules(pl_module, names)
        self.make_trainable(modules)
        # After a resume past unfreezing, BaseFinetuning.on_fit_start has restored the group already:
        # its parameters are in the optimizer, so nothing is added twice.
        params = self.filter_on_optimizer(optimizer, self.filter_params(modules, train_bn=self.train_bn))
        if params:
            add_group_like_first(optimizer, params, self.lr_divisor)
            extend_schedulers(attached_trainer(pl_module), optimizer, self.lr_divisor)
        bns = {f"{name}.{sub}".rstrip("."): m for name, module in zip(names, modules)
               for sub, m in module.named_modules() if isinstance(m, _BatchNorm)}
        for bn in bns.values():
            if self.train_bn:
                bn.train()
            else:  # make_trainable unfroze them too; keep them as they were
                self.freeze_module(bn)
        if not self.train_bn:
            self.frozen_bn += list(bns)
        rank_zero_info(f"FreezeUnfreeze: epoch {epoch}: unfroze {names} at lr "
                       f"{optimizer.param_groups[-1]['lr']:.3g}; still frozen: {self.frozen}")

    @staticmethod
    def filter_on_optimizer(optimizer: Optimizer, params: Iterable) -> list:
        """The parameters not yet in ``optimizer``, by identity (see the module docstring).

        (``BaseFinetuning.unfreeze_and_add_param_group`` calls its own version by class name,
        so ``finetune_function`` adds the group itself.)
        """
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        return [p for p in params if id(p) not in present]

    # -- BatchNorm modes -------------------------------------------------------------------
    def hold_frozen_bn_in_eval(self, pl_module: L.LightningModule) -> None:
        """Frozen BatchNorm layers normalize with their running statistics and never update them."""
        for module in self._modules(pl_module, self.frozen + self.frozen_bn):
            for m in module.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)  # calls finetune_function
        self.hold_frozen_bn_in_eval(pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.hold_frozen_bn_in_eval(pl_module)  # a few attribute writes per batch


# Per-group values that torch's schedulers keep in the optimizer's param groups (OneCycleLR:
# all of them; every LRScheduler: initial_lr) and in lists on the scheduler, one entry per group.
GROUP_LR_KEYS = ("initial_lr", "max_lr", "min_lr")
GROUP_MOMENTUM_KEYS = ("base_momentum", "max_momentum")
SCHEDULER_LR_LISTS = ("base_lrs", "min_lrs", "max_lrs")  # LRScheduler, ReduceLROnPlateau, CyclicLR
SCHEDULER_MOMENTUM_LISTS = ("base_momentums", "max_momentums")  # CyclicLR


def add_group_like_first(optimizer: Optimizer, params: list, lr_divisor: float) -> None:
    """Add ``params`` as a group whose learning rates (now and the schedule's) are the first group's / ``lr_divisor``."""
    first = optimizer.param_groups[0]
    group = {"params": params, "lr": first["lr"] / lr_divisor}
    group.update({key: first[key] / lr_divisor for key in GROUP_LR_KEYS if key in first})
    group.update({key: first[key] for key in GROUP_MOMENTUM_KEYS if key in first})
    optimizer.add_param_group(group)


def extend_schedulers(trainer: Optional[L.Trainer], optimizer: Optimizer, lr_divisor: float) -> None:
    """Give every scheduler of ``optimizer`` the per-group state of the group just added: its first
    group's, learning rates divided by ``lr_divisor`` (without it, ``PowerLR`` and its kin fail on a
    zip of unequal lengths and ``OneCycleLR`` on a missing ``max_lr``)."""
    configs = trainer.lr_scheduler_configs if trainer is not None else []
    for scheduler in (c.scheduler for c in configs if c.scheduler.optimizer is optimizer):
        count = len(optimizer.param_groups)
        for names, scale in ((SCHEDULER_LR_LISTS, 1.0 / lr_divisor), (SCHEDULER_MOMENTUM_LISTS, 1.0)):
            for name in names:
                values = getattr(scheduler, name, None)
                if isinstance(values, list) and len(values) == count - 1:
                    values.append(values[0] * scale)
