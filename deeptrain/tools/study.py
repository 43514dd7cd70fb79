"""What ``deeptrain compare`` and ``deeptrain tune`` share: a study's trials on Ray Tune.

A trial is exactly ``deeptrain fit`` of its config (:func:`deeptrain.cli.build_cli`: the same
callbacks, checkpoints, exact resume and non-finite guard), in its own folder ``run_dir``:
TensorBoard log ``tb/version_0``, ``checkpoints/`` (``last.ckpt`` for a resume),
``history.json`` (one entry per validation epoch) and, once done, ``result.json``.

Nothing is lost:

- a trial whose process dies (SIGKILL, out of memory, a lost node) is retried by Ray
  (``FailureConfig(max_failures)``) and resumes from its ``last.ckpt``: its global step continues;
- a trial whose ``result.json`` exists is never trained again (a restarted driver skips it);
- a config that fails (bad key, bad value) or a loss that diverges ends that trial with
  ``status`` ``failed`` or ``diverged`` and its error, without retries and without stopping the others.

The folders must be on a filesystem that every node sees (one machine, or NFS/Lustre on a
cluster): a retried trial may land on another node and reads its ``last.ckpt`` there.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import lightning as L
import torch

HISTORY = "history.json"
RESULT = "result.json"
STARTED = "started"
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


class RayReport(L.Callback):
    """Reports each validation epoch's metrics to Ray Tune (``ray.tune.report``), for ASHA and the searcher.

    ``epochs`` (epochs finished, from 1) is the time axis: unlike Ray's ``training_iteration`` it
    continues across a resume from ``last.ckpt``. Runs after :class:`EpochRecorder`, whose entry it sends.
    """

    def __init__(self, recorder: EpochRecorder):
        self.recorder = recorder

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or not self.recorder.history:
            return
        from ray import tune

        entry = self.recorder.history[-1]
        tune.report({**{k: v for k, v in entry.items() if k != "epoch"}, "epochs": entry["epoch"] + 1})


def best_entry(history: list[dict], stopper: Optional[L.Callback]) -> dict:
    """The epoch whose weights early stopping kept: best by its monitor (``val_loss`` or
    ``val_acc``, per its ``mode``), the lowest ``val_loss`` without early stopping."""
    monitor, mode = getattr(stopper, "monitor", "val_loss"), getattr(stopper, "mode", "min")
    if not history or monitor not in history[0]:
        monitor, mode = "val_loss", "min"
    pick = max if mode == "max" else min
    return pick(history, key=lambda h: h[monitor])  # ties: the first, as early stopping keeps it


def fit_args(config: Path, run_dir: Path, overrides: list[str], seed: Optional[int]) -> list[str]:
    """``deeptrain fit`` arguments of one trial: its config and overrides, logs and checkpoints in ``run_dir``."""
    return ["--config", str(config), *overrides, *([f"--seed_everything={seed}"] if seed is not None else []),
            f"--trainer.logger.init_args.save_dir={run_dir}", "--trainer.logger.init_args.name=tb",
            "--trainer.logger.init_args.version=0", f"--checkpoint.dirpath={run_dir / 'checkpoints'}",
            f"--last_checkpoint.dirpath={run_dir / 'checkpoints'}",  # where the resume below looks
            "--trainer.enable_progress_bar=false"]


def param_args(params: dict[str, Any]) -> list[str]:
    """``--dotted.key=value`` for each sampled value (JSON for numbers, lists, booleans)."""
    return [f"--{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in params.items()]


def train(args: list[str], run_dir: Path, report: bool = False, extras: bool = True) -> dict:
    """``deeptrain fit`` with ``args``, resuming from ``run_dir``'s newest ``last*.ckpt``; the summary
    of the run (the epoch early stopping kept, timing, and with ``extras`` MC-dropout and test accuracy).
    With ``report`` (inside a Ray trial) each validation epoch goes to Ray Tune."""
    from deeptrain.cli import build_cli
    from deeptrain.nn.mc_dropout import has_dropout, mc_predict
    from deeptrain.training.runs import newest_file

    run_dir.mkdir(parents=True, exist_ok=True)
    cli = build_cli(args, run=False, parser_kwargs={"exit_on_error": False})  # a bad key raises, not exits
    recorder = EpochRecorder(run_dir / HISTORY)
    cli.trainer.callbacks.extend([recorder, *([RayReport(recorder)] if report else [])])
    # the newest of the epoch-end last.ckpt and the checkpoint a Ctrl-C / SIGTERM wrote
    last = newest_file((run_dir / "checkpoints").glob("last*.ckpt"))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=str(last) if last else None)

    model, data, history = cli.model, cli.datamodule, recorder.history
    best = best_entry(history, cli.trainer.early_stopping_callback)
    # The model now holds the best epoch's weights (early stopping restores them): evaluate those.
    val = cli.trainer.validate(model, datamodule=data, verbose=False)[0]
    result = {
        "status": "ok", "best_epoch": best["epoch"], "epochs_run": len(history),
        "val_acc": val["val_acc"], "val_loss": val["val_loss"],
        "sec_per_epoch": statistics.median(h["epoch_s"] for h in history), "wall_to_best_s": best["wall_s"],
        "history": history,
    }
    if extras and has_dropout(model.net):
        images, labels = data.split("val").images, data.split("val").labels
        probs, _ = mc_predict(model, images.to(model.device), samples=MC_SAMPLES, seed=int(os.environ.get("PL_GLOBAL_SEED", 0)))
        result["mc_val_acc"] = (probs.argmax(1).cpu() == labels).float().mean().item()
    if extras and data.has_test_split:
        result["test_acc"] = cli.trainer.test(model, datamodule=data, verbose=False)[0]["test_acc"]
    return result


def failure(err: BaseException, run_dir: Path) -> Optional[dict]:
    """The result of a trial that a bad config or a diverging loss ended; None for anything else
    (a bug, a lost process), which Ray retries."""
    from jsonargparse import ArgumentError  # an unknown key or a value of the wrong type

    from deeptrain.cli import USER_ERRORS, user_message

    if not isinstance(err, (*USER_ERRORS, ArgumentError)):
        return None
    status = "diverged" if isinstance(err, FloatingPointError) else "failed"
    history = json.loads((run_dir / HISTORY).read_text()) if (run_dir / HISTORY).exists() else []
    return {"status": status, "error": user_message(err).splitlines()[0], "epochs_run": len(history), "history": history}


def fit_trial(config: dict) -> None:
    """Ray Tune's function trainable: one ``deeptrain fit`` of ``config["run"]`` (see :func:`train_trial`,
    with ``params`` sampled by the searcher); the final report carries the result (``val_acc`` of the
    kept epoch, or the worst value of ``metric`` if it failed)."""
    from ray import tune

    trial = {**config["run"], "params": config.get("params", {})}
    result = train_trial(trial, report=True)
    scalars = {k: v for k, v in result.items() if isinstance(v, (int, float, str)) and k != "config"}
    if result["status"] != "ok" and trial.get("metric"):  # the searcher learns that this region fails
        scalars[trial["metric"]] = -math.inf if trial.get("mode", "max") == "max" else math.inf
    tune.report({**scalars, "epochs": result.get("epochs_run", 0)})


def train_trial(trial: dict, report: bool = False) -> dict:
    """Trains one trial described by ``trial`` (keys: config, run_dir or out, overrides, params,
    seed, threads, cwd, extras) unless its ``result.json`` exists; writes and returns that result.
    With ``report``, inside a Ray trial: each validation epoch is reported to Ray Tune."""
    if trial.get("cwd") and os.path.isdir(trial["cwd"]):
        os.chdir(trial["cwd"])  # Ray starts trials in their own folder: relative paths are the user's
    torch.set_num_threads(max(1, int(trial.get("threads", 1))))  # its CPUs, no oversubscription
    run_dir = Path(trial["run_dir"] if trial.get("run_dir") else Path(trial["out"]) / "trials" / trial_id())
    if (run_dir / RESULT).exists():  # finished before the driver was restarted
        return json.loads((run_dir / RESULT).read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / STARTED).exists():  # the order of the trials, for the search's history
        (run_dir / STARTED).write_text(f"{time.time()}\n")
    params = param_args(trial.get("params", {}))
    args = fit_args(Path(trial["config"]), run_dir, [*trial.get("overrides", []), *params], trial.get("seed"))
    try:
        result = train(args, run_dir, report, extras=trial.get("extras", True))
    except (Exception, SystemExit) as err:
        if (result := failure(err, run_dir)) is None:
            raise
    result = {"config": Path(trial["config"]).stem, "seed": trial.get("seed"), "params": trial.get("params", {}),
              "run_dir": str(run_dir), "node": node_id(), **result}
    write_json(run_dir / RESULT, result)
    return result


def trial_id() -> str:
    from ray import tune

    return tune.get_context().get_trial_id()


def node_id() -> Optional[str]:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def require_ray() -> None:
    """A clear error when the ``studies`` extra is missing."""
    try:
        import optuna  # noqa: F401
        import ray.tune  # noqa: F401
    except ImportError as err:
        raise ImportError(f"compare and tune run on Ray Tune and Optuna ({err}); "
                          "install them with: pip install 'deeptrain[studies]'") from err


@contextlib.contextmanager
def ray_session(address: Optional[str] = None, num_cpus: Optional[int] = None) -> Iterator[None]:
    """Connects to the Ray cluster at ``address`` (``auto``: the one ``ray start`` runs here;
    ``ray://host:10001``), or starts a local one (all cores and GPUs, or ``num_cpus``) and stops
    it at the end. A Ray already initialized in this process is used as it is."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
             log_to_driver=True, configure_logging=False, runtime_env=worker_env() if not address else None)
    try:
        yield
    finally:
        ray.shutdown()  # with an address: disconnects, the cluster keeps running


