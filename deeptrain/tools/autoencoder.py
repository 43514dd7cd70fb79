"""``deeptrain autoencoder``: greedy layer-wise autoencoder pretraining from YAML.

LightningCLI's ``fit``/``validate`` for a :class:`~deeptrain.training.autoencoder.LayerwiseAutoencoder`
on an :class:`~deeptrain.data.datamodule.ImageDataModule` (labels are ignored). The saved
checkpoint is then reused by a classifier with ``model.init_from``:

    deeptrain autoencoder fit --config configs/transfer/pretrain_autoencoder.yaml
    deeptrain fit --config configs/transfer/few_labels_on_autoencoder.yaml \\
        --model.init_from.checkpoint logs/autoencoder/version_0/checkpoints/last.ckpt

Training stops by itself once every hidden layer had its ``epochs_per_layer`` epochs. No
early stopping: the reconstruction loss of one stage is not comparable with the next's.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from deeptrain.data.datamodule import ImageDataModule
from deeptrain.training.autoencoder import LayerwiseAutoencoder

LOGGER_DEFAULT = {
    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
    "init_args": {"save_dir": "logs", "name": "autoencoder", "default_hp_metric": False},
}


class AutoencoderCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.filename": "autoencoder-{epoch:03d}"})
        parser.link_arguments("data.input_shape", "model.input_shape", apply_on="instantiate")


def build_autoencoder_cli(args: Optional[list[str]] = None, run: bool = True, **kwargs: Any) -> AutoencoderCLI:
    return AutoencoderCLI(LayerwiseAutoencoder, ImageDataModule, seed_everything_default=42,
                          save_config_kwargs={"overwrite": True}, trainer_defaults={"logger": LOGGER_DEFAULT},
                          args=args, run=run, **kwargs)


def main(argv: Optional[list[str]] = None) -> None:
    # `deeptrain autoencoder fit ...`: the arguments after the tool's name are the CLI's, by design
    warnings.filterwarnings("ignore", "LightningCLI's args parameter")
    build_autoencoder_cli(list(argv or []))
