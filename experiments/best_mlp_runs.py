"""Train variants of configs/cifar10/best_mlp.yaml as parallel `deeptrain fit` processes and
tabulate their validation accuracy from the TensorBoard logs (issue 18).

Made for a lent GPU, where one process leaves the card mostly idle and a dozen share it well,
and for machines without Ray (what `best_mlp_ablation.py` uses through `deeptrain compare`).
Each run is exactly `deeptrain fit --config <variant>.yaml` with the data, seed and epoch budget
on the command line; a run is named ``<variant>-s<seed>-e<epochs>``.

    python experiments/best_mlp_runs.py --data_dir ../shared/data/cifar10-jpeg --out studies/best_mlp/runs \
        --runs full:0:40 full:1:40 no_dropout:0:40 wide:0:100 --parallel 4

OUT/summary.json and OUT/summary.md hold (OUT/curves.png draws), for every run in OUT (this call's and
earlier ones'): epochs done, final and best val_acc, and the median seconds per epoch; OUT/logs holds
the TensorBoard logs and checkpoints. Where `full` has two or more seeds at a budget, summary.md also
holds the ablation at that budget (OUT/ablation.png draws it): each variant's best val_acc against the
full recipe's mean, in points and in the full seeds' standard deviations. `--runs` left out: only the tables and the plot.
Runs still going at --deadline seconds are stopped and reported with the epochs they reached.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from best_mlp_ablation import VARIANTS, variant_config  # noqa: E402

# Beyond the ablation: larger budgets of the same recipe are run by epochs; these change its shape.
VARIANTS = {**VARIANTS,
            "wide": ("widths 4096-2048-1024 (wider)", {"model.net.widths": [4096, 2048, 1024]}),
            "deep": ("widths 2048-2048-1024-512 (a layer more)", {"model.net.widths": [2048, 2048, 1024, 512]})}


def run_command(config: Path, name: str, seed: int, epochs: int, args) -> list[str]:
    return [sys.executable, "-m", "deeptrain.cli", "fit", "--config", str(config),
            "--data.dataset=image_folder", f"--data.data_dir={Path(args.data_dir).resolve()}",
            f"--seed_everything={seed}", f"--trainer.max_epochs={epochs}",
            "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={args.out / 'logs'}",
            f"--trainer.logger.init_args.name={name}"]


def read_curve(log_dir: Path) -> dict:
    """val_acc and train_acc per epoch and the wall time between epochs, from the run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc, train = [], []
    for events in sorted(log_dir.rglob("events.out.tfevents.*")):
        loaded = EventAccumulator(str(events), size_guidance={"scalars": 0})
        loaded.Reload()
        tags = loaded.Tags()["scalars"]
        if "val_acc" in tags:
            acc += [(e.step, e.wall_time, e.value) for e in loaded.Scalars("val_acc")]
        if "train_acc" in tags:
            train += [(e.step, e.value) for e in loaded.Scalars("train_acc")]
    acc.sort()
    train.sort()
    gaps = [b[1] - a[1] for a, b in zip(acc, acc[1:])]
    return {"epochs": len(acc), "val_acc": [round(v, 4) for _, _, v in acc], "train_acc": [round(v, 4) for _, v in train],
            "final": acc[-1][2] if acc else None, "best": max(v for _, _, v in acc) if acc else None,
            "s_per_epoch": statistics.median(gaps) if gaps else None}


