"""``deeptrain compare``: train several configs over several seeds and compare them.

    deeptrain compare configs/cifar10/*.yaml --seeds 3 --out reports/cifar10 \\
        -- --data.dataset image_folder --data.data_dir ../shared/data/cifar10-jpeg

Runs one after another with visible progress. Each run lives in
``OUT/runs/<config>/seed<k>/``; a finished run (``result.json``) is never redone and an
interrupted one resumes from its ``last.ckpt``. Writes ``OUT/report.md`` (per config: mean
and min over seeds) and ``OUT/curves.png`` (validation accuracy and loss against epoch and
against wall-clock time). Arguments after ``--`` are passed to every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Optional

import lightning as L

HISTORY = "history.json"
RESULT = "result.json"
MC_SAMPLES = 30


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)  # a kill never leaves half a file


class EpochRecorder(L.Callback):
    """Appends each validation epoch's metrics and the cumulative training wall time to history.json."""

    def __init__(self, path: Path):
        self.path = path
        self.history: list[dict] = json.loads(path.read_text()) if path.exists() else []
        self.offset = self.history[-1]["wall_s"] if self.history else 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Resuming may replay an epoch that was recorded before the kill: keep only finished ones.
        self.history = [h for h in self.history if h["epoch"] < trainer.current_epoch]
        self.offset = self.history[-1]["wall_s"] if self.history else 0.0
        self.start = time.perf_counter()
        self.epoch_start = self.start  # a resume from a mid-epoch (interrupt) checkpoint skips on_train_epoch_start

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":  # not the validate() run after fit
            return
        m = trainer.callback_metrics
        self.history.append({
            "epoch": trainer.current_epoch,
            "val_loss": float(m["val_loss"]),
            "val_acc": float(m["val_acc"]),
            "train_loss": float(m.get("train_loss_epoch", m.get("train_loss", float("nan")))),
            "epoch_s": time.perf_counter() - self.epoch_start,
            "wall_s": self.offset + time.perf_counter() - self.start,
        })
        write_json(self.path, self.history)
        print(f"    epoch {trainer.current_epoch:3d}  val_acc {self.history[-1]['val_acc']:.4f}  "
              f"val_loss {self.history[-1]['val_loss']:.4f}  {self.history[-1]['epoch_s']:.1f}s", flush=True)


def best_entry(history: list[dict], stopper: Optional[L.Callback]) -> dict:
    """The epoch whose weights early stopping kept: best by its monitor (``val_loss`` or
    ``val_acc``, per its ``mode``), the lowest ``val_loss`` without early stopping."""
    monitor, mode = getattr(stopper, "monitor", "val_loss"), getattr(stopper, "mode", "min")
    if not history or monitor not in history[0]:
        monitor, mode = "val_loss", "min"
    pick = max if mode == "max" else min
    return pick(history, key=lambda h: h[monitor])  # ties: the first, as early stopping keeps it


def run_one(config: Path, seed: int, run_dir: Path, extra: list[str]) -> dict:
    """Train one config with one seed (resuming if interrupted) and summarize it."""
    from deeptrain.cli import build_cli
    from deeptrain.nn.mc_dropout import has_dropout, mc_predict

    run_dir.mkdir(parents=True, exist_ok=True)
    args = ["--config", str(config), *extra, f"--seed_everything={seed}",
            f"--trainer.logger.init_args.save_dir={run_dir}", "--trainer.logger.init_args.name=tb",
            "--trainer.logger.init_args.version=0", f"--checkpoint.dirpath={run_dir / 'checkpoints'}",
            f"--last_checkpoint.dirpath={run_dir / 'checkpoints'}",  # where the resume below looks
            "--trainer.enable_progress_bar=false"]
    cli = build_cli(args, run=False)
    recorder = EpochRecorder(run_dir / HISTORY)
    cli.trainer.callbacks.append(recorder)
    # the newest of the epoch-end last.ckpt and the checkpoint a Ctrl-C / SIGTERM wrote
    saved = [p for p in (run_dir / "checkpoints").glob("last*.ckpt") if p.is_file()]
    last = max(saved, key=lambda p: p.stat().st_mtime) if saved else None
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=str(last) if last else None)

    model, data, history = cli.model, cli.datamodule, recorder.history
    best = best_entry(history, cli.trainer.early_stopping_callback)
    # The model now holds the best epoch's weights (early stopping restores them): evaluate those.
    val = cli.trainer.validate(model, datamodule=data, verbose=False)[0]
    result = {
        "config": config.stem, "seed": seed, "best_epoch": best["epoch"], "epochs_run": len(history),
        "val_acc": val["val_acc"], "val_loss": val["val_loss"],
        "sec_per_epoch": statistics.median(h["epoch_s"] for h in history), "wall_to_best_s": best["wall_s"],
        "history": history,
    }
    if has_dropout(model.net):
        images, labels = data.split("val").images, data.split("val").labels
        probs, _ = mc_predict(model, images.to(model.device), samples=MC_SAMPLES, seed=seed)
        result["mc_val_acc"] = (probs.argmax(1).cpu() == labels).float().mean().item()
    if data.has_test_split:
        result["test_acc"] = cli.trainer.test(model, datamodule=data, verbose=False)[0]["test_acc"]
    write_json(run_dir / RESULT, result)
    return result


