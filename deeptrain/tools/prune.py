"""``deeptrain prune``: magnitude-prune a trained checkpoint, optionally fine-tune the survivors,
report per-layer and global sparsity and the validation accuracy before and after, and save
a checkpoint with plain weights.

    deeptrain prune --config configs/cifar10/alpha_dropout.yaml --ckpt_path logs/.../best.ckpt \\
        --amount 0.8 [--scope global|layer] [--include_head false] [--finetune_epochs 2] [--out pruned.ckpt] \\
        [--data.data_dir ... other overrides of the config]

The config (with any ``--data.*`` overrides) supplies the data; the network and its weights
come from the checkpoint. The saved checkpoint has ``weight`` entries only (no
``weight_orig``/``weight_mask``), so ``Classifier.load_from_checkpoint`` reads it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, Optional

import lightning as L

from deeptrain.nn.sparsity import LayerSparsity, magnitude_prune_, make_permanent_, prunable_weights, sparsity_report
from deeptrain.data.datamodule import ImageDataModule
from deeptrain.training.module import Classifier
from deeptrain.training.runs import resolve_best_checkpoint


def quiet_trainer(**kwargs: Any) -> L.Trainer:
    """A Trainer that writes and prints nothing: no logger, checkpoints, progress bar or device banner
    (the command's own trainer printed it once already)."""
    defaults = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = rank_zero.level
    rank_zero.setLevel(logging.WARNING)
    try:
        return L.Trainer(**{**defaults, **kwargs})
    finally:
        rank_zero.setLevel(level)


def validation_scores(model: L.LightningModule, datamodule: L.LightningDataModule) -> dict[str, float]:
    (scores,) = quiet_trainer().validate(model, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in scores.items()}


def prune_model(
    model: Classifier,
    datamodule: L.LightningDataModule,
    amount: float,
    scope: str = "global",
    include_head: bool = True,
    finetune_epochs: int = 0,
) -> dict[str, Any]:
    """Prune ``model`` in place (masks folded in at the end) and return the report.

    Returns:
        ``{"layers": [LayerSparsity], "global": LayerSparsity, "before": scores,
        "pruned": scores, "finetuned": scores or None}`` with validation ``val_loss``/``val_acc``.
    """
    layers = prunable_weights(model, include_head=include_head)
    report: dict[str, Any] = {"before": validation_scores(model, datamodule)}
    magnitude_prune_(layers, amount, scope=scope)
    report["pruned"] = validation_scores(model, datamodule)
    report["finetuned"] = None
    if finetune_epochs > 0:  # the masks stay on while the survivors train
        quiet_trainer(max_epochs=finetune_epochs).fit(model, datamodule=datamodule)
        report["finetuned"] = validation_scores(model, datamodule)
    make_permanent_(model)
    report["layers"], report["global"] = sparsity_report(layers)
    return report


def format_report(report: dict[str, Any]) -> str:
    rows: list[LayerSparsity] = report["layers"] + [report["global"]]
    width = max(len(r.name) for r in rows)
    lines = [f"{'layer':<{width}} {'zeros':>10} {'weights':>10} {'sparsity':>9}"]
    lines += [f"{r.name:<{width}} {r.zeros:>10} {r.total:>10} {r.sparsity:>9.2%}" for r in rows]
    for key, label in (("before", "before pruning"), ("pruned", "after pruning"), ("finetuned", "after fine-tuning")):
        if report[key] is not None:
            lines.append(f"{label:<18} val_acc {report[key]['val_acc']:.4f}  val_loss {report[key]['val_loss']:.4f}")
    return "\n".join(lines)


def prune(trainer: L.Trainer, datamodule: ImageDataModule, ckpt_path: Optional[str] = None, amount: float = 0.8,
          scope: Literal["global", "layer"] = "global", include_head: bool = True, finetune_epochs: int = 0,
          out: Optional[str] = None) -> dict[str, Any]:
    """Magnitude-prune a trained checkpoint, optionally fine-tune the survivors, report the sparsity.

    Prints per-layer and global sparsity and the validation accuracy before pruning, after it and
    after fine-tuning, and saves a checkpoint with plain weights. The data come from ``--config``
    as for ``fit``; the network and its weights from the checkpoint.

    Args:
        ckpt_path: a trained Classifier checkpoint (default: the newest best checkpoint of the config's runs).
        amount: fraction of the weights to zero, in (0, 1).
        scope: one magnitude threshold over all layers (global), or one per layer.
        include_head: prune the output layer too.
        finetune_epochs: epochs of training with the masks on.
        out: where to save the pruned checkpoint (default: ``<ckpt>-pruned<amount>.ckpt``).
    """
    if not 0 < amount < 1:
        raise ValueError(f"prune: amount must be a fraction in (0, 1), got {amount:g}")
    if finetune_epochs < 0:
        raise ValueError(f"prune: finetune_epochs must be >= 0, got {finetune_epochs}")
    ckpt_path = ckpt_path or resolve_best_checkpoint(trainer)
    model = Classifier.load_from_checkpoint(ckpt_path, map_location="cpu")
    report = prune_model(model, datamodule, amount, scope, include_head, finetune_epochs)
    path = Path(out or str(Path(ckpt_path).with_suffix("")) + f"-pruned{amount:g}.ckpt")
    writer = quiet_trainer()
    writer.strategy.connect(model)  # save_checkpoint needs the module attached, not a fit
    writer.save_checkpoint(path, weights_only=True)
    print(format_report(report))
    print(f"saved {path}")
    report["out"] = str(path)
    return report
