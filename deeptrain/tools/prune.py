"""``deeptrain prune``: magnitude-prune a trained checkpoint, optionally fine-tune the survivors,
report per-layer and global sparsity and the validation accuracy before and after, and save
a checkpoint with plain weights.

    deeptrain prune --ckpt logs/.../best.ckpt --config configs/cifar10/alpha_dropout.yaml \\
        --amount 0.8 [--scope global|layer] [--no-head] [--finetune_epochs 2] [--out pruned.ckpt] \\
        [--data.data_dir ... other LightningCLI overrides of the config]

The config (with any ``--data.*`` overrides) supplies the data; the network and its weights
come from the checkpoint. The saved checkpoint has ``weight`` entries only (no
``weight_orig``/``weight_mask``), so ``Classifier.load_from_checkpoint`` reads it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L

from deeptrain.nn.sparsity import SCOPES, LayerSparsity, magnitude_prune_, make_permanent_, prunable_weights, sparsity_report
from deeptrain.training.module import Classifier


def quiet_trainer(**kwargs: Any) -> L.Trainer:
    """A Trainer that writes nothing: no logger, no checkpoints, no progress bar."""
    defaults = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return L.Trainer(**{**defaults, **kwargs})


def validation_scores(model: L.LightningModule, datamodule: L.LightningDataModule) -> dict[str, float]:
    (scores,) = quiet_trainer().validate(model, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in scores.items()}


def datamodule_from_config(config: Optional[str], overrides: Sequence[str] = ()) -> L.LightningDataModule:
    """The DataModule a LightningCLI config (plus overrides like ``--data.data_dir X``) describes."""
    from deeptrain.cli import build_cli  # the CLI sits above the tools

    args = (["--config", config] if config else []) + list(overrides) + ["--trainer.logger=false"]
    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns when it sees both args and a command line
    try:
        return build_cli(args, run=False).datamodule
    finally:
        sys.argv = argv


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


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="deeptrain prune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint of a trained Classifier")
    parser.add_argument("--config", help="the training config (for the data); --data.* overrides may follow")
    parser.add_argument("--amount", type=float, default=0.8, help="fraction of the weights to zero (default 0.8)")
    parser.add_argument("--scope", choices=SCOPES, default="global", help="one threshold over all layers, or per layer")
    parser.add_argument("--no-head", dest="include_head", action="store_false", help="leave the output layer dense")
    parser.add_argument("--finetune_epochs", type=int, default=0, help="epochs of training with the masks on")
    parser.add_argument("--out", help="where to save the pruned checkpoint (default: <ckpt>-pruned<amount>.ckpt)")
    return parser.parse_known_args(list(argv))


def main(argv: Sequence[str]) -> dict[str, Any]:
    args, overrides = parse_args(argv)
    datamodule = datamodule_from_config(args.config, overrides)
    model = Classifier.load_from_checkpoint(args.ckpt, map_location="cpu")
    report = prune_model(model, datamodule, args.amount, args.scope, args.include_head, args.finetune_epochs)
    out = Path(args.out or str(Path(args.ckpt).with_suffix("")) + f"-pruned{args.amount:g}.ckpt")
    trainer = quiet_trainer()
    trainer.strategy.connect(model)  # save_checkpoint needs the module attached, not a fit
    trainer.save_checkpoint(out, weights_only=True)
    print(format_report(report))
    print(f"saved {out}")
    report["out"] = str(out)
    return report
