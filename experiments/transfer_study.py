"""The transfer-learning study of the README, from the configs in ``configs/transfer/``, in one command.

    DEEPTRAIN_DATA_DIR=../shared/data python experiments/transfer_study.py --out reports/transfer

1. Sources (one run each, seed 42): model A on task A (``task_a.yaml``), the greedy layer-wise
   autoencoder (``pretrain_autoencoder.yaml``) and the rotation pretext (``pretrain_rotation.yaml``),
   each kept as ``OUT/runs/<source>/model.ckpt`` with its SHA-256.
2. Task B, shirt vs sandal with 200 training images, ``--seeds`` seeds (default 10): from scratch,
   on A (frozen 4 epochs, then unfrozen at lr/10) and on A frozen throughout; plus a diagnostic,
   A's frozen features with a logistic-regression head fitted to convergence (L-BFGS).
3. All 10 classes with 500 labels, ``--few-seeds`` seeds (default 5): from scratch, on the
   autoencoder and on the rotation pretext, with the same freeze-then-unfreeze recipe.
4. Steps 2 and 3 again with a longer budget for every arm alike (up to 100 epochs, early
   stopping with patience 10), added after the configs' budget left the reused-layer arms still
   improving at their last epoch; both protocols are reported.

Seed k sets the new layers' initialization, the batch order and *which* 200 (or 500) images
are labelled (``data.subset_seed``); every arm of a study sees the same images for the same k,
so the arms are compared seed by seed too. A's checkpoint is hashed before and after.

Resumable: a finished run (``result.json``) or source (``model.ckpt``) is never redone, an
interrupted run resumes from its ``last.ckpt``. Writes ``OUT/report.md``, ``OUT/transfer.png``
(box plot with every run as a dot) and ``OUT/results.json``; logs and checkpoints stay under
``OUT/runs/`` (git-ignored). Downstream runs' checkpoints are deleted once their result is in.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import textwrap
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "transfer"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]

SOURCES = {  # name: (config, tool)
    "task_a": ("task_a.yaml", "fit"),
    "autoencoder": ("pretrain_autoencoder.yaml", "autoencoder"),
    "rotation": ("pretrain_rotation.yaml", "fit"),
}
TASK_B = [  # (arm, config, source or None); the first arm is the baseline of "vs scratch"
    ("scratch", "task_b.yaml", None),
    ("on A, frozen 4 epochs then unfrozen (lr/10)", "task_b_on_a.yaml", "task_a"),
    ("on A, frozen throughout", "task_b_on_a_frozen.yaml", "task_a"),
]
PROBE_CONFIG = "task_b.yaml"  # the probe takes its data (task B) from here
PROBE = ("on A, frozen, head fitted to convergence by L-BFGS (diagnostic)", PROBE_CONFIG, "task_a")
FEW_LABELS = [
    ("scratch", "few_labels.yaml", None),
    ("on the greedy autoencoder (55,000 unlabelled images)", "few_labels_on_autoencoder.yaml", "autoencoder"),
    ("on the rotation pretext (55,000 unlabelled images)", "few_labels_on_rotation.yaml", "rotation"),
]
# Longer budget for every arm alike: added after the first protocol showed the reused-layer arms
# still improving at their last epoch (and scratch peaking in its first 5); both are reported.
LONG = ["--trainer.max_epochs=100", "--early_stopping.patience=10"]
STUDIES = {  # study: (title, extra arguments of every run, arms, seeds option)
    "task_b": ("Task B, shirt vs sandal, 200 training images (test: 2,000 images); the book's budget: 20 epochs",
               [], [*TASK_B, PROBE], "seeds"),
    "task_b_long": ("Task B, up to 100 epochs, early stopping (patience 10 on the validation loss)",
                    LONG, TASK_B, "seeds"),
    "few_labels": ("All 10 classes, 500 training labels (test: 10,000 images), 30 epochs", [], FEW_LABELS, "few_seeds"),
    "few_labels_long": ("All 10 classes, 500 labels, up to 100 epochs, early stopping (patience 10)",
                        LONG, FEW_LABELS, "few_seeds"),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


# -- sources ---------------------------------------------------------------------------
def train_source(name: str, run_dir: Path) -> dict:
    """Train one source model (resumable) and keep its weights as ``run_dir/model.ckpt``."""
    config, tool = SOURCES[name]
    model_path = run_dir / "model.ckpt"
    if model_path.exists() and (run_dir / "source.json").exists():
        return json.loads((run_dir / "source.json").read_text())
    start = time.perf_counter()
    if tool == "fit":
        from deeptrain.tools.compare import run_one

        result = run_one(CONFIGS / config, 42, run_dir, QUIET)
        best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)[-1]
        shutil.copyfile(best, model_path)  # the best epoch's weights, as early stopping restored them
        summary = {"test_acc": result.get("test_acc"), "val_acc": result["val_acc"], "epochs": result["epochs_run"]}
    else:
        summary = train_autoencoder(CONFIGS / config, run_dir, model_path)
    summary.update(name=name, config=config, sha256=sha256(model_path), wall_s=time.perf_counter() - start)
    write_json(run_dir / "source.json", summary)
    return summary


def train_autoencoder(config: Path, run_dir: Path, model_path: Path) -> dict:
    import lightning as L

    from deeptrain.tools.autoencoder import build_autoencoder_cli

    class Losses(L.Callback):
        def __init__(self):
            self.rows = []

        def on_validation_epoch_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self.rows.append({"epoch": trainer.current_epoch, "layer": pl_module.layer,
                                  "val_loss": float(trainer.callback_metrics["val_loss"])})
                print(f"    epoch {trainer.current_epoch:3d}  layer {pl_module.layer}  "
                      f"val reconstruction MSE {self.rows[-1]['val_loss']:.4f}", flush=True)

    cli = build_autoencoder_cli(["--config", str(config), "--seed_everything=42", *QUIET,
                                 f"--trainer.logger.init_args.save_dir={run_dir}", "--trainer.logger.init_args.name=tb",
                                 "--trainer.logger.init_args.version=0", f"--checkpoint.dirpath={run_dir / 'checkpoints'}"],
                                run=False)
    losses = Losses()
    cli.trainer.callbacks.append(losses)
    last = run_dir / "checkpoints" / "last.ckpt"
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=str(last) if last.exists() else None)
    cli.trainer.save_checkpoint(model_path)
    ends = {}
    for row in losses.rows:
        ends[row["layer"]] = row["val_loss"]  # the last epoch of each layer's stage
    return {"val_mse_per_layer": [ends[k] for k in sorted(ends)], "epochs": cli.trainer.current_epoch}


# -- downstream runs -----------------------------------------------------------------------
def run_arm(config: str, seed: int, run_dir: Path, source: Path | None, extra: list[str], probe: bool) -> dict:
    from deeptrain.tools.compare import RESULT, run_one

    if (run_dir / RESULT).exists():
        return json.loads((run_dir / RESULT).read_text())
    if probe:
        return linear_probe(seed, run_dir, source)
    extra = [*QUIET, *extra, f"--data.subset_seed={seed}"]
    if source is not None:
        extra.append(f"--model.init_from.checkpoint={source}")
    start = time.perf_counter()
    result = run_one(CONFIGS / config, seed, run_dir, extra)
    result["run_wall_s"] = time.perf_counter() - start  # data loading, training, validation and test
    write_json(run_dir / RESULT, result)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # 7 MB a run; the result is in result.json
    return result


def linear_probe(seed: int, run_dir: Path, source: Path) -> dict:
    """Diagnostic: A's frozen features of task B's images, and a logistic-regression head fitted to
    convergence (L-BFGS, l2 1e-3) on the 200 training images of seed ``seed``; no validation used."""
    import yaml

    from deeptrain.data import ImageDataModule
    from deeptrain.training.module import Classifier

    start = time.perf_counter()
    data = ImageDataModule(**{**yaml.safe_load((CONFIGS / PROBE_CONFIG).read_text())["data"], "subset_seed": seed})
    data.setup()
    a = Classifier.load_from_checkpoint(source, map_location="cpu", weights_only=True).eval()
    with torch.no_grad():
        x = {n: a.net.features(a.normalizer(data.split(n).images)) for n in ("train", "test")}  # (N, 50)
    y = {n: data.split(n).labels for n in ("train", "test")}
    torch.manual_seed(seed)
    head = torch.nn.Linear(x["train"].shape[1], data.num_classes)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x["train"]), y["train"]) + 1e-3 * head.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        accuracy = (head(x["test"]).argmax(1) == y["test"]).float().mean().item()
    result = {"test_acc": accuracy, "val_acc": float("nan"), "best_epoch": -1, "run_wall_s": time.perf_counter() - start}
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "result.json", result)
    return result


def plan(seeds: int, few_seeds: int) -> list[tuple]:
    runs, counts = [], {"seeds": seeds, "few_seeds": few_seeds}
    for study, (_, extra, arms, n) in STUDIES.items():
        runs += [(study, arm, config, source, extra, seed) for seed in range(counts[n]) for arm, config, source in arms]
    return runs


# -- report --------------------------------------------------------------------------------
def arm_rows(results: list[dict], arms: list[tuple]) -> list[str]:
    scratch = {r["seed"]: r["test_acc"] for r in results if r["arm"] == arms[0][0]}
    rows = []
    for arm, config, _ in arms:
        accs = {r["seed"]: r["test_acc"] for r in results if r["arm"] == arm}
        if not accs:
            continue
        values = list(accs.values())
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        paired = [accs[s] - scratch[s] for s in accs if s in scratch]
        versus = "–"
        if arm != arms[0][0] and paired:
            wins = (sum(d > 0 for d in paired), sum(d == 0 for d in paired), sum(d < 0 for d in paired))
            pstd = statistics.stdev(paired) if len(paired) > 1 else 0.0
            t = statistics.mean(paired) / (pstd / len(paired) ** 0.5) if pstd > 0 else float("nan")
            versus = (f"{100 * statistics.mean(paired):+.2f} ± {100 * pstd:.2f} pts; t = {t:+.1f}; "
                      f"{wins[0]} / {wins[1]} / {wins[2]}")
        rows.append(f"| {arm} | `{config}` | {len(values)} | {100 * statistics.mean(values):.2f}% ± {100 * std:.2f} "
                    f"| {100 * min(values):.2f}% | {100 * max(values):.2f}% | {versus} |")
    return rows


def report(results: list[dict], sources: dict, hashes_ok: dict, wall_s: float) -> str:
    lines = ["# Transfer learning on Fashion-MNIST: the study", "",
             "Generated by `python experiments/transfer_study.py` from `configs/transfer/` "
             f"(wall time of all runs: {wall_s / 60:.1f} min on a shared 2-core CPU). Test accuracy of each run;",
             "mean ± sample std over seeds; *vs scratch*: the per-seed difference from the scratch run with the same",
             "seed (same labelled images), mean ± std, the paired t statistic (|t| > 2.26 with 10 seeds, > 2.78 with 5:",
             "p < 0.05, two-sided), then how many seeds were better / equal / worse.", ""]
    for study, (title, _, arms, _) in STUDIES.items():
        rs = [r for r in results if r["study"] == study]
        if not rs:
            continue
        lines += [f"## {title}", "", "| arm | config | seeds | test acc mean ± std | min | max | vs scratch |",
                  "|---|---|---|---|---|---|---|", *arm_rows(rs, arms), ""]
    lines += ["## Sources", "", "| source | config | epochs | result | wall | checkpoint unchanged after the study |",
              "|---|---|---|---|---|---|"]
    for name, s in sources.items():
        if "test_acc" in s:
            what = f"test acc {100 * s['test_acc']:.2f}%" + (" (rotation task)" if name == "rotation" else " (8 classes)")
        else:
            what = "val reconstruction MSE per layer: " + ", ".join(f"{v:.3f}" for v in s["val_mse_per_layer"])
        lines.append(f"| {name} | `{s['config']}` | {s['epochs']} | {what} | {s['wall_s']:.0f} s | "
                     f"{'yes (same SHA-256)' if hashes_ok.get(name) else 'NO'} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = [s for s in STUDIES if any(r["study"] == s for r in results)]
    rows = (len(studies) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(14, 5.2 * rows), squeeze=False)
    rng = torch.Generator().manual_seed(0)
    for ax in axes.flat[len(studies):]:
        ax.set_visible(False)
    for ax, study in zip(axes.flat, studies):
        title, _, arms, _ = STUDIES[study]
        names = [a for a, _, _ in arms if any(r["arm"] == a and r["study"] == study for r in results)]
        data = [[100 * r["test_acc"] for r in results if r["study"] == study and r["arm"] == a] for a in names]
        ax.boxplot(data, widths=0.5, showfliers=False)
        for i, values in enumerate(data, 1):
            jitter = (torch.rand(len(values), generator=rng) - 0.5) * 0.25
            ax.scatter([i + float(j) for j in jitter], values, s=18, alpha=0.7, zorder=3)
        ax.set_xticks(range(1, len(names) + 1), [n.replace(", ", ",\n").replace(" (", "\n(") for n in names], fontsize=8)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(textwrap.fill(title, 70), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main ------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    if "--" in argv:  # arguments for every run, e.g. -- --trainer.max_epochs=1 for a smoke test
        QUIET.extend(argv[argv.index("--") + 1 :])
        argv = argv[: argv.index("--")]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "transfer")
    parser.add_argument("--seeds", type=int, default=10, help="seeds of the task-B study (default 10)")
    parser.add_argument("--few-seeds", type=int, default=5, help="seeds of the 500-label study (default 5)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: these small nets at batch 32 ran 6 ms/step on one thread "
                             "and 176 ms/step on two on this shared 2-core machine)")
    args = parser.parse_args(argv)
    if args.seeds < 2 or args.few_seeds < 2:
        parser.error(f"--seeds and --few-seeds must be >= 2 for a spread, got {args.seeds} and {args.few_seeds}")
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", "LightningCLI's args parameter")  # this script's own argv is not the runs'
    warnings.filterwarnings("ignore", ".*does not have many workers.*")  # in-memory batches need none
    torch.set_num_threads(args.threads)
    runs_dir = args.out / "runs"
    sources = {}
    for i, name in enumerate(SOURCES, 1):
        print(f"[source {i}/{len(SOURCES)}] {name} ({SOURCES[name][0]})", flush=True)
        sources[name] = train_source(name, runs_dir / name)
    results = []
    todo = plan(args.seeds, args.few_seeds)
    for i, (study, arm, config, source, extra, seed) in enumerate(todo, 1):
        probe = (arm, config, source) == PROBE
        run_dir = runs_dir / study / ("linear_probe" if probe else Path(config).stem) / f"seed{seed}"
        print(f"[{i}/{len(todo)}] {study}: {arm}, seed {seed}", flush=True)
        result = run_arm(config, seed, run_dir, runs_dir / source / "model.ckpt" if source else None, extra, probe)
        results.append({"study": study, "arm": arm, "config": config, "seed": seed, "test_acc": result["test_acc"],
                        "val_acc": result["val_acc"], "best_epoch": result["best_epoch"],
                        "wall_s": result.get("run_wall_s", 0.0)})
        print(f"    test acc {100 * result['test_acc']:.2f}%", flush=True)
    hashes_ok = {name: sha256(runs_dir / name / "model.ckpt") == s["sha256"] for name, s in sources.items()}
    wall = sum(s["wall_s"] for s in sources.values()) + sum(r["wall_s"] for r in results)
    write_json(args.out / "results.json", {"sources": sources, "runs": results, "hashes_unchanged": hashes_ok})
    text = report(results, sources, hashes_ok, wall)
    (args.out / "report.md").write_text(text)
    plot(results, args.out / "transfer.png")
    print(text)
    return results


if __name__ == "__main__":
    main()
