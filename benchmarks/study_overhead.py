"""What running studies on Ray Tune costs and gains on this machine.

1. Per-epoch overhead: one run of a config as a Ray Tune trial (``deeptrain compare``, one
   seed) versus the same ``deeptrain fit`` in this process, both on one torch thread; the
   wall seconds per epoch after the first (training, validation and, under Ray, the report),
   best of ``--repeats`` alternating rounds.
   Target: ratio <= 1.05.
2. Concurrency: the wall time of a whole 4-run ``deeptrain compare`` (2 configs x 2 seeds,
   each trial 1 CPU), one trial at a time (``max_concurrent=1``) versus as many as the cores
   allow, as a ratio, Ray's start included.

    python benchmarks/study_overhead.py [--config configs/fashion_mnist/mlp.yaml] [--train_size 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml

from common import machine, print_table, write_json
from deeptrain.tools.compare import compare
from deeptrain.tools.study import ray_session, train_trial


def per_epoch(result: dict) -> float:
    """Seconds per epoch after the first (start-up), wall clock: what Ray adds between epochs
    (the report's round trip to the driver) counts too."""
    h = result["history"]
    return (h[-1]["wall_s"] - h[0]["wall_s"]) / (len(h) - 1)


def overhead(config: Path, overrides: list[str], folder: Path, repeats: int) -> dict:
    """Median epoch seconds alone and under Ray (best of ``repeats`` alternating rounds) and their ratio."""
    alone, ray = [], []
    with ray_session(num_cpus=1):
        for i in range(repeats):
            torch.set_num_threads(1)
            run = {"config": str(config), "run_dir": str(folder / f"alone{i}"), "overrides": overrides, "seed": 0, "extras": False}
            alone.append(per_epoch(train_trial(run)))
            ray.append(per_epoch(compare([str(config)], str(folder / f"ray{i}"), seeds=1, overrides=overrides)[0]))
    return {"alone_s": min(alone), "ray_s": min(ray), "ratio": min(ray) / min(alone), "alone_runs": alone, "ray_runs": ray}


def concurrency(configs: list[Path], overrides: list[str], folder: Path) -> dict:
    """Wall seconds of a 2 configs x 2 seeds compare, sequential and concurrent (each starts its own Ray)."""
    times = {}
    for name, limit in (("sequential", 1), ("concurrent", None)):
        start = time.perf_counter()
        results = compare([str(c) for c in configs], str(folder / name), seeds=2, overrides=overrides, max_concurrent=limit)
        times[name] = time.perf_counter() - start
        assert all(r["status"] == "ok" for r in results), results
    return {**times, "ratio": times["sequential"] / times["concurrent"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/fashion_mnist/mlp.yaml")
    parser.add_argument("--data_dir", default=None, help="data folder (default: the config's / DEEPTRAIN_DATA_DIR)")
    parser.add_argument("--train_size", type=int, default=20000, help="training examples per epoch (overhead part)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    base = [f"--trainer.max_epochs={args.epochs}",
            *([f"--data.data_dir={args.data_dir}"] if args.data_dir else [])]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = Path(args.config).resolve()
        rows = [{"measure": "epoch seconds, fit alone vs Ray trial",
                 **overhead(config, [*base, f"--data.train_size={args.train_size}"], folder, args.repeats)}]
        # two configs that differ in one key, a quarter of the data each: a 4-run study in a few minutes
        twin = folder / "twin.yaml"
        twin.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "seed_everything": 1}))
        small = [*base, f"--data.train_size={args.train_size // 4}"]
        rows.append({"measure": "4-run compare wall seconds, sequential vs concurrent",
                     **concurrency([config, twin], small, folder)})
    print_table([{k: v for k, v in r.items() if not k.endswith("_runs")} for r in rows],
                ["measure", "alone_s", "ray_s", "sequential", "concurrent", "ratio"])
    print(f"cores: {machine()['cores']}, load average: {machine()['load_average_1min']}")
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
