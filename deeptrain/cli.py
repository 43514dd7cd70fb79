"""The command line: ``python train.py fit --config configs/...`` (or the ``deeptrain`` script).

LightningCLI owns the config: ``model`` is a :class:`Classifier`, ``data`` an
:class:`ImageDataModule`; the data's input shape and class count are linked into the
model, so a config never repeats them.

Reliability defaults (README, "Reliability"): ``last.ckpt`` every N steps and per epoch,
a checkpoint on Ctrl-C/SIGTERM, atomic checkpoint files, RNG and plateau state for an exact
``--ckpt_path last``, a NaN-loss guard; bad input ends in one ``error: ...`` line, exit code 1.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from deeptrain.callbacks.checkpointing import InterruptCheckpoint, PeriodicCheckpoint
from deeptrain.callbacks.early_stopping import EarlyStopping  # restores the best weights at the end of fit
from deeptrain.callbacks.nonfinite import NonFiniteLossGuard
from deeptrain.callbacks.resume import ExactResume
from deeptrain.data.datamodule import ImageDataModule
from deeptrain.training.checkpoint_io import UNREADABLE, AtomicCheckpointIO, as_corrupt_checkpoint_error
from deeptrain.training.module import Classifier

LOGGER_DEFAULT = {
    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
    "init_args": {"save_dir": "logs", "name": "deeptrain", "default_hp_metric": False},
}


class DeeptrainCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults({"early_stopping.monitor": "val_loss", "early_stopping.patience": 20})
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_loss",
                # last.ckpt comes from last_checkpoint: this one writes it only on improvement (Lightning 2.6)
                "checkpoint.save_last": False,
                "checkpoint.filename": "best-{epoch:03d}-{val_loss:.4f}",
            }
        )
        # Reliability (README "Reliability"): last.ckpt every N steps and per epoch, a checkpoint on
        # Ctrl-C/SIGTERM, RNG and plateau state for an exact resume, a guard against NaN losses.
        parser.add_lightning_class_args(PeriodicCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(InterruptCheckpoint, "interrupt")
        parser.add_lightning_class_args(ExactResume, "exact_resume")
        parser.add_lightning_class_args(NonFiniteLossGuard, "nonfinite")
        parser.link_arguments("data.input_shape", "model.input_shape", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not a plugin the user chose
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.logger is None:  # --trainer.logger false: nothing for the LR monitor to write to
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, LearningRateMonitor)]
        return trainer

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint's hyperparameters here, before any CheckpointIO runs
        try:
            super()._parse_ckpt_path()
        except UNREADABLE as err:
            if (corrupt := as_corrupt_checkpoint_error(self.config[self.config.subcommand].get("ckpt_path"), err)) is err:
                raise
            raise corrupt from err

    def before_fit(self) -> None:
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") == "last":
            config["ckpt_path"] = resolve_last_checkpoint(self.trainer) or "last"

    def _default_to_best(self) -> None:
        # Each subcommand is its own process: "best" of a fit in this process cannot exist, so
        # validate/test/predict without --ckpt_path (or with "best") take the best checkpoint on disk.
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") in (None, "best"):
            config["ckpt_path"] = resolve_best_checkpoint(self.trainer, required=config.get("ckpt_path") == "best")

    before_validate = before_test = before_predict = _default_to_best


def resolve_last_checkpoint(trainer: Trainer) -> Optional[str]:
    """The newest ``last*.ckpt`` of earlier runs of this logger, and continue logging in that run's folder.

    Checkpoints live in ``<save_dir>/<name>/version_N/checkpoints`` and a new run gets a new
    ``version_N``, where Lightning's ``ckpt_path="last"`` finds nothing and silently starts
    over. Only applies when the logger's version and the checkpoint folder are left unset.
    """
    logger = trainer.logger
    fixed_dir = any(getattr(cb, "dirpath", None) for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint))
    if logger is None or fixed_dir or getattr(logger, "_version", "set") is not None:
        return None
    root = Path(logger.save_dir or trainer.default_root_dir) / str(logger.name or "")
    found = [p for p in root.glob("*/checkpoints/last*.ckpt") if p.is_file()]
    if not found:
        rank_zero_warn(f"--ckpt_path last: no last*.ckpt under {root}/*/checkpoints; training starts from scratch")
        return None
    newest = max(found, key=lambda p: p.stat().st_mtime)
    version = newest.parent.parent.name
    logger._version = int(version[len("version_"):]) if version.startswith("version_") and version[8:].isdigit() else version
    rank_zero_info(f"Resuming from {newest}; logging continues in {newest.parent.parent}")
    return str(newest)


def resolve_best_checkpoint(trainer: Trainer, required: bool = False) -> Optional[str]:
    """The newest ``best*.ckpt`` in ``<save_dir>/<name>/*/checkpoints`` of this config's logger.

    The ``checkpoint`` group keeps the best epoch as ``best-{epoch}-{val_loss}.ckpt``; with
    ``save_top_k: 1`` each run has one, and the newest one belongs to the latest fit.
    None (with a warning: the model keeps its fresh weights) when there is none, or an
    error if ``required`` (an explicit ``--ckpt_path best``).
    """
    logger = trainer.logger
    root = Path(getattr(logger, "save_dir", None) or trainer.default_root_dir) / str(getattr(logger, "name", "") or "")
    fixed = [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
    patterns = [(d, "best*.ckpt") for d in fixed] or [(root, "*/checkpoints/best*.ckpt"), (root, "checkpoints/best*.ckpt")]
    found = [p for folder, pattern in patterns for p in folder.glob(pattern) if p.is_file()]
    if not found:
        message = f"no best*.ckpt under {root}/*/checkpoints (train first, or pass --ckpt_path PATH)"
        if required:
            raise FileNotFoundError(f"--ckpt_path best: {message}")
        rank_zero_warn(f"{message}: the model keeps its freshly initialized weights")
        return None
    newest = str(max(found, key=lambda p: p.stat().st_mtime))
    rank_zero_info(f"Using the best checkpoint {newest} (pass --ckpt_path to choose another)")
    return newest


