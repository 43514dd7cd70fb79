"""``deeptrain autoencoder``: greedy layer-wise autoencoder pretraining from YAML.

``fit`` of a :class:`~deeptrain.training.autoencoder.LayerwiseAutoencoder` on an
:class:`~deeptrain.data.datamodule.ImageDataModule` (labels are ignored). The saved checkpoint is
then reused by a classifier with ``model.init_from``:

    deeptrain autoencoder --config configs/transfer/pretrain_autoencoder.yaml
    deeptrain fit --config configs/transfer/few_labels_on_autoencoder.yaml \\
        --model.init_from.checkpoint logs/transfer_autoencoder/version_0/checkpoints/last.ckpt

Training stops by itself once every hidden layer had its ``epochs_per_layer`` epochs. No
early stopping: the reconstruction loss of one stage is not comparable with the next's.
"""

from __future__ import annotations

import lightning as L

from deeptrain.data.datamodule import ImageDataModule
from deeptrain.training.autoencoder import LayerwiseAutoencoder


def autoencoder(trainer: L.Trainer, model: LayerwiseAutoencoder, datamodule: ImageDataModule,
                ckpt_path: str | None = None) -> LayerwiseAutoencoder:
    """Greedy layer-wise autoencoder pretraining of an MLP's hidden layers (fit, labels ignored).

    The options are fit's, with a ``LayerwiseAutoencoder`` as the model; ``last.ckpt`` of the run
    is what a classifier's ``model.init_from.checkpoint`` reuses.

    Args:
        ckpt_path: resume from this checkpoint (``last``: the newest of the config's runs).
    """
    if ckpt_path == "last":
        from deeptrain.training.runs import resolve_last_checkpoint

        ckpt_path = resolve_last_checkpoint(trainer)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model
