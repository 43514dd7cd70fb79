"""``deeptrain compare``: train several configs over several seeds, as Ray Tune trials, and compare them.

    deeptrain compare configs/cifar10/a.yaml configs/cifar10/b.yaml --seeds 3 --out reports/cifar10 \\
        --overrides '["--data.dataset=image_folder", "--data.data_dir=../shared/data/cifar10-jpeg"]'

Each config x seed is one trial, exactly ``deeptrain fit`` of that config with
``--seed_everything=k`` (:mod:`deeptrain.tools.study`), in ``OUT/runs/<config>/seed<k>/``:
its TensorBoard log (``tensorboard --logdir OUT`` compares every run, HParams tab included),
checkpoints and ``result.json``. Trials run side by side on a local Ray (all cores, each
trial ``cpus_per_trial`` of them) or on a cluster (``address``). A finished run is never
redone; an interrupted one resumes from its ``last.ckpt``. Writes ``OUT/report.md`` (per
config: mean ± std and min over seeds; failed runs with their error) and ``OUT/curves.png``
(validation accuracy and loss against epoch and against wall-clock time).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Optional

from deeptrain.tools.study import (  # noqa: F401  (EpochRecorder, best_entry: the names tests and tools import)
    HISTORY, MC_SAMPLES, RESULT, EpochRecorder, best_entry, fit_trial, ray_session, require_ray, run_trials,
    trial_error,
)


def compare(configs: list[str], out: str, seeds: int = 3, overrides: list[str] = [],
            address: Optional[str] = None, cpus_per_trial: float = 1, gpus_per_trial: float = 0,
            max_concurrent: Optional[int] = None, max_failures: int = 2) -> list[dict]:
    """Train configs x seeds as Ray Tune trials and write report.md (mean ± std over seeds) and curves.png.

    Args:
        configs: config YAML files, each trained as ``deeptrain fit --config CONFIG``.
        out: output folder: ``report.md``, ``curves.png``, ``runs/<config>/seed<k>/`` (TensorBoard logs,
            checkpoints, results). Running the same command again redoes no finished run.
        seeds: seeds 0..seeds-1 of every config (``--seed_everything``).
        overrides: ``deeptrain fit`` arguments for every run, e.g. ``--trainer.max_epochs=2``.
        address: Ray cluster to run on (``auto``: the one ``ray start`` runs on this machine,
            ``ray://host:10001``); none: a local Ray on this machine, stopped at the end.
        cpus_per_trial: CPUs of one run (also its torch thread count).
        gpus_per_trial: GPUs of one run; a fraction (0.5) shares a GPU between runs.
        max_concurrent: at most this many runs at a time (default: as many as the resources allow).
        max_failures: retries of a run whose process died; it resumes from its last checkpoint.

    Returns:
        One result per config and seed, in order (``status`` ``ok``, ``failed``, ``diverged`` or ``error``).
    """
    require_ray()
    paths = check_compare_args(configs, seeds, cpus_per_trial, gpus_per_trial, max_concurrent)
    root = Path(out).resolve()
    plan = [(config, seed, root / "runs" / config.stem / f"seed{seed}") for config in paths for seed in range(seeds)]
    pending = [(c, s, d) for c, s, d in plan if not (d / RESULT).exists()]
    errors: dict[str, str] = {}
    if pending:
        print(f"{len(plan) - len(pending)} of {len(plan)} runs done; training {len(pending)}", flush=True)
        errors = run_pending(pending, overrides, root, address, cpus_per_trial, gpus_per_trial,
                             max_concurrent, max_failures)
    results = [load_result(config, seed, run_dir, errors) for config, seed, run_dir in plan]
    write_report(results, root)
    return results


def check_compare_args(configs: list[str], seeds: int, cpus_per_trial: float, gpus_per_trial: float,
                       max_concurrent: Optional[int]) -> list[Path]:
    if not configs:
        raise ValueError("compare: give at least one config file")
    for config in configs:
        if not Path(config).is_file():
            raise ValueError(f"compare: config {str(config)!r} does not exist")
    if len({Path(c).stem for c in configs}) < len(configs):
        raise ValueError(f"compare: config names must differ (their runs go to runs/<name>), got {configs}")
    if not (isinstance(seeds, int) and seeds >= 1):
        raise ValueError(f"compare: seeds must be an int >= 1, got {seeds!r}")
    check_resources(cpus_per_trial, gpus_per_trial, max_concurrent)
    return [Path(c).resolve() for c in configs]


def check_resources(cpus_per_trial: float, gpus_per_trial: float, max_concurrent: Optional[int]) -> None:
    if not cpus_per_trial > 0:
        raise ValueError(f"cpus_per_trial must be > 0, got {cpus_per_trial!r}")
    if not gpus_per_trial >= 0:
        raise ValueError(f"gpus_per_trial must be >= 0, got {gpus_per_trial!r}")
    if max_concurrent is not None and max_concurrent < 1:
        raise ValueError(f"max_concurrent must be None (no limit) or an int >= 1, got {max_concurrent!r}")


def run_pending(pending: list[tuple[Path, int, Path]], overrides: list[str], root: Path, address: Optional[str],
                cpus_per_trial: float, gpus_per_trial: float, max_concurrent: Optional[int],
                max_failures: int) -> dict[str, str]:
    """Trains the pending runs as one grid of Ray Tune trials; the error of each that crashed
    past its retries, by run folder."""
    from ray import tune

    trials = [{"config": str(config), "seed": seed, "run_dir": str(run_dir), "overrides": list(overrides),
               "threads": cpus_per_trial, "cwd": str(Path.cwd())} for config, seed, run_dir in pending]
    with ray_session(address):
        grid = run_trials(fit_trial, {"run": tune.grid_search(trials)}, root, "ray", cpus_per_trial,
                          gpus_per_trial, max_concurrent, max_failures)
    return {r.config["run"]["run_dir"]: trial_error(r) for r in grid if r.error is not None}


def load_result(config: Path, seed: int, run_dir: Path, errors: dict[str, str]) -> dict:
    if (run_dir / RESULT).exists():
        return json.loads((run_dir / RESULT).read_text())
    error = errors.get(str(run_dir), "the run did not finish")
    return {"config": config.stem, "seed": seed, "run_dir": str(run_dir), "status": "error", "error": error}


def write_report(results: list[dict], root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    ok = [r for r in results if r.get("status", "ok") == "ok"]
    report = summarize(ok) + failures_table([r for r in results if r.get("status", "ok") != "ok"])
    (root / "report.md").write_text(report)
    if ok:
        plot_curves(ok, root / "curves.png")
    print(report, flush=True)


def summarize(results: list[dict]) -> str:
    """Markdown table: per config, mean ± sample std and min over seeds."""
    keys = [("val_acc", "val acc", "{:.2%}"), ("val_loss", "val loss", "{:.3f}"),
            ("mc_val_acc", f"MC acc (T={MC_SAMPLES})", "{:.2%}"), ("test_acc", "test acc", "{:.2%}")]
    rows = ["| config | seeds | " + " | ".join(f"{name} mean ± std (min)" for _, name, _ in keys)
            + " | best epoch | epochs run | s/epoch | wall to best |",
            "|---|---|" + "---|" * (len(keys) + 4)]
    for config in dict.fromkeys(r["config"] for r in results):
        rs = [r for r in results if r["config"] == config]
        cells = [mean_std_min([r[key] for r in rs if key in r], fmt) for key, _, fmt in keys]
        mean = lambda k: statistics.mean(r[k] for r in rs)  # noqa: E731
        rows.append(f"| {config} | {len(rs)} | " + " | ".join(cells)
                    + f" | {mean('best_epoch'):.1f} | {mean('epochs_run'):.1f} | {mean('sec_per_epoch'):.1f} | {mean('wall_to_best_s'):.0f} s |")
    return "\n".join(rows) + "\n"


def mean_std_min(values: list[float], fmt: str) -> str:
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(std)} ({fmt.format(min(values))})"


def failures_table(failed: list[dict]) -> str:
    if not failed:
        return ""
    rows = ["", "Runs that did not finish:", "", "| config | seed | status | error |", "|---|---|---|---|"]
    rows += [f"| {r['config']} | {r['seed']} | {r['status']} | {r['error'].replace('|', '/')} |" for r in failed]
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
    for col, xlabel in enumerate(("epoch", "wall-clock seconds of the run")):
        axes[1, col].set_xlabel(xlabel)
    axes[0, 0].set_ylabel("validation accuracy")
    axes[1, 0].set_ylabel("validation loss")
    axes[0, 0].legend()
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
