"""Issue 18's searches: for each CIFAR-10 exercise config, `deeptrain tune` over its space in
configs/search/, then its winner over 5 seeds with `deeptrain compare` (validation only).

    python experiments/cifar10_search.py onecycle batchnorm selu alpha_dropout best \
        --data_dir ../shared/data/cifar10-jpeg --out studies/cifar10

Each name runs `tune --config configs/cifar10/<name>.yaml --space configs/search/cifar10_<name>.yaml`
with the space file's own options (its search budget: fewer epochs, ASHA; whether the first trial is
the config itself), then `compare` of the config with the winning values on seeds 0-4 and the config's
full budget. `<name>_full` searches the same config with the space `cifar10_<name>_full.yaml`
(every trial at the full budget) into `<out>/<name>_full/`. Both steps resume: the same
command redoes no finished trial or run. The winners go into configs/cifar10/ by hand, with a
comment naming this search; reports/cifar10/search.md holds the tables.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

from deeptrain.tools.compare import compare
from deeptrain.tools.study import param_args
from deeptrain.tools.tune import tune

ROOT = Path(__file__).resolve().parents[1]
# one per space file configs/search/cifar10_<name>.yaml; <config>_full searches <config>.yaml at its full budget
NAMES = sorted(p.stem.removeprefix("cifar10_") for p in (ROOT / "configs" / "search").glob("cifar10_*.yaml"))


def search_command(space: Path) -> dict:
    """The tune options written in the space file's comment (num_samples, asha, grace_period, epochs,
    start_from_config)."""
    text = " ".join(line.lstrip("# ").rstrip("\\ ") for line in space.read_text().splitlines() if line.startswith("#"))
    options = {"num_samples": int(re.search(r"--num_samples (\d+)", text).group(1)),
               "asha": "--asha true" in text, "start_from_config": "--start_from_config true" in text}
    grace = re.search(r"--grace_period (\d+)", text)
    options["grace_period"] = int(grace.group(1)) if grace else 1
    epochs = re.search(r"--trainer\.max_epochs=(\d+)", text)
    options["epochs"] = [f"--trainer.max_epochs={epochs.group(1)}"] if epochs else []
    return options


def run(name: str, data: list[str], out: Path, seeds: int, samples: int | None, concurrent: int) -> None:
    config = ROOT / "configs" / "cifar10" / f"{name.removesuffix('_full')}.yaml"
    space = ROOT / "configs" / "search" / f"cifar10_{name}.yaml"
    options = search_command(space)
    best = tune(str(config), str(space), str(out / name / "search"), num_samples=samples or options["num_samples"],
                asha=options["asha"], grace_period=options["grace_period"], overrides=data + options["epochs"],
                max_concurrent=concurrent, start_from_config=options["start_from_config"])
    winner = param_args(best["params"])
    print(f"{name}: winner {shlex.join(winner)} (val_acc {best['val_acc']:.4f} on the search budget)", flush=True)
    (out / name / "winner.json").write_text(json.dumps(best["params"], indent=1))
    compare([str(config)], str(out / name / "seeds"), seeds=seeds, overrides=data + winner,
            max_concurrent=concurrent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", choices=NAMES, metavar="NAME",
                        help=f"searches to run, in order: {', '.join(NAMES)} (<config>_full: every trial at the "
                             "config's full budget, starting from the config itself)")
    parser.add_argument("--data_dir", default="../shared/data/cifar10-jpeg", help="CIFAR-10 as an image folder")
    parser.add_argument("--out", default="studies/cifar10", help="<out>/<name>/: search/, winner.json, seeds/")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the winner's rerun (0..N-1)")
    parser.add_argument("--num_samples", type=int, default=None, help="trials per search (default: the space file's)")
    parser.add_argument("--concurrent", type=int, default=1, help="trials or seeds at a time (one torch thread each)")
    args = parser.parse_args()
    data = ["--data.dataset=image_folder", f"--data.data_dir={Path(args.data_dir).resolve()}"]
    for name in args.names:
        run(name, data, Path(args.out).resolve(), args.seeds, args.num_samples, args.concurrent)


if __name__ == "__main__":
    main()
