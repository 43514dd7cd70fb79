"""``deeptrain tune``: hyperparameter search over any config key, Optuna TPE inside Ray Tune, optional ASHA.

    deeptrain tune --config configs/fashion_mnist/mlp.yaml --space configs/search/fashion_mnist_mlp.yaml --out studies/lr \\
        --num_samples 30 --asha true

The space YAML maps the CLI's dotted keys to a distribution::

    model.optimizer.init_args.lr: {loguniform: [1.0e-4, 1.0e-1]}
    model.net.dropout: {uniform: [0.0, 0.5]}
    model.net.activation: {choice: [elu, selu]}
    model.net.depth: {randint: [2, 8]}          # both ends included

Each trial is ``deeptrain fit`` of the config with the sampled values
(:mod:`deeptrain.tools.study`), selected on the validation split only. Writes
``OUT/best.yaml`` (runs as is with ``deeptrain fit --config``), ``OUT/trials.csv`` and
``OUT/trials.md`` (every trial: values, metric, status, error), ``OUT/history.png``
(the metric per trial and the best so far) and ``OUT/params.png`` (the metric against each
hyperparameter); every trial's TensorBoard log is in ``OUT/trials/<trial>/tb``. The same
command resumes a killed or interrupted study without redoing finished trials.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Optional

import yaml

from deeptrain.tools.compare import check_resources
from deeptrain.tools.study import RESULT, STARTED, fit_trial, ray_session, require_ray, run_trials, trial_error

DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint")
METRICS = {"val_acc": "max", "val_loss": "min"}
EXPERIMENT = "ray"  # Ray Tune's state of the study, OUT/ray: what Tuner.restore resumes
# keys each trial sets to its own folder: best.yaml gets the base config's values back
TRIAL_KEYS = ("trainer.logger", "checkpoint.dirpath", "last_checkpoint.dirpath", "trainer.enable_progress_bar")


def tune(config: str, space: str, out: str, num_samples: int = 20, metric: str = "val_acc", mode: str = "max",
         asha: bool = False, grace_period: int = 1, overrides: list[str] = [], seed: int = 0,
         address: Optional[str] = None, cpus_per_trial: float = 1, gpus_per_trial: float = 0,
         max_concurrent: Optional[int] = None, max_failures: int = 2, start_from_config: bool = False) -> dict:
    """Search hyperparameters of a config with Optuna TPE on Ray Tune (optionally ASHA) and write the best config.

    Args:
        config: the config YAML each trial trains (``deeptrain fit --config CONFIG``).
        space: YAML of ``dotted.key: {loguniform|uniform: [low, high]}``, ``{choice: [values]}`` or
            ``{randint: [low, high]}`` (both ends included).
        out: output folder: ``best.yaml``, ``trials.csv``, ``trials.md``, ``history.png``, ``params.png``,
            ``trials/<trial>/`` (TensorBoard logs, checkpoints). The same command resumes an interrupted study.
        num_samples: number of trials.
        metric: validation metric to optimize: ``val_acc`` or ``val_loss``.
        mode: ``max`` or ``min``.
        asha: stop trials that trail the others at 1, 3, 9, ... epochs (ASHA, reduction factor 3).
        grace_period: epochs every trial runs before ASHA may stop it.
        overrides: ``deeptrain fit`` arguments for every trial, e.g. ``--trainer.max_epochs=10``.
        seed: ``seed_everything`` of every trial, and the seed of the TPE sampler.
        address: Ray cluster to run on (``auto`` or ``ray://host:10001``); none: a local Ray.
        cpus_per_trial: CPUs of one trial (also its torch thread count).
        gpus_per_trial: GPUs of one trial; a fraction shares a GPU.
        max_concurrent: at most this many trials at a time (default: as the resources allow).
        max_failures: retries of a trial whose process died; it resumes from its last checkpoint.
        start_from_config: the first trial trains the config's own values of the searched keys (after
            ``overrides``), so the search can only match or beat the config it starts from; those
            values must lie in the space.

    Returns:
        The best trial: its ``params``, ``metric`` value, ``trial`` id and the ``config`` path written.
    """
    require_ray()
    domains = load_space(space)
    check_tune_args(config, num_samples, metric, mode, grace_period, cpus_per_trial, gpus_per_trial, max_concurrent)
    root = Path(out).resolve()
    start = [config_point(config, domains, overrides)] if start_from_config else []
    grid = search(Path(config).resolve(), domains, root, num_samples, metric, mode, asha, grace_period,
                  overrides, seed, address, cpus_per_trial, gpus_per_trial, max_concurrent, max_failures, start)
    rows = trial_rows(grid, root, metric)
    write_table(rows, list(domains), metric, root)
    plot_search(rows, domains, metric, mode, root)
    best = best_row(rows, mode)
    if best is None:
        raise RuntimeError(f"tune: no trial reported {metric}; see {root / 'trials.md'}")
    best_yaml = write_best_config(Path(best["run_dir"]), Path(config), root / "best.yaml")
    print(f"best trial {best['trial']}: {metric} {best[metric]:.4f} with {best['params']}; config: {best_yaml}", flush=True)
    return {"trial": best["trial"], "params": best["params"], metric: best[metric], "config": str(best_yaml)}


def load_space(path: str) -> dict[str, Any]:
    """The Ray Tune domain of each dotted key of the space YAML."""
    from ray import tune

    if not Path(path).is_file():
        raise ValueError(f"tune: space {path!r} does not exist")
    spec = yaml.safe_load(Path(path).read_text())
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"tune: space {path!r} must map config keys to distributions, got {spec!r}")
    domains = {}
    for key, dist in spec.items():
        if not (isinstance(dist, dict) and len(dist) == 1 and next(iter(dist)) in DISTRIBUTIONS):
            raise ValueError(f"tune: {key}: {dist!r} is not a distribution; use one of "
                             f"{{{'|'.join(DISTRIBUTIONS)}: [...]}}")
        kind, args = next(iter(dist.items()))
        domains[key] = domain(key, kind, args, tune)
    return domains


def domain(key: str, kind: str, args: Any, tune: Any) -> Any:
    if kind == "choice":
        if not (isinstance(args, list) and args):
            raise ValueError(f"tune: {key}: choice needs a non-empty list of values, got {args!r}")
        return tune.choice(args)
    if not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) for a in args) and args[0] < args[1]):
        raise ValueError(f"tune: {key}: {kind} needs [low, high] numbers with low < high, got {args!r}")
    if kind == "loguniform":
        if args[0] <= 0:
            raise ValueError(f"tune: {key}: loguniform needs low > 0, got {args!r}")
        return tune.loguniform(*args)
    if kind == "randint":
        return tune.randint(int(args[0]), int(args[1]) + 1)  # Ray's upper end is excluded
    return tune.uniform(*args)


def config_point(config: str, domains: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The config's own value of each searched key (after the overrides); an error if one lies outside the space."""
    from ray.tune.search.sample import Categorical, Integer

    from deeptrain.cli import build_cli

    resolved = build_cli(["--config", str(config), *overrides, "--trainer.logger=false"], run=False).config
    point = {}
    for key, dom in domains.items():
        value = resolved
        for part in key.split("."):
            if not hasattr(value, "get") or value.get(part, KeyError) is KeyError:
                raise ValueError(f"tune: start_from_config: {config} has no value for {key}")
            value = value[part]
        if isinstance(dom, Categorical):
            inside, where = value in dom.categories, f"choice {dom.categories}"
        else:  # Float [lower, upper]; Integer [lower, upper)
            upper = dom.upper - 1 if isinstance(dom, Integer) else dom.upper
            inside, where = dom.lower <= value <= upper, f"[{dom.lower}, {upper}]"
        if not inside:
            raise ValueError(f"tune: start_from_config: {key} is {value!r} in {config}, outside the space's {where}")
        point[key] = value
    return point


