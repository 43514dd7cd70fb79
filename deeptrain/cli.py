"""The command line: ``deeptrain <command> ...`` (or ``python train.py <command> ...``).

One parser tree, built by LightningCLI and jsonargparse, for every command:

- ``fit``, ``validate``, ``test``, ``predict``: Lightning's, on a :class:`Classifier` and an
  :class:`ImageDataModule` from ``--config`` and dotted keys (``--model.net.depth 10``).
- deeptrain's commands are plain typed functions (:data:`COMMANDS`): their signatures and
  docstrings make their parsers, so no command parses its arguments by hand. Those that take a
  ``model`` get the same ``--config``/``--model.*``/``--data.*``/``--trainer.*`` options as
  ``fit`` and receive the objects ``fit`` would train.

Reliability defaults (docs, "Reliability"): ``last.ckpt`` every N steps and per epoch, a
checkpoint on Ctrl-C/SIGTERM, atomic checkpoint files, RNG and plateau state for an exact
``--ckpt_path last``, a NaN-loss guard. Bad input ends in one ``error: ...`` line, exit code 1.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import sys
import typing
import warnings
from argparse import SUPPRESS
from importlib import import_module
from typing import Any, Callable, Optional, Union

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from deeptrain.callbacks.checkpointing import InterruptCheckpoint, PeriodicCheckpoint
from deeptrain.callbacks.early_stopping import EarlyStopping  # restores the best weights at the end of fit
from deeptrain.callbacks.nonfinite import NonFiniteLossGuard
from deeptrain.callbacks.prediction_writer import PredictionWriter
from deeptrain.callbacks.resume import ExactResume
from deeptrain.data.datamodule import ImageDataModule
from deeptrain.training.checkpoint_io import (UNREADABLE, AtomicCheckpointIO, as_corrupt_checkpoint_error,
                                             storage_error_message)
from deeptrain.training.lean_loop import use_lean_loop
from deeptrain.training.module import Classifier
from deeptrain.training.profiler import swap_in_no_profiler
from deeptrain.training.runs import FRESH_WEIGHTS, log_into_run_of, resolve_best_checkpoint, resolve_last_checkpoint

LOGGER_DEFAULT = {
    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
    "init_args": {"save_dir": "logs", "name": "deeptrain", "default_hp_metric": False},
}

# deeptrain's commands beside Lightning's fit/validate/test/predict: "module:function". The first
# paragraph of each docstring is the command's description in `deeptrain --help`. A function
# with a trainer, model or datamodule parameter (MODEL_ARGS) is a model command, built from
# --config like fit; the others need no config.
COMMANDS: dict[str, str] = {
    "lr_find": "deeptrain.tools.lr_find:lr_find",
    "prune": "deeptrain.tools.prune:prune",
    "export": "deeptrain.tools.export:export",
    "diagnose": "deeptrain.tools.diagnose:diagnose",
    "schedules": "deeptrain.tools.plot_schedules:schedules",
    "compare": "deeptrain.tools.compare:compare",
    "tune": "deeptrain.tools.tune:tune",
    "autoencoder": "deeptrain.tools.autoencoder:autoencoder",
}
# One line each in `deeptrain --help` (Lightning's own docstrings run to a paragraph).
LIGHTNING_COMMANDS = {
    "fit": "Train a model from a YAML config: checkpoints, TensorBoard logs, exact resume with --ckpt_path last.",
    "validate": "Score a checkpoint (default: the config's newest best) on the validation split.",
    "test": "Score a checkpoint (default: the config's newest best) on the test split.",
    "predict": "Write a checkpoint's class probabilities for the test split to a CSV file.",
}
# A model command that is not a run: the sweep logs nothing, whatever logger the config sets (prune
# trains and scores with trainers of its own and uses the config's logger only to find its runs).
UNLOGGED = {"lr_find"}
# What a model command receives from the CLI rather than from options.
MODEL_ARGS = {"trainer", "model", "datamodule"}


def command_function(name: str) -> Callable[..., Any]:
    module, function = COMMANDS[name].split(":")
    return getattr(import_module(module), function)


def is_model_command(function: Callable[..., Any]) -> bool:
    return bool(MODEL_ARGS & set(inspect.signature(function).parameters))


def model_annotation(function: Callable[..., Any]) -> type:
    return typing.get_type_hints(function).get("model", Classifier)


def positional_lists(function: Callable[..., Any]) -> list[str]:
    """Required ``list[...]`` parameters: given as ``deeptrain compare a.yaml b.yaml``."""
    hints = typing.get_type_hints(function)
    return [name for name, p in inspect.signature(function).parameters.items()
            if p.default is inspect.Parameter.empty and typing.get_origin(hints.get(name)) is list]


def parameter_help(function: Callable[..., Any], name: str) -> str:
    from docstring_parser import parse  # jsonargparse[signatures] reads the other parameters' help with it

    return next((p.description for p in parse(inspect.getdoc(function)).params if p.arg_name == name), "")


def summary(function: Callable[..., Any]) -> str:
    """A docstring without its ``Args:``/``Returns:`` sections (the options' help shows those)."""
    return re.split(r"\n\s*(?:Args|Returns|Raises|Examples?):\n", inspect.getdoc(function))[0].strip()


def description(function: Callable[..., Any]) -> str:
    """The first paragraph of a docstring, on one line."""
    return " ".join(inspect.getdoc(function).split("\n\n")[0].split())


class DeeptrainCLI(LightningCLI):
    result: Any = None  # what a deeptrain command returned (for main(args) callers and tests)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), **{name: MODEL_ARGS for name in COMMANDS}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        if issubclass(self._model_class, Classifier):  # not the layer-wise autoencoder: its stages' losses differ
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
            parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        # Reliability (docs "Reliability"): last.ckpt every N steps and per epoch, a checkpoint on
        # Ctrl-C/SIGTERM, RNG and plateau state for an exact resume, a guard against NaN losses.
        parser.add_lightning_class_args(PeriodicCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(InterruptCheckpoint, "interrupt")
        parser.add_lightning_class_args(ExactResume, "exact_resume")
        parser.add_lightning_class_args(NonFiniteLossGuard, "nonfinite")
        parser.link_arguments("data.input_shape", "model.input_shape", apply_on="instantiate")

    # ---- the parser tree. LightningCLI private API: tests/test_cli.py pins what these overrides assume.
    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        """Lightning's four commands as LightningCLI builds them, then deeptrain's (:data:`COMMANDS`)."""
        self._subcommand_parsers: dict[str, LightningArgumentParser] = {}
        commands = parser.add_subcommands()
        for name in self.subcommands():
            if name in COMMANDS:
                function = command_function(name)
                subparser = self._command_parser(name, function, **kwargs.get(name, {}))
                help = description(function)
            else:
                help = LIGHTNING_COMMANDS[name]
                subparser = self._prepare_subcommand_parser(self.trainer_class, name, description=help,
                                                            **kwargs.get(name, {}))
            if name == "predict":
                subparser.add_lightning_class_args(PredictionWriter, "predictions")
            self._subcommand_parsers[name] = subparser
            commands.add_subcommand(name, subparser, help=help)

    def _command_parser(self, name: str, function: Callable[..., Any], **kwargs: Any) -> LightningArgumentParser:
        """A model command gets fit's options (its ``model`` annotation is the model class) and its
        function's; a command that needs no config only its function's, with a required list (the
        configs of ``compare``) as positional arguments."""
        if is_model_command(function):
            parser = self.init_parser(description=summary(function), **kwargs)
            model_class, self._model_class = self._model_class, model_annotation(function)
            try:
                self._add_arguments(parser)
            finally:
                self._model_class = model_class
            skip = MODEL_ARGS & set(inspect.signature(function).parameters)
        else:  # no --config file of fit's kind: `tune --config` is the fit config the search starts from
            parser = self.parser_class(description=summary(function), **kwargs)
            # LightningCLI seeds every command; these take their own seed where they need one
            parser.add_argument("--seed_everything", type=Union[bool, int], default=False, help=SUPPRESS)
            skip = set(positional_lists(function))
            for key in skip:
                parser.add_argument(key, nargs="+", help=parameter_help(function, key))
        added = parser.add_function_arguments(function, skip=skip)
        self._subcommand_method_arguments[name] = added + sorted(skip - MODEL_ARGS)
        return parser

    def instantiate_classes(self) -> None:
        if self.subcommand in COMMANDS and not is_model_command(command_function(self.subcommand)):
            self.config_init = self.parser.instantiate_classes(self.config)  # no model, data or trainer
            return
        if self.subcommand not in (None, "fit"):
            self.save_config_callback = None  # config.yaml describes the fit that made the run
        super().instantiate_classes()

    def _run_subcommand(self, subcommand: str) -> None:
        """Lightning's flow (``before_<command>``, the command, ``after_<command>``), keeping what the
        command returns in ``self.result`` (metrics of validate/test, a deeptrain command's result)."""
        if callable(before := getattr(self, f"before_{subcommand}", None)):
            before()
        if subcommand in COMMANDS:
            self.result = self._run_command(subcommand)
        else:
            self.result = getattr(self.trainer, subcommand)(**self._prepare_subcommand_kwargs(subcommand))
        if callable(after := getattr(self, f"after_{subcommand}", None)):
            after()

    def _run_command(self, name: str) -> Any:
        function = command_function(name)
        kwargs = {k: v for k, v in self.config_init[name].items() if k in self._subcommand_method_arguments[name]}
        if is_model_command(function):
            given = {"trainer": self.trainer, "model": self.model, "datamodule": self.datamodule}
            kwargs.update({k: v for k, v in given.items() if k in inspect.signature(function).parameters})
        return function(**kwargs)

    # ---- checkpoints and runs
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not a plugin the user chose
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if self.subcommand in UNLOGGED:
            trainer.logger = None
        if trainer.logger is None:  # --trainer.logger false: nothing for the LR monitor to write to
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, LearningRateMonitor)]
        swap_in_no_profiler(trainer)  # profiles nothing, as Lightning's default, cheaper per hook call
        use_lean_loop(trainer)  # Lightning's loop without the layers that do nothing in the common setup
        return trainer

    def _parse_ckpt_path(self) -> None:
        # LightningCLI replaces the model's options by the checkpoint's hyperparameters here,
        # before any CheckpointIO runs: an explicit --model.* flag it would replace is an error.
        subcommand = self.config.get("subcommand")
        if subcommand in COMMANDS and not is_model_command(command_function(subcommand)):
            return  # its --ckpt_path is the command's own: no model options to fill in
        before = self.config[subcommand].clone() if subcommand else None
        try:
            super()._parse_ckpt_path()
        except UNREADABLE as err:
            if (corrupt := as_corrupt_checkpoint_error(self.config[subcommand].get("ckpt_path"), err)) is err:
                raise
            raise corrupt from err
        if before is not None:
            check_no_flag_overridden(before, self.config[subcommand], self._command_line_args())

    def _command_line_args(self) -> list[str]:
        args = self._args
        return list(args) if isinstance(args, (list, tuple)) else sys.argv[1:] if args is None else []

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        self._args = args
        super().parse_arguments(parser, args)

    def before_fit(self) -> None:
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") == "last":
            config["ckpt_path"] = resolve_last_checkpoint(self.trainer) or "last"

    def _evaluate_a_run(self) -> None:
        # Each command is its own process: "best" of a fit in this process cannot exist, so without
        # --ckpt_path (or with "best") the best checkpoint on disk is evaluated, and its run's
        # TensorBoard folder receives the metrics (not a new, otherwise empty version_N).
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") == FRESH_WEIGHTS:
            config["ckpt_path"] = None
            rank_zero_info(f"--ckpt_path {FRESH_WEIGHTS}: the model keeps its freshly initialized weights")
            return
        if config.get("ckpt_path") in (None, "best"):
            config["ckpt_path"] = resolve_best_checkpoint(self.trainer)
        log_into_run_of(self.trainer, config["ckpt_path"])

    before_validate = before_test = before_predict = _evaluate_a_run


