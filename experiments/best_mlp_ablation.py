"""Ablation of configs/cifar10/best_mlp.yaml (issue 18): the full recipe against the same recipe
with one ingredient taken out, all on the same budget, with `deeptrain compare`.

    python experiments/best_mlp_ablation.py --data_dir ../shared/data/cifar10-jpeg \
        --out studies/best_mlp/ablation --epochs 15 --seeds 1

Each variant is the full config with a few keys changed, written to OUT/configs/<variant>.yaml (so
that each run is exactly `deeptrain fit --config` of a file), and `compare` trains them all:
OUT/report.md holds the table, OUT/curves.png the curves.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import yaml

from deeptrain.tools.compare import compare

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "configs" / "cifar10" / "best_mlp.yaml"

# variant: (what it takes out, the dotted keys it changes)
VARIANTS: dict[str, tuple[str, dict]] = {
    "full": ("nothing", {}),
    "no_augmentation": ("flips and crops", {"data.hflip": False, "data.crop_padding": 0}),
    "no_batchnorm": ("batch norm (inputs standardized, biases back)", {"model.net.norm": "none", "model.net.input_norm": False}),
    "no_dropout": ("dropout", {"model.net.dropout": 0.0}),
    "no_label_smoothing": ("label smoothing", {"model.label_smoothing": 0.0}),
    "no_weight_decay": ("weight decay", {"model.optimizer.init_args.weight_decay": 0.0}),
    "no_onecycle": ("1cycle (constant lr 0.01, SGD + Nesterov)", {"model.lr_scheduler": None}),
    "exercise_shape": ("width (the exercise's 20 x 100 network, same recipe)", {"model.net.widths": None, "model.net.depth": 20, "model.net.width": 100}),
}


def variant_config(changes: dict) -> dict:
    config = copy.deepcopy(yaml.safe_load(BASE.read_text()))
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = config
        for part in parents:
            node = node[part]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="../shared/data/cifar10-jpeg", help="CIFAR-10 as an image folder")
    parser.add_argument("--out", default="studies/best_mlp/ablation")
    parser.add_argument("--epochs", type=int, default=15, help="the budget of every variant (1cycle stretches to it)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--max_concurrent", type=int, default=1)
    args = parser.parse_args()
    folder = Path(args.out).resolve() / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in args.variants:
        path = folder / f"{name}.yaml"
        path.write_text(f"# {BASE.name} without {VARIANTS[name][0]}\n" + yaml.safe_dump(variant_config(VARIANTS[name][1]), sort_keys=False))
        paths.append(str(path))
    data = ["--data.dataset=image_folder", f"--data.data_dir={Path(args.data_dir).resolve()}",
            f"--trainer.max_epochs={args.epochs}"]
    compare(paths, str(Path(args.out).resolve()), seeds=args.seeds, overrides=data, max_concurrent=args.max_concurrent)


if __name__ == "__main__":
    main()
