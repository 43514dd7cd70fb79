"""Unsupervised pretraining: the MLP's hidden layers trained greedily, one at a time, as autoencoders.

The chapter's recipe for little labelled data and plenty of unlabelled data (Hinton et al.,
2006; Bengio et al., 2007): train the lowest hidden layer to reconstruct its input, freeze
it, train the next one to reconstruct the first one's codes, and so on up the stack; then
put an output layer on top and fine-tune with the few labels.

    stage l (epochs l*E .. (l+1)*E - 1), h_{-1} = the standardized, flattened image:
        h_{l-1} = blocks 0..l-1 (frozen, eval mode)      (B, n_{l-1})
        h_l     = block l                                 (B, n_l)
        loss    = mean (decoder_l(h_l) - h_{l-1})^2       decoder_l: Linear(n_l, n_{l-1})

The encoder is an :class:`~deeptrain.nn.mlp.MLP` without its output layer, held as ``net``
with the normalizer as ``normalizer``, so its state-dict keys are a Classifier's
(``net.backbone.0.linear.weight``) and ``model.init_from`` reuses its checkpoint as is.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Optional, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from deeptrain._lightning import CheapHookName, attached_trainer
from deeptrain.nn.mlp import MLP, MLPConfig
from deeptrain.nn.normalization import InputNormalizer
from deeptrain.training.compile import foreach_by_default_


class LayerwiseAutoencoder(CheapHookName, L.LightningModule):
    """Greedy layer-wise autoencoder pretraining of an MLP's hidden layers (labels ignored).

    Train for ``epochs_per_layer * depth`` epochs: each stage trains one hidden block and
    its linear decoder; the blocks below it are fixed. ``train_loss``/``val_loss`` are the
    current stage's reconstruction MSE (so they jump when a stage starts: compare them
    within a stage only), logged with ``layer``, the stage's block index.

    Args:
        net: the network to pretrain (:class:`MLPConfig` or a dict); a Classifier that
            reuses this checkpoint must use the same one.
        input_shape: shape of one input image (the CLI links it from the data).
        epochs_per_layer: epochs of each greedy stage.
        optimizer: a ``torch.optim`` optimizer as a callable of the parameters (default NAdam).

    Examples:
        >>> ae = LayerwiseAutoencoder(MLPConfig(depth=3, width=16), input_shape=(1, 8, 8))
        >>> ae(torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)).shape  # codes of the top layer
        torch.Size([4, 16])
    """

    def __init__(self, net: Optional[MLPConfig] = None, input_shape: Sequence[int] = (1, 28, 28),
                 epochs_per_layer: int = 2, optimizer: OptimizerCallable = torch.optim.NAdam):
        super().__init__()
        net = MLPConfig.coerce(net).to_dict()
        input_shape = [int(s) for s in input_shape]
        if not isinstance(epochs_per_layer, int) or epochs_per_layer < 1:
            raise ValueError(f"invalid epochs_per_layer={epochs_per_layer!r}: expected an int >= 1")
        self.save_hyperparameters(ignore=["optimizer"])  # a callable: not a plain value (the CLI saves its config)
        self.net = MLP(input_shape, 1, net)
        self.net.head = nn.Identity()  # an encoder: no output layer (and no head.* keys to confuse init_from)
        self.normalizer = InputNormalizer(input_shape)
        in_widths = [math.prod(input_shape)] + self.net.config.hidden_widths[:-1]
        self.decoders = nn.ModuleList(nn.Linear(n_out, n_in) for n_in, n_out
                                      in zip(in_widths, self.net.config.hidden_widths))
        self.optimizer = optimizer

    @property
    def depth(self) -> int:
        return len(self.net.backbone)

    @property
    def layer(self) -> int:
        """The hidden block the current epoch trains."""
        return min(self.current_epoch // self.hparams.epochs_per_layer, self.depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw images -> codes of the top hidden layer (B, width)."""
        return self.net(self.normalizer(x))

    def reconstruction_loss(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        h = self.net.flatten(self.normalizer(x))  # (B, D): the target of stage 0
        if layer > 0:
            with torch.no_grad():  # the blocks below are done: no gradients, eval mode (set in training_step)
                h = self.net.backbone[:layer](self.net.input_norm(h))
        code = self.net.backbone[layer](self.net.input_norm(h) if layer == 0 else h)  # (B, n_layer)
        return F.mse_loss(self.decoders[layer](code), h)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        layer = self.layer
        for i, block in enumerate(self.net.backbone):
            block.train(i == layer)  # dropout/BN of fixed blocks behave as at inference
        self.net.input_norm.train(layer == 0)
        loss = self.reconstruction_loss(batch[0], layer)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("layer", float(layer), on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("val_loss", self.reconstruction_loss(batch[0], self.layer), on_epoch=True, prog_bar=True)

    def on_fit_start(self) -> None:
        needed = self.depth * self.hparams.epochs_per_layer
        if self.trainer.max_epochs is not None and 0 <= self.trainer.max_epochs < needed:
            warnings.warn(f"max_epochs={self.trainer.max_epochs} pretrains only the first "
                          f"{-(-self.trainer.max_epochs // self.hparams.epochs_per_layer)} of {self.depth} hidden "
                          f"layers; set max_epochs >= {needed} (= depth x epochs_per_layer)", stacklevel=2)

    def on_train_epoch_end(self) -> None:
        if self.current_epoch + 1 >= self.depth * self.hparams.epochs_per_layer:
            self.trainer.should_stop = True  # every layer had its stage

    def setup(self, stage: str) -> None:
        datamodule = getattr(attached_trainer(self), "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "input_stats") and not bool(self.normalizer.fitted):
            self.normalizer.set_stats(*datamodule.input_stats())

    def configure_optimizers(self) -> Any:
        # One optimizer for all stages: a block gets gradients only during its own stage,
        # and NAdam leaves a parameter without a gradient untouched.
        return foreach_by_default_(self.optimizer(self.parameters()))

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.net.apply_max_norm_()  # the same constraint as the Classifier that will reuse the layers