def worker_env() -> dict:
    """The driver's PYTHONPATH for the trials' processes: a checkout run with PYTHONPATH=. trains its own code."""
    path = os.environ.get("PYTHONPATH")
    return {"env_vars": {"PYTHONPATH": path}} if path else {}


def run_trials(trainable: Callable, param_space: dict, out: Path, name: str, cpus_per_trial: float,
               gpus_per_trial: float, max_concurrent: Optional[int], max_failures: int,
               restore: bool = False, **tune_config: Any):
    """Runs ``trainable`` over ``param_space`` with Ray Tune, its state in ``out/name``; with
    ``restore`` an interrupted study there continues (Tuner.restore: finished trials stay done)."""
    from ray import tune

    trainable = tune.with_resources(trainable, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    # Ray saves the study's state at most every 10 s by default: a driver killed in between would
    # forget the trials that started since; 1 s costs little next to a trial's epochs.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    path = out.resolve() / name
    if restore and tune.Tuner.can_restore(path):
        print(f"resuming the study in {path}", flush=True)
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, param_space=param_space)
    else:
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=False,
                                        trial_name_creator=short_name, trial_dirname_creator=short_name, **tune_config),
            run_config=tune.RunConfig(
                name=name, storage_path=str(out.resolve()),  # Ray requires an absolute path
                failure_config=tune.FailureConfig(max_failures=max_failures), verbose=1,
            ),
        )
    return tuner.fit()


def short_name(trial: Any) -> str:
    return str(trial.trial_id)  # Ray's default name spells out the whole config


def trial_error(result: Any) -> Optional[str]:
    """The last line of a Ray trial's error (a crash that outlived its retries), or None."""
    return str(result.error).strip().splitlines()[-1] if result.error is not None else None
