"""Lightning's training epoch loop with a shorter path through each batch, for the common case.

Lightning runs every training batch through machinery built for every setup: it calls every
batch hook of every callback and of the module, most of them the base classes' no-ops, each
through a dispatcher with a profiler context; for each batch it works out again whether the
module or the data module implements each batch-transfer hook and whether ``training_step``
takes ``batch_idx``; and it routes the batch transfer, ``training_step`` and ``backward``
through the strategy's hook dispatch. On a small network on a 2-core CPU that is about a third
of the ~1 ms per step that ``deeptrain fit`` adds to a plain PyTorch loop (benchmarks/README.md).

:class:`LeanTrainingEpochLoop` works all of that out once per epoch and then runs each batch in
Lightning's order: the same hooks that do something (callbacks first, then the module, under the
same hook names, so ``self.log`` behaves the same), the same progress counters, logging,
learning-rate schedules, validation and checkpoints. The update still goes through
``LightningModule.optimizer_step``, ``LightningOptimizer`` and the precision plugin, so an
``optimizer_step`` override works as it does in Lightning. The lean path is taken on one device
(``SingleDeviceStrategy``) in 32-bit precision with automatic optimization, one optimizer, no
gradient accumulation and no profiler; any other setup, and the first batch after a restart,
take Lightning's own ``advance``. ``tests/training/test_lean_loop.py`` checks that the hook calls,
weights, optimizer and scheduler states, progress counters, logged values and checkpoints are
bitwise equal to those of Lightning's loop, and the resume tests resume with it.

Private API (Lightning bounds in pyproject.toml): ``_TrainingEpochLoop`` and its progress
trackers, ``_AutomaticOptimization.optim_progress``, ``Closure``/``ClosureResult``, the logger
connector, ``_data_connector._datahook_selector``, ``strategy._lightning_optimizers``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Optional

import lightning as L
import torch
from lightning.pytorch.loops.fetchers import _DataFetcher, _DataLoaderIterDataFetcher
from lightning.pytorch.loops.optimization.automatic import Closure, ClosureResult, _AutomaticOptimization
from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.signature_utils import is_param_in_hook_signature

from deeptrain.training.profiler import NoProfiler

# The hooks of one batch that both callbacks and the module implement and that this loop calls
# (on_before_optimizer_step: the precision plugin calls it, inside optimizer.step).
BATCH_HOOKS = ("on_train_batch_start", "on_before_zero_grad", "on_before_backward", "on_after_backward",
               "on_train_batch_end")
# The batch hooks a LightningModule and a LightningDataModule share; the first and last return the batch as is by default.
TRANSFER_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")


@dataclass
class _Plan:
    """What one epoch's batches call, resolved once at the epoch's start."""

    callbacks: dict[str, list[Callable[..., Any]]]  # hook -> the callbacks' bound hooks that are overridden
    module_hooks: dict[str, Optional[Callable[..., Any]]]  # hook -> the module's bound hook if overridden
    transfer: list[tuple[str, Callable[..., Any], bool]] = field(default_factory=list)  # (hook, fn, is the module's)
    pass_batch_idx: bool = True  # training_step takes batch_idx


def lean_path_blocker(trainer: L.Trainer) -> Optional[str]:
    """Why a fit on ``trainer`` must take Lightning's own path per batch, or None if the lean one is exact."""
    module = trainer.lightning_module
    checks = (
        (type(trainer.strategy) is SingleDeviceStrategy and trainer.strategy.model is module, "not one plain device"),
        (type(trainer.precision_plugin) is Precision, "not 32-bit precision"),
        (module.automatic_optimization, "manual optimization"),
        (len(trainer.optimizers) == 1, "not one optimizer"),
        (trainer.accumulate_grad_batches == 1, "gradient accumulation"),
        (type(trainer.profiler) in (NoProfiler, PassThroughProfiler), "a profiler records the hooks"),
    )
    return next((why for ok, why in checks if not ok), None)