def flush_denormals() -> None:
    """Flush denormal floats (|x| < 1.2e-38) to zero on the CPU, where each costs ~100x a normal
    operation. ELU and SELU make them from very negative pre-activations (exp(x) for x < -87):
    the trained 1024-1024 ELU net of configs/fashion_mnist/best.yaml took 2.1x longer per step
    without flushing, and its epochs grew from 11 s to 22 s as training went on. A float32
    network cannot resolve what flushing changes. No effect on GPUs."""
    torch.set_flush_denormal(True)


def build_cli(args: Optional[list[str]] = None, run: bool = True, **kwargs: Any) -> DeeptrainCLI:
    flush_denormals()
    # Lightning's progress bar redraws after every step, ~0.26 ms of Python each (3.8% of a batch-32
    # CIFAR-10 epoch on one CPU thread, benchmarks/README.md); every 10th step looks the same.
    # Lightning reads TQDM_MINITERS as the bar's refresh rate: set it to 1 for every step.
    os.environ.setdefault("TQDM_MINITERS", "10")
    argv = sys.argv
    if args is not None:  # the caller (a tool) already took its own options out of sys.argv:
        sys.argv = argv[:1]  # keep LightningCLI from warning that both are given
    try:
        return DeeptrainCLI(
            Classifier,
            ImageDataModule,
            seed_everything_default=42,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"logger": LOGGER_DEFAULT, "callbacks": [LearningRateMonitor(logging_interval="step")]},
            args=args,
            run=run,
            **kwargs,
        )
    finally:
        sys.argv = argv


# Commands built on the library, beside LightningCLI's fit/validate/test/predict.
# Each maps to "module:function"; the function takes the remaining argv.
TOOLS: dict[str, str] = {}
TOOLS["prune"] = "deeptrain.tools.prune:main"  # magnitude pruning of a checkpoint, sparsity report
TOOLS["diagnose"] = "deeptrain.tools.diagnose:main"  # activation std / gradient norm vs depth at init
TOOLS["lr-find"] = "deeptrain.tools.lr_find:main"  # the LR range test (Lightning's Tuner.lr_find)
TOOLS["compare"] = "deeptrain.tools.compare:main"  # train configs x seeds, report.md + curves.png
TOOLS["schedules"] = "deeptrain.tools.plot_schedules:main"  # draw the LR schedules
TOOLS["export"] = "deeptrain.tools.export:main"  # checkpoint -> torch.export program, BN fused on request
TOOLS["autoencoder"] = "deeptrain.tools.autoencoder:main"  # greedy layer-wise autoencoder pretraining (fit)


def main(args: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    try:
        if argv and argv[0] in TOOLS:
            module, function = TOOLS[argv[0]].split(":")
            getattr(import_module(module), function)(argv[1:])
        else:
            build_cli(None if args is None else argv)  # None: LightningCLI reads sys.argv itself
    except SIGTERMException as stop:  # Ctrl-C or SIGTERM, after InterruptCheckpoint saved
        saved = getattr(stop, "checkpoint_path", None)
        print(f"interrupted: {'saved ' + saved if saved else 'no checkpoint written'}; "
              "resume with the same command and --ckpt_path last", file=sys.stderr)
        sys.exit(128 + int(getattr(stop, "signum", 15)))
    except USER_ERRORS as err:
        if os.environ.get("DEEPTRAIN_DEBUG"):
            raise
        print(f"error: {user_message(err)}", file=sys.stderr)
        sys.exit(1)


# Errors that a bad config, bad data or a diverging run cause; anything else is a bug and
# keeps its traceback. DEEPTRAIN_DEBUG=1 shows the traceback of these too.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, MisconfigurationException, FloatingPointError)


def user_message(err: BaseException) -> str:
    """The message of ``err``; of the error it wraps when jsonargparse raised it around ours
    (``Does not validate against any of the Union subtypes ...`` around ``net.dropout must be ...``)."""
    while _raised_by_jsonargparse(err) and isinstance(cause := err.__cause__ or err.__context__, USER_ERRORS):
        err = cause
    return str(err)


def _raised_by_jsonargparse(err: BaseException) -> bool:
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}jsonargparse{os.sep}" in tb.tb_frame.f_code.co_filename


if __name__ == "__main__":
    main()
