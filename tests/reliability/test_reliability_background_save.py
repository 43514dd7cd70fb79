"""AtomicCheckpointIO writes in a worker thread: what the training loop may rely on anyway."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from deeptrain.callbacks.nonfinite import all_finite
from deeptrain.training import checkpoint_io
from deeptrain.training.checkpoint_io import AtomicCheckpointIO

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gate(monkeypatch):
    """Writes wait until ``gate.set()``; ``gate.written`` lists the paths written, in order."""
    event = threading.Event()
    event.written = []
    real = checkpoint_io.atomic_torch_save

    def gated(obj, path):
        assert event.wait(10), "the test never opened the gate"
        real(obj, path)
        event.written.append(Path(path).name)

    monkeypatch.setattr(checkpoint_io, "atomic_torch_save", gated)
    return event


def test_the_file_holds_the_state_at_the_save_not_at_the_write(gate, tmp_path):
    io, weights = AtomicCheckpointIO(), torch.zeros(1000)
    io.save_checkpoint({"w": weights, "step": 1}, tmp_path / "last.ckpt")
    weights += 1  # the next optimizer step, while the file is still being written
    gate.set()
    saved = io.load_checkpoint(tmp_path / "last.ckpt")  # waits for the write
    assert torch.equal(saved["w"], torch.zeros(1000)) and saved["step"] == 1


def test_the_old_best_is_removed_only_after_the_new_one_is_on_disk(gate, tmp_path):
    io, old, new = AtomicCheckpointIO(), tmp_path / "best-1.ckpt", tmp_path / "best-2.ckpt"
    old.write_bytes(b"the previous best")
    io.save_checkpoint({"w": torch.ones(3)}, new)
    io.remove_checkpoint(old)  # what ModelCheckpoint does right after saving a new best
    assert old.exists() and not new.exists(), "a kill now would leave no best checkpoint at all"
    gate.set()
    io.wait()
    assert not old.exists() and torch.equal(torch.load(new, weights_only=True)["w"], torch.ones(3))


def test_a_failed_write_is_raised_and_nothing_queued_after_it_runs(monkeypatch, tmp_path):
    gate = threading.Event()

    def full_disk(obj, path):
        gate.wait(10)
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint_io, "atomic_torch_save", full_disk)
    io, old = AtomicCheckpointIO(), tmp_path / "best-1.ckpt"
    old.write_bytes(b"the previous best")
    io.save_checkpoint({"w": torch.ones(3)}, tmp_path / "best-2.ckpt")
    io.remove_checkpoint(old)  # queued behind the write, which fails
    gate.set()
    with pytest.raises(OSError, match="No space left"):
        io.wait()
    assert old.exists(), "the old best was removed although the new one was never written"
    io.wait()  # raised once; the writer is usable again


def test_a_failed_write_is_raised_by_the_next_save(monkeypatch, tmp_path):
    calls = []

    def fail_first(obj, path):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(checkpoint_io, "atomic_torch_save", fail_first)
    io = AtomicCheckpointIO()
    io.save_checkpoint({"i": 1}, tmp_path / "last.ckpt")
    io._writer._jobs[-1].result()  # the first write has failed by now
    with pytest.raises(OSError, match="Read-only"):
        io.save_checkpoint({"i": 2}, tmp_path / "last.ckpt")


def test_at_most_max_pending_saves_wait(gate, tmp_path):
    io = AtomicCheckpointIO(max_pending=2)
    io.save_checkpoint({"i": 1}, tmp_path / "a.ckpt")
    io.save_checkpoint({"i": 2}, tmp_path / "b.ckpt")  # two held in memory: both return at once
    blocked = threading.Thread(target=io.save_checkpoint, args=({"i": 3}, tmp_path / "c.ckpt"))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "a third save did not wait for the first write"
    gate.set()
    blocked.join(10)
    io.teardown()  # what the end of every fit calls
    assert gate.written == ["a.ckpt", "b.ckpt", "c.ckpt"]


def test_without_background_the_file_is_there_when_save_returns(gate, tmp_path):
    gate.set()
    AtomicCheckpointIO(background=False).save_checkpoint({"i": 1}, tmp_path / "last.ckpt")
    assert gate.written == ["last.ckpt"] and (tmp_path / "last.ckpt").exists()


def test_a_process_that_exits_without_waiting_still_writes_its_last_save(tmp_path):
    """The worker is joined at interpreter exit (sys.exit after Ctrl-C included): a slow write still lands."""
    script = (
        "import sys, time, torch\n"
        "from deeptrain.training import checkpoint_io\n"
        "real = checkpoint_io.atomic_torch_save\n"
        "checkpoint_io.atomic_torch_save = lambda obj, path: (time.sleep(1.0), real(obj, path))\n"
        f"checkpoint_io.AtomicCheckpointIO().save_checkpoint({{'w': torch.arange(5)}}, {str(tmp_path / 'last.ckpt')!r})\n"
        "sys.exit(130)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode == 130, done.stderr.decode()[-2000:]
    assert torch.equal(torch.load(tmp_path / "last.ckpt", weights_only=True)["w"], torch.arange(5))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_all_finite_finds_one_bad_element_in_any_tensor(bad):
    tensors = [torch.zeros(3, 4), torch.ones(7), torch.zeros(2, 2)]
    assert all_finite(tensors)
    tensors[1][5] = bad
    assert not all_finite(tensors)