def check_no_flag_overridden(before: Any, after: Any, args: list[str]) -> None:
    """Raise if a ``--model.*`` option given on the command line was replaced by the checkpoint's value."""
    for key in flag_keys(args, prefix="model."):
        old, new = before.get(key), after.get(key)
        if old != new:
            raise ValueError(
                f"--{key} {old!r} conflicts with the checkpoint's {key} = {new!r}: the network is rebuilt from "
                "the checkpoint's own hyperparameters; drop the option, or train a new model without --ckpt_path")


def flag_keys(args: list[str], prefix: str) -> list[str]:
    """Dotted keys of the ``--key value`` / ``--key=value`` options under ``prefix`` in ``args``."""
    keys = [a[2:].split("=", 1)[0] for a in args if a.startswith("--" + prefix)]
    return [k for k in keys if not k.endswith(("help", "+"))]


def flush_denormals() -> None:
    """Flush denormal floats (|x| < 1.2e-38) to zero on the CPU, where each costs ~100x a normal
    operation. ELU and SELU make them from very negative pre-activations (exp(x) for x < -87):
    the trained 1024-1024 ELU net of configs/fashion_mnist/best.yaml took 2.1x longer per step
    without flushing, and its epochs grew from 11 s to 22 s as training went on. A float32
    network cannot resolve what flushing changes. No effect on GPUs."""
    torch.set_flush_denormal(True)