class LeanTrainingEpochLoop(_TrainingEpochLoop):
    """``_TrainingEpochLoop`` whose ``advance`` skips what does nothing in the setups
    :func:`lean_path_blocker` allows. Install it with :func:`use_lean_loop`."""

    _plan: Optional[_Plan] = None

    def on_run_start(self, data_fetcher: _DataFetcher) -> None:
        super().on_run_start(data_fetcher)
        optimization = self.automatic_optimization
        lean = (lean_path_blocker(self.trainer) is None and not isinstance(data_fetcher, _DataLoaderIterDataFetcher)
                and type(optimization) is _AutomaticOptimization and not optimization._skip_backward)
        self._plan = self._make_plan() if lean else None

    def _make_plan(self) -> _Plan:
        trainer, module = self.trainer, self.trainer.lightning_module
        plan = _Plan(
            callbacks={h: [getattr(c, h) for c in trainer.callbacks if is_overridden(h, c, L.Callback)] for h in BATCH_HOOKS},
            module_hooks={h: getattr(module, h) if is_overridden(h, module) else None for h in BATCH_HOOKS},
            pass_batch_idx=is_param_in_hook_signature(module.training_step, "batch_idx", min_args=2),
        )
        selector = trainer._data_connector._datahook_selector
        for hook in TRANSFER_HOOKS:
            owner = selector.get_instance(hook) if selector is not None else module
            if hook == "transfer_batch_to_device" or is_overridden(hook, owner):
                plan.transfer.append((hook, getattr(owner, hook), owner is module))
        return plan

    # ---- one batch ----------------------------------------------------------------------------
    def advance(self, data_fetcher: _DataFetcher) -> None:
        if self._plan is None or self.restarting:
            return super().advance(data_fetcher)
        trainer, progress = self.trainer, self.batch_progress
        batch, _, __ = next(data_fetcher)
        batch_idx = self.batch_idx + 1
        progress.is_last_batch = data_fetcher.done
        batch = self._transfer(batch)
        progress.increment_ready()
        trainer._logger_connector.on_batch_start(batch)

        batch_output, skip_rest_of_epoch = None, False
        if batch is None:
            self._warning_cache.warn("train_dataloader yielded None. If this was on purpose, ignore this warning...")
        else:
            skip_rest_of_epoch = self._hooks("on_train_batch_start", batch, batch_idx) == -1
            if skip_rest_of_epoch:
                progress.increment_by(0, is_last_batch=True)
            else:
                progress.increment_started()
                batch_output = self._optimize(batch, batch_idx)
        progress.increment_processed()

        self.update_lr_schedulers("step", update_plateau_schedulers=False)
        if self._num_ready_batches_reached():
            self.update_lr_schedulers("epoch", update_plateau_schedulers=False)
        if skip_rest_of_epoch:
            raise StopIteration

        self._hooks("on_train_batch_end", batch_output, batch, batch_idx)
        trainer._logger_connector.on_batch_end()
        progress.increment_completed()
        trainer._logger_connector.update_train_step_metrics()

    def _transfer(self, batch: Any) -> Any:
        device = self.trainer.strategy.root_device
        for hook, fn, is_module in self._plan.transfer:
            args = (batch, device, 0) if hook == "transfer_batch_to_device" else (batch, 0)
            batch = self._call_module(hook, fn, *args) if is_module else fn(*args)
        return batch

    def _hooks(self, hook: str, *args: Any) -> Any:
        """The callbacks' ``hook`` then the module's, under the hook's name; the module's return value."""
        callbacks, module_hook = self._plan.callbacks[hook], self._plan.module_hooks[hook]
        if not callbacks and module_hook is None:
            return None
        trainer, module = self.trainer, self.trainer.lightning_module
        previous, module._current_fx_name = module._current_fx_name, hook
        for fn in callbacks:
            fn(trainer, module, *args)
        output = module_hook(*args) if module_hook is not None else None
        module._current_fx_name = previous
        return output

    def _call_module(self, hook: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        module = self.trainer.lightning_module
        previous, module._current_fx_name = module._current_fx_name, hook
        output = fn(*args, **kwargs)
        module._current_fx_name = previous
        return output

    # ---- the update: what _AutomaticOptimization.run does for one optimizer, no accumulation ----
    def _optimize(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        trainer, module = self.trainer, self.trainer.lightning_module
        optimizer = trainer.optimizers[0]
        args = (batch, batch_idx) if self._plan.pass_batch_idx else (batch,)
        closure = Closure(partial(self._training_step, args), partial(self._backward, optimizer),
                          partial(self._zero_grad, batch_idx, optimizer))
        steps = self.automatic_optimization.optim_progress.optimizer.step
        steps.increment_ready()
        # LightningOptimizer -> strategy -> precision plugin: optimizer.step(closure) with the
        # on_before_optimizer_step hooks and gradient clipping after the closure
        self._call_module("optimizer_step", module.optimizer_step, trainer.current_epoch, batch_idx,
                          trainer.strategy._lightning_optimizers[0], closure)
        steps.increment_completed()
        result = closure.consume_result()
        return {} if result.loss is None else result.asdict()

    def _training_step(self, args: tuple[Any, ...]) -> ClosureResult:
        output = self._call_module("training_step", self.trainer.lightning_module.training_step, *args)
        return ClosureResult.from_training_step_output(output)

    def _zero_grad(self, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        module, counts = self.trainer.lightning_module, self.automatic_optimization.optim_progress.optimizer.zero_grad
        counts.increment_ready()
        self._hooks("on_before_zero_grad", optimizer)
        counts.increment_started()
        self._call_module("optimizer_zero_grad", module.optimizer_zero_grad, self.trainer.current_epoch, batch_idx, optimizer)
        counts.increment_completed()

    def _backward(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        module = self.trainer.lightning_module
        previous, module._current_fx_name = module._current_fx_name, "backward"
        self._hooks("on_before_backward", loss)
        module.backward(loss)
        self._hooks("on_after_backward")
        module._current_fx_name = previous


def use_lean_loop(trainer: L.Trainer) -> None:
    """Give ``trainer`` a :class:`LeanTrainingEpochLoop`, before ``fit`` (``deeptrain fit`` does this).

    Examples:
        >>> trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
        >>> use_lean_loop(trainer)
        >>> type(trainer.fit_loop.epoch_loop).__name__
        'LeanTrainingEpochLoop'
    """
    old = trainer.fit_loop.epoch_loop
    if not isinstance(old, LeanTrainingEpochLoop):
        trainer.fit_loop.epoch_loop = LeanTrainingEpochLoop(trainer, min_steps=old.min_steps, max_steps=old.max_steps)