def summarize(results: list[dict]) -> str:
    """Markdown table: per config, mean and min over seeds."""
    keys = [("val_acc", "val acc", "{:.2%}"), ("val_loss", "val loss", "{:.3f}"), ("mc_val_acc", f"MC acc (T={MC_SAMPLES})", "{:.2%}"),
            ("test_acc", "test acc", "{:.2%}")]
    rows = ["| config | seeds | " + " | ".join(f"{name} mean (min)" for _, name, _ in keys)
            + " | best epoch | epochs run | s/epoch | wall to best |",
            "|---|---|" + "---|" * (len(keys) + 4)]
    for config in dict.fromkeys(r["config"] for r in results):
        rs = [r for r in results if r["config"] == config]
        cells = []
        for key, _, fmt in keys:
            values = [r[key] for r in rs if key in r]
            cells.append(f"{fmt.format(statistics.mean(values))} ({fmt.format(min(values))})" if values else "–")
        mean = lambda k: statistics.mean(r[k] for r in rs)  # noqa: E731
        rows.append(f"| {config} | {len(rs)} | " + " | ".join(cells)
                    + f" | {mean('best_epoch'):.1f} | {mean('epochs_run'):.1f} | {mean('sec_per_epoch'):.1f} | {mean('wall_to_best_s'):.0f} s |")
    return "\n".join(rows) + "\n"


def plot_curves(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharey="row")
    configs = list(dict.fromkeys(r["config"] for r in results))
    colors = dict(zip(configs, plt.cm.tab10.colors))
    for r in results:
        h = r["history"]
        for row, key in enumerate(("val_acc", "val_loss")):
            for col, x in enumerate(([e["epoch"] for e in h], [e["wall_s"] for e in h])):
                label = r["config"] if r["seed"] == min(q["seed"] for q in results if q["config"] == r["config"]) else None
                axes[row, col].plot(x, [e[key] for e in h], color=colors[r["config"]], alpha=0.8, lw=1.2, label=label)
    for col, xlabel in enumerate(("epoch", "wall-clock seconds")):
        axes[1, col].set_xlabel(xlabel)
    axes[0, 0].set_ylabel("validation accuracy")
    axes[1, 0].set_ylabel("validation loss")
    axes[0, 0].legend()
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra: list[str] = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = argparse.ArgumentParser(prog="deeptrain compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    for config in args.configs:
        if not config.is_file():
            parser.error(f"config {str(config)!r} does not exist")
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    return args, extra


def main(argv: Optional[list[str]] = None) -> list[dict]:
    args, extra = parse_args(list(argv or []))
    plan = [(config, seed) for config in args.configs for seed in range(args.seeds)]
    results = []
    for i, (config, seed) in enumerate(plan, 1):
        run_dir = args.out / "runs" / config.stem / f"seed{seed}"
        if (run_dir / RESULT).exists():
            print(f"[{i}/{len(plan)}] {config.stem} seed {seed}: done, skipped", flush=True)
        else:
            print(f"[{i}/{len(plan)}] {config.stem} seed {seed}: training in {run_dir}", flush=True)
            run_one(config, seed, run_dir, extra)
        results.append(json.loads((run_dir / RESULT).read_text()))
        (args.out / "report.md").write_text(summarize(results))
        plot_curves(results, args.out / "curves.png")
    print(summarize(results))
    return results