# Warnings a deeptrain user cannot act on (they concern Lightning's or torch's internals, or
# deeptrain's deliberate choices), filtered in every command; everything else still shows.
QUIET = [
    r".*litlogger.*|.*LitLogger.*",  # Lightning's advertisement for its cloud logger
    r".*LeafSpec.*is deprecated.*",  # torch.utils._pytree, called by Lightning
    r".*weights_only.*",  # Lightning loads its own checkpoints
    r".*does not have many workers.*",  # batches are in-memory tensor slices: no workers needed
    r".*LightningCLI's args parameter is intended.*",  # main(args) is the public entry point
    r".*The dirpath has changed from.*",  # evaluating a checkpoint from another working directory
    r".*Couldn't infer the batch indices.*",  # PredictionWriter does not use them
    r"(?s).*was deprecated in v4.* will be removed in v5",  # jsonargparse's, about LightningCLI's calls
]


def quiet_warnings() -> None:
    for message in QUIET:
        warnings.filterwarnings("ignore", message=message)
    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, DropAdvertisements) for f in rank_zero_logger.filters):
        rank_zero_logger.addFilter(DropAdvertisements())


class DropAdvertisements(logging.Filter):
    """Lightning logs a tip for its cloud logger with every Trainer: not the user's business."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage().lower()


def build_cli(args: Optional[list[str]] = None, run: bool = True, **kwargs: Any) -> DeeptrainCLI:
    """The CLI on ``args`` (None: ``sys.argv``). ``run=False`` only builds the model, data and
    trainer of a config (no command): ``build_cli(["--config", path], run=False).model``."""
    flush_denormals()
    quiet_warnings()
    # Lightning's progress bar redraws after every step, ~0.26 ms of Python each (3.8% of a batch-32
    # CIFAR-10 epoch on one CPU thread, benchmarks/README.md); every 10th step looks the same.
    # Lightning reads TQDM_MINITERS as the bar's refresh rate: set it to 1 for every step.
    os.environ.setdefault("TQDM_MINITERS", "10")
    return DeeptrainCLI(
        Classifier,
        ImageDataModule,
        seed_everything_default=42,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"logger": LOGGER_DEFAULT, "callbacks": [LearningRateMonitor(logging_interval="step")]},
        parser_kwargs={"prog": "deeptrain", "description": DESCRIPTION, **kwargs.pop("parser_kwargs", {})},
        args=args,
        run=run,
        **kwargs,
    )


DESCRIPTION = ("deeptrain: the techniques of chapter 11 of Hands-On Machine Learning (training deep networks) "
               "in PyTorch + Lightning. `deeptrain COMMAND --help` describes each command.")


def console() -> None:
    """The ``deeptrain`` script. A console script passes its function's return value to ``sys.exit``,
    which would print ``main``'s result and exit with 1."""
    main()


def main(args: Optional[list[str]] = None) -> Any:
    """Run a command; returns what it returned (``test``'s metrics, ``lr_find``'s sweep, ...)."""
    try:
        return build_cli(None if args is None else list(args)).result
    except SIGTERMException as stop:  # Ctrl-C or SIGTERM; InterruptCheckpoint said where it saved
        if getattr(stop, "checkpoint_path", None) is None:
            print("interrupted: no checkpoint written", file=sys.stderr)
        sys.exit(128 + int(getattr(stop, "signum", 15)))
    except USER_ERRORS as err:
        if os.environ.get("DEEPTRAIN_DEBUG"):
            raise
        print(f"error: {user_message(err)}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:  # a full or read-only disk: one line naming the path (other OSErrors keep their traceback)
        if (message := storage_error_message(err)) is None or os.environ.get("DEEPTRAIN_DEBUG"):
            raise
        print(f"error: {message}", file=sys.stderr)
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