def check_tune_args(config: str, num_samples: int, metric: str, mode: str, grace_period: int,
                    cpus_per_trial: float, gpus_per_trial: float, max_concurrent: Optional[int]) -> None:
    if not Path(config).is_file():
        raise ValueError(f"tune: config {config!r} does not exist")
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"tune: num_samples must be an int >= 1, got {num_samples!r}")
    if metric not in METRICS:
        raise ValueError(f"tune: metric must be one of {list(METRICS)}, got {metric!r}")
    if mode not in ("max", "min"):
        raise ValueError(f"tune: mode must be one of ['max', 'min'], got {mode!r}")
    if not (isinstance(grace_period, int) and grace_period >= 1):
        raise ValueError(f"tune: grace_period must be an int >= 1, got {grace_period!r}")
    check_resources(cpus_per_trial, gpus_per_trial, max_concurrent)


def search(config: Path, domains: dict, root: Path, num_samples: int, metric: str, mode: str, asha: bool,
           grace_period: int, overrides: list[str], seed: int, address: Optional[str], cpus_per_trial: float,
           gpus_per_trial: float, max_concurrent: Optional[int], max_failures: int, start: list[dict] = []):
    """Runs (or resumes) the study; Ray Tune's ResultGrid. ``start``: points the search evaluates first."""
    import optuna
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    run = {"config": str(config), "out": str(root), "overrides": list(overrides), "seed": seed,
           "threads": cpus_per_trial, "cwd": str(Path.cwd()), "extras": False,  # validation only
           "metric": metric, "mode": mode}
    # TPE after a few random trials (Optuna's default waits for 10, most of a small study)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, num_samples // 3)))
    scheduler = ASHAScheduler(time_attr="epochs", grace_period=grace_period, reduction_factor=3, max_t=10**6) if asha else None
    with ray_session(address):
        return run_trials(fit_trial, {"run": run, "params": domains}, root, EXPERIMENT, cpus_per_trial,
                          gpus_per_trial, max_concurrent, max_failures, restore=True,
                          search_alg=OptunaSearch(sampler=sampler, points_to_evaluate=[flat_point(p) for p in start] or None),
                          scheduler=scheduler,
                          metric=metric, mode=mode, num_samples=num_samples)


