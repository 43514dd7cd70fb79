"""Real kills: SIGKILL a training process at a random moment, and a saving process many times."""

from __future__ import annotations

import pytest
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from reliability_helpers import SCHEDULES, tiny_config

from deeptrain.cli import main
from deeptrain.training.checkpoint_io import TMP_MARK, AtomicCheckpointIO, atomic_torch_save

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 12  # 96 steps, 12 validations, about 40 saves: the kill lands in the middle


def final_weights(logs: Path) -> dict:
    (path,) = logs.glob("tiny/version_0/checkpoints/last.ckpt")
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["global_step"] == EPOCHS * 8
    return ckpt["state_dict"]


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_resume_ends_bitwise_equal(tiny_images, tmp_path):
    args = SCHEDULES["plateau"]
    (tmp_path / "ref").mkdir()
    main(["fit", "--config", str(tiny_config(tmp_path / "ref", tiny_images, max_epochs=EPOCHS)), *args])

    config = tiny_config(tmp_path, tiny_images, max_epochs=EPOCHS)
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "fit", "--config", str(config), *args],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = tmp_path / "logs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(random.Random().uniform(0.0, 0.3))  # a new moment every run
    assert proc.poll() is None, "training ended before the kill: " + proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(last, weights_only=True)["global_step"]  # loads: the kill did not corrupt it
    assert 0 < killed_at < EPOCHS * 8, f"killed at step {killed_at}"

    main(["fit", "--config", str(config), *args, "--ckpt_path", "last"])
    expected, resumed = final_weights(tmp_path / "ref" / "logs"), final_weights(tmp_path / "logs")
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    assert not list(last.parent.glob(f"*{TMP_MARK}*")), "a temporary file of the killed save was left behind"


# Built here, not in the forked child: torch's thread pool does not survive a fork (torch ops hang there).
PAYLOADS = [torch.full((250_000,), float(k)) for k in range(3)]


def _save_forever(path: str, start: int) -> None:
    for i in range(start, 10**9):
        atomic_torch_save({"i": i, "x": PAYLOADS[i % 3]}, path)


@pytest.mark.slow
def test_a_kill_during_saving_always_leaves_a_loadable_checkpoint(tmp_path):
    """25 SIGKILLs at random moments of a process that does nothing but save: the file always loads
    and is one complete save (its values match its counter); most kills land inside a write."""
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"i": 0, "x": PAYLOADS[0]}, path)
    rng, mid_write, previous = random.Random(0), 0, 0
    fork = multiprocessing.get_context("fork")  # no interpreter start: a kill every few milliseconds
    for _ in range(25):
        child = fork.Process(target=_save_forever, args=(str(path), previous + 1))
        child.start()
        time.sleep(rng.uniform(0.02, 0.2))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        mid_write += any(path.parent.glob(f".{path.name}{TMP_MARK}*"))
        ckpt = AtomicCheckpointIO().load_checkpoint(path)
        assert torch.equal(ckpt["x"], PAYLOADS[ckpt["i"] % 3])
        assert ckpt["i"] >= previous  # never an older state either
        previous = ckpt["i"]
    assert previous > 25, f"only {previous} saves completed in 25 rounds"
    assert mid_write >= 5, f"only {mid_write} of 25 kills landed during a write: the test did not test much"
    atomic_torch_save({"i": -1, "x": PAYLOADS[0]}, path)  # the next save clears the dead writers' files
    assert not list(path.parent.glob(f".{path.name}{TMP_MARK}*"))