def plot(summary: dict, path: Path) -> None:
    """Validation accuracy (solid) and training accuracy (dashed, augmented and with dropout on)
    against epochs, one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, row in sorted(summary.items()):
        if row["val_acc"]:
            line, = ax.plot(range(1, len(row["val_acc"]) + 1), row["val_acc"], label=f"{name} ({max(row['val_acc']):.4f})")
            ax.plot(range(1, len(row["train_acc"]) + 1), row["train_acc"], "--", color=line.get_color(), alpha=0.6)
    ax.set(xlabel="epoch", ylabel="accuracy", title="best_mlp runs: validation (solid, best in brackets), training (dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_name(name: str) -> tuple[str, int, int]:
    variant, seed, epochs = name.rsplit("-", 2)
    return variant, int(seed[1:]), int(epochs[1:])


def ablation(summary: dict) -> list[dict]:
    """Per (variant, budget) with a full recipe of >= 2 seeds at that budget: the variant's best
    val_acc (mean over its seeds) minus the full recipe's mean, in points and in the full seeds' std."""
    groups: dict[tuple[str, int], list[float]] = {}
    for name, row in summary.items():
        variant, _, epochs = parse_name(name)
        if row["best"] is not None and row["epochs"] == epochs:  # a run stopped early is not its budget
            groups.setdefault((variant, epochs), []).append(row["best"])
    rows = []
    for (variant, epochs), values in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0] != "full", kv[0][0])):
        full = groups.get(("full", epochs), [])
        if len(full) < 2:
            continue
        mean_full, std_full = statistics.mean(full), statistics.stdev(full)
        delta = statistics.mean(values) - mean_full
        rows.append({"variant": variant, "epochs": epochs, "seeds": len(values), "best_val_acc": statistics.mean(values),
                     "std": statistics.stdev(values) if len(values) > 1 else None, "delta": delta,
                     "full_std": std_full, "in_full_stds": delta / std_full if std_full else None})
    return rows


def ablation_lines(rows: list[dict]) -> list[str]:
    lines = ["| variant | removed or changed | epochs | seeds | best val_acc | vs full (points) | in full's std |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        spread = f" ± {100 * r['std']:.2f}" if r["std"] is not None else ""
        sigmas = "-" if r["variant"] == "full" or r["in_full_stds"] is None else f"{r['in_full_stds']:+.1f}"
        what = VARIANTS[r["variant"]][0] if r["variant"] in VARIANTS else "?"
        lines.append(f"| {r['variant']} | {what} | {r['epochs']} | {r['seeds']} | {100 * r['best_val_acc']:.2f}%{spread} "
                     f"| {100 * r['delta']:+.2f} | {sigmas} |")
    return lines


def plot_ablation(rows: list[dict], path: Path) -> None:
    """One bar per variant: its best val_acc minus the full recipe's mean, the grey band the full
    seeds' +-1 std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["variant"] != "full"]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    labels = [f"{r['variant']} ({r['epochs']} ep)" for r in rows]
    deltas = [100 * r["delta"] for r in rows]
    ax.barh(labels, deltas, color=["tab:green" if d > 0 else "tab:red" for d in deltas])
    std = 100 * rows[0]["full_std"]
    ax.axvspan(-std, std, color="grey", alpha=0.25, label=f"full recipe, ±1 std of its seeds ({std:.2f})")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.invert_yaxis()
    ax.set(xlabel="best val_acc minus the full recipe's mean (points)", title="best_mlp: what each change does")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="../shared/data/cifar10-jpeg", help="CIFAR-10 as an image folder")
    parser.add_argument("--out", type=Path, default=Path("studies/best_mlp/runs"),
                        help="summary.md/.json, curves.png, configs/, logs/ and one log file per run")
    parser.add_argument("--runs", nargs="*", default=[], help=f"variant:seed:epochs, variant one of {', '.join(VARIANTS)} (none: only tabulate OUT)")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time (on a GPU: all of them)")
    parser.add_argument("--curves_of", nargs="*", default=None, help="variants curves.png draws (default: all)")
    parser.add_argument("--deadline", type=float, default=None, help="seconds after which running runs stop")
    args = parser.parse_args()
    args.out = args.out.resolve()
    (args.out / "configs").mkdir(parents=True, exist_ok=True)
    queue = []
    for spec in args.runs:
        variant, seed, epochs = spec.split(":")
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        config = args.out / "configs" / f"{variant}.yaml"
        config.write_text(f"# best_mlp.yaml, {variant}: {VARIANTS[variant][0]} removed or changed\n"
                          + yaml.safe_dump(variant_config(VARIANTS[variant][1]), sort_keys=False))
        name = f"{variant}-s{seed}-e{epochs}"
        queue.append((name, run_command(config, name, int(seed), int(epochs), args)))
    start, running, done = time.time(), {}, {}
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    while queue or running:
        while queue and len(running) < args.parallel:
            name, command = queue.pop(0)
            log = open(args.out / f"{name}.log", "w")
            running[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log)
            print(f"started {name}", flush=True)
        time.sleep(2)
        late = args.deadline is not None and time.time() - start > args.deadline
        for name, (process, log) in list(running.items()):
            if late and process.poll() is None:
                process.terminate()
                process.wait()
            if process.poll() is not None:
                log.close()
                done[name] = process.returncode
                del running[name]
                print(f"finished {name} (exit {process.returncode}) at {time.time() - start:.0f} s", flush=True)
        if late:
            queue.clear()
    # Every run under OUT/logs, earlier invocations' too: a second seed adds a row.
    before = json.loads((args.out / "summary.json").read_text()) if (args.out / "summary.json").exists() else {}
    names = sorted(p.name for p in (args.out / "logs").iterdir()) if (args.out / "logs").exists() else []
    summary = {name: {"exit": done.get(name, before.get(name, {}).get("exit")), **read_curve(args.out / "logs" / name)}
               for name in names}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    lines = ["| run | epochs | final val_acc | best val_acc | s/epoch |", "|---|---|---|---|---|"]
    for name, row in sorted(summary.items()):
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        lines.append(f"| {name} | {row['epochs']} | {fmt(row['final'], '.4f')} | {fmt(row['best'], '.4f')} "
                     f"| {fmt(row['s_per_epoch'], '.2f')} |")
    rows = ablation(summary)
    if rows:
        lines += ["", *ablation_lines(rows)]
        plot_ablation(rows, args.out / "ablation.png")
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    drawn = {n: r for n, r in summary.items() if args.curves_of is None or parse_name(n)[0] in args.curves_of}
    plot(drawn, args.out / "curves.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