def flat_point(point: dict[str, Any]) -> dict[str, Any]:
    # OptunaSearch flattens the nested param space with "/": {"params": {key: v}} -> "params/key"
    return {f"params/{key}": value for key, value in point.items()}


def trial_rows(grid: Any, root: Path, metric: str) -> list[dict]:
    """One row per trial, in the order they were created: id, status, params, metric, epochs, error."""
    rows = []
    for r in grid:
        trial = Path(r.path).name
        run_dir = root / "trials" / trial
        saved = json.loads((run_dir / RESULT).read_text()) if (run_dir / RESULT).exists() else {}
        last = r.metrics or {}
        status = saved.get("status") or ("error" if r.error is not None else "stopped")  # stopped: by ASHA
        value = saved.get(metric) if saved.get("status") == "ok" else None if saved else last.get(metric)
        rows.append({"trial": trial, "status": status, "params": r.config.get("params", {}),
                     metric: float(value) if value is not None else math.nan,
                     "epochs": saved.get("epochs_run", last.get("epochs", 0)),
                     "error": saved.get("error") or trial_error(r) or "", "run_dir": str(run_dir)})
    return sorted(rows, key=started)


def started(row: dict) -> float:
    path = Path(row["run_dir"]) / STARTED
    return float(path.read_text()) if path.exists() else math.inf


def best_row(rows: list[dict], mode: str) -> Optional[dict]:
    metric = next(k for k in rows[0] if k in METRICS) if rows else None
    done = [row for row in rows if math.isfinite(row[metric])] if rows else []
    pick = max if mode == "max" else min
    return pick(done, key=lambda row: row[metric]) if done else None


def write_table(rows: list[dict], keys: list[str], metric: str, root: Path) -> None:
    header = ["trial", "status", metric, "epochs", *keys, "error"]
    table = [[row["trial"], row["status"], row[metric], row["epochs"], *(row["params"].get(k) for k in keys), row["error"]]
             for row in rows]
    with open(root / "trials.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *table])
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "/")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in line) + " |" for line in table]
    (root / "trials.md").write_text("\n".join(lines) + "\n")


def write_best_config(run_dir: Path, base: Path, path: Path) -> Path:
    """The best trial's full config (LightningCLI's ``config.yaml``), with the keys that pointed at
    the trial's folder set back to the base config's (or left to their defaults)."""
    full = yaml.safe_load((run_dir / "tb" / "version_0" / "config.yaml").read_text())
    original = yaml.safe_load(base.read_text()) or {}
    for key in TRIAL_KEYS:
        *parents, leaf = key.split(".")
        target, source = full, original
        for part in parents:
            target, source = target.get(part, {}), (source or {}).get(part, {})
        if isinstance(source, dict) and leaf in source:
            target[leaf] = source[leaf]
        else:
            target.pop(leaf, None)
    if full.get("trainer", {}).get("callbacks", "set") is None:
        del full["trainer"]["callbacks"]  # keep the CLI's default callbacks (LR monitor)
    path.write_text(f"# best trial of `deeptrain tune`: {run_dir}\n" + yaml.safe_dump(full, sort_keys=False))
    return path


def plot_search(rows: list[dict], domains: dict, metric: str, mode: str, root: Path) -> None:
    """history.png: the metric of each trial and the best so far; params.png: the metric against each key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [row[metric] for row in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(len(values)), values, "o", label="trial")
    best, running = (max, -math.inf) if mode == "max" else (min, math.inf)
    so_far = []
    for v in values:
        running = best(running, v) if math.isfinite(v) else running
        so_far.append(running if math.isfinite(running) else math.nan)
    ax.step(range(len(values)), so_far, where="post", color="C1", label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title="optimization history (failed or diverged trials: not drawn)")
    ax.legend(), ax.grid(alpha=0.3)
    fig.tight_layout(), fig.savefig(root / "history.png", dpi=110), plt.close(fig)

    fig, axes = plt.subplots(1, len(domains), figsize=(4.5 * len(domains), 4), squeeze=False, sharey=True)
    for ax, key in zip(axes[0], domains):
        xs = [row["params"].get(key) for row in rows]
        categorical = not all(isinstance(x, (int, float)) for x in xs)
        ax.scatter([str(x) for x in xs] if categorical else xs, values, c=range(len(rows)), cmap="viridis")
        if "LogUniform" in type(domains[key].get_sampler()).__name__:
            ax.set_xscale("log")
        ax.set(xlabel=key), ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"{metric} (color: trial order)")
    fig.tight_layout(), fig.savefig(root / "params.png", dpi=110), plt.close(fig)
