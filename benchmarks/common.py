"""Shared pieces of the benchmark scripts: the CIFAR-10 networks and tensors, alternating
best-of-N timing, and the table / JSON output.

Timing rule: every variant of a comparison runs in the same process, the variants take turns
(A B C A B C ...), and each keeps its best time. On a shared machine the best of N is the
run least disturbed by other jobs, and taking turns exposes every variant to the same
background load, so the *ratios* are stable even when the absolute times drift.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from deeptrain.nn.mlp import MLPConfig

IMAGE_SHAPE = (3, 32, 32)
# The CIFAR-10 networks of configs/cifar10/baseline.yaml and batchnorm.yaml (exercise 8 b-c).
NETS = {
    "baseline": MLPConfig(depth=20, width=100, activation="elu", kernel_init="he_normal"),
    "batchnorm": MLPConfig(depth=20, width=100, activation="elu", kernel_init="he_normal", norm="batch", input_norm=True),
}
LRS = {"baseline": 5e-5, "batchnorm": 5e-4}  # the configs' NAdam learning rates


def load_tensors(data_dir: str | None, n: int = 45_000) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` CIFAR-10 training images (uint8, N x 3 x 32 x 32) and labels; random bytes without ``data_dir``
    (speed does not depend on pixel values)."""
    if data_dir:
        from deeptrain.data.datamodule import ImageDataModule

        dm = ImageDataModule("image_folder", data_dir=data_dir, val_size=50_000 - n)
        dm.setup("fit")
        loader = dm.train_dataloader()
        return loader.images, loader.labels
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, *IMAGE_SHAPE), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


def new_classifier(net: str | MLPConfig, images: torch.Tensor, **kwargs: Any):
    """A seeded :class:`Classifier` with input statistics from the first 5,000 images."""
    from deeptrain.training.module import Classifier

    torch.manual_seed(0)
    config = NETS[net] if isinstance(net, str) else net
    model = Classifier(config, input_shape=IMAGE_SHAPE, num_classes=10, **kwargs)
    x = images[:5000].float()
    model.normalizer.set_stats(x.mean(0), x.std(0).clamp_min(1.0))
    return model


def alternate(variants: dict[str, Callable[[], float | None]], repeats: int, warmup: int = 0) -> dict[str, float]:
    """Best time of each variant over ``repeats`` rounds, the variants taking turns in each round.

    A variant returns its own time in seconds, or None to be timed whole.
    """
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    runs = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            seconds = fn()
            runs[name].append(time.perf_counter() - start if seconds is None else seconds)
    LAST_RUNS.clear()
    LAST_RUNS.update(runs)  # every time, for judging the spread
    return {name: min(times) for name, times in runs.items()}


LAST_RUNS: dict[str, list[float]] = {}


def time_hooks(callback: Any, clock: Callable[[], float] = time.perf_counter) -> Any:
    """Wrap every ``on_*`` hook (and ``state_dict``) of a Lightning ``callback`` so that
    ``callback.hook_seconds`` sums the time spent in it, by ``clock``.

    The time inside the hooks, as a fraction of the epoch, is an overhead figure that a busy
    machine cannot distort: load slows the hooks and the epoch alike.
    """
    import lightning as L

    callback.hook_seconds = 0.0

    def wrap(fn):
        def timed(*args, **kwargs):
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                callback.hook_seconds += clock() - start

        return timed

    own = {name for klass in type(callback).__mro__ if klass not in (L.Callback, object) for name in vars(klass)}
    for name in own:
        if name.startswith("on_") or name == "state_dict":
            setattr(callback, name, wrap(getattr(callback, name)))  # Lightning looks hooks up on the instance
    return callback


def time_calls(fn: Callable[[], Any], calls: int) -> float:
    """Seconds per call of ``fn`` over ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines() if "model name" in line), platform.processor())
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def add_common_args(parser: argparse.ArgumentParser, repeats: int = 3) -> None:
    parser.add_argument("--repeats", type=int, default=repeats, help="rounds; each variant keeps its best time")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write the table (and the machine) to this file")


def setup_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    # A benchmark compiles many fresh models in one process; torch.compile keeps 8 graphs per code
    # object (forward, optimizer step) and then silently runs eagerly. A training run has one model.
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 1024


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Rows as an aligned text table; floats with 3 significant digits."""
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for r in cells:
        print("  ".join(v.rjust(w) for v, w in zip(r, widths)), flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return "" if value is None else str(value)


def write_json(path: str | None, rows: Sequence[dict[str, Any]], **meta: Any) -> None:
    if path:
        Path(path).write_text(json.dumps({"machine": machine(), **meta, "rows": list(rows)}, indent=2))


def batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, steps: int, seed: int = 0):
    """``steps`` shuffled training batches, as the InMemoryLoader serves them (cycling over epochs)."""
    from deeptrain.data.loader import InMemoryLoader

    loader = InMemoryLoader(images, labels, batch_size, shuffle=True, seed=seed)
    done = 0
    while done < steps:
        for x, y in loader:
            yield x, y
            done += 1
            if done == steps:
                return


def train_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
                batch_size: int, steps: int, step_fn: Callable[[], Any] | None = None,
                autocast: torch.dtype | None = None) -> float:
    """Seconds for ``steps`` plain training steps (forward, cross-entropy, backward, optimizer step).

    ``step_fn`` replaces ``optimizer.step`` (e.g. a compiled step); ``autocast`` runs forward and loss
    under ``torch.autocast`` with that dtype on the batch's device.
    """
    import contextlib

    import torch.nn.functional as F

    step_fn = step_fn or optimizer.step
    model.train()
    start = time.perf_counter()
    for x, y in batches(images, labels, batch_size, steps):
        ctx = torch.autocast(x.device.type, dtype=autocast) if autocast else contextlib.nullcontext()
        with ctx:
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        step_fn()
    if images.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start
