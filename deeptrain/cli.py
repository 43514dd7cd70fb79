"""The command line: ``python train.py fit --config configs/...`` (or the ``deeptrain`` script).

LightningCLI owns the config: ``model`` is a :class:`Classifier`, ``data`` an
:class:`ImageDataModule`; the data's input shape and class count are linked into the
model, so a config never repeats them.
"""

from __future__ import annotations

from typing import Any, Optional

from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from deeptrain.data.datamodule import ImageDataModule
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
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch:03d}-{val_loss:.4f}",
            }
        )
        parser.link_arguments("data.input_shape", "model.input_shape", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")


def build_cli(args: Optional[list[str]] = None, run: bool = True, **kwargs: Any) -> DeeptrainCLI:
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


def main(args: Optional[list[str]] = None) -> None:
    build_cli(args)


if __name__ == "__main__":
    main()
