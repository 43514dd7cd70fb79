"""Every use deeptrain makes of Lightning's private API, in one place.

Each function wraps a private name for which Lightning 2.6 has no public equivalent;
``tests/test_lightning_private.py`` asserts that each name still exists and behaves as assumed,
and ``pyproject.toml`` bounds ``lightning`` to the releases those tests ran on. Everything else
in deeptrain uses public API (hooks, properties, constructor arguments). The Classifier,
the autoencoder and the CLI import this module, so it is also where deeptrain undoes a costly
side effect of importing Lightning (see :mod:`deeptrain.training.cuda_probe`).
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from deeptrain.training.cuda_probe import keep_cuda_check_cheap

keep_cuda_check_cheap()  # after `import lightning`, which sets PYTORCH_NVML_BASED_CUDA_CHECK


class CheapHookName:
    """Mixin for a LightningModule: Lightning's hook-name bookkeeping without ``nn.Module``'s setattr.

    Lightning assigns ``module._current_fx_name`` before and after every hook it calls, about 40
    times per training step; ``nn.Module.__setattr__`` checks each assignment against parameters,
    buffers and submodules (~1.8 us on a 2-core EPYC). A hook name is a str or None, so it goes
    straight into the instance dict (~0.3 us). Private: ``LightningModule._current_fx_name``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


class CachedStateKey:
    """Mixin for a callback whose ``state_key`` is built from settings fixed at construction
    (ModelCheckpoint's and EarlyStopping's): computed once instead of at every hook call, where
    Lightning formats it into each hook's profiler name (~1-1.7 us per call, every step). The key
    itself is unchanged, so checkpoints written before and after load alike."""

    @property
    def state_key(self) -> str:
        key = self.__dict__.get("_cached_state_key")
        if key is None:
            key = self.__dict__["_cached_state_key"] = super().state_key
        return key


def attached_trainer(module: L.LightningModule) -> Optional[L.Trainer]:
    """The trainer ``module`` is attached to, or None (the public ``module.trainer`` raises then)."""
    try:
        return module.trainer
    except RuntimeError:  # "... is not attached to a `Trainer`."
        return None


def drop_hparams(module: L.LightningModule, keys: Iterable[str]) -> None:
    """Remove ``keys`` from ``module.hparams`` and from the initial copy that checkpoints save.

    Private: ``_hparams_initial`` (the public ``hparams_initial`` returns a copy).
    """
    for key in keys:
        module.hparams.pop(key, None)
        module._hparams_initial.pop(key, None)


def request_graceful_stop(trainer: L.Trainer) -> None:
    """Stop the loops at the next batch boundary with ``SIGTERMException``, exactly as Lightning's own
    SIGTERM handler does (``trainer.should_stop`` ends the fit without an exception, so nothing would
    know to save an interrupt checkpoint).

    Private: ``trainer._signal_connector.received_sigterm`` (the public ``trainer.received_sigterm`` reads it).
    """
    trainer._signal_connector.received_sigterm = True


def save_last_checkpoint(callback: ModelCheckpoint, trainer: L.Trainer) -> None:
    """Write ``callback``'s ``last.ckpt`` now, unless Lightning would skip saving at this point
    (sanity check, ``fast_dev_run``, a second save of the same step).

    Private: ``ModelCheckpoint._should_skip_saving_checkpoint``, ``._save_last_checkpoint`` and
    ``._monitor_candidates``. The public ``save_on_train_epoch_end`` cannot be combined with
    ``every_n_train_steps``, and since 2.6 ``save_last`` writes only when a top-k file is written.
    """
    if not callback._should_skip_saving_checkpoint(trainer):
        callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


def logger_version_is_set(logger: L.pytorch.loggers.Logger) -> bool:
    """Whether a version was given to ``logger`` (else it takes the next free ``version_N`` when first used).

    Private: ``TensorBoardLogger._version`` (the public ``version`` property picks the next free one).
    """
    return getattr(logger, "_version", "set") is not None


def set_logger_version(logger: L.pytorch.loggers.Logger, version: str) -> None:
    """Make ``logger`` write into the existing run ``version_N`` (or a named version), as ``--ckpt_path
    last`` needs to continue the run it resumes. Private: ``TensorBoardLogger._version``."""
    number = version[len("version_"):]
    logger._version = int(number) if version.startswith("version_") and number.isdigit() else version


# The other private use: ``deeptrain.cli.DeeptrainCLI`` subclasses LightningCLI and overrides its
# ``_add_subcommands`` (deeptrain's commands in the same parser tree), ``_run_subcommand`` (keeping
# results) and ``_parse_ckpt_path`` (explicit flags and corrupt checkpoints), and calls
# ``_prepare_subcommand_parser``, ``_add_arguments``, ``_prepare_subcommand_kwargs``, and the
# attributes ``_subcommand_parsers``, ``_subcommand_method_arguments`` and ``_model_class``: methods of
# a subclass cannot move here; tests/test_lightning_private.py pins each of them.
#
# And ``deeptrain.training.lean_loop`` subclasses Lightning's ``_TrainingEpochLoop`` (a shorter path per
# training batch); tests/training/test_lean_loop.py checks it bitwise against Lightning's own loop.
