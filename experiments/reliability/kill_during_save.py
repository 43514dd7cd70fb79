"""How often does a SIGKILL during a checkpoint save leave an unreadable file?

A forked child saves a ~4 MB checkpoint to the same path in a loop; the parent kills it after
a random 20-200 ms, then tries to load the file; repeated ``--kills`` times per writer:

- ``torch.save``: plain ``torch.save(obj, path)``;
- ``lightning``: Lightning 2.6's ``TorchCheckpointIO`` (fsspec transaction: a temp file from
  ``tempfile.mkstemp()``, then ``shutil.move``) with the temp folder on the checkpoint's
  filesystem, and on another one (``--other-tmp``, default ``/dev/shm``, a tmpfs), where the
  move becomes a copy into the target;
- ``atomic``: deeptrain's ``AtomicCheckpointIO`` (temp file beside the target, fsync, ``os.replace``).

    python experiments/reliability/kill_during_save.py --kills 50 --dir /tmp/ckpt-kill
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from deeptrain.training.checkpoint_io import AtomicCheckpointIO

PAYLOADS = [torch.full((1_000_000,), float(k)) for k in range(3)]  # built before forking (see the tests)


def saver(kind: str, tmp_dir: str | None):
    if kind == "torch.save":
        return lambda obj, path: torch.save(obj, path)
    if kind == "atomic":
        return AtomicCheckpointIO().save_checkpoint
    tempfile.tempdir = tmp_dir  # where fsspec's mkstemp puts the file before moving it
    return TorchCheckpointIO().save_checkpoint


def save_forever(kind: str, tmp_dir: str | None, path: str, start: int) -> None:
    save = saver(kind, tmp_dir)
    for i in range(start, 10**9):
        save({"i": i, "x": PAYLOADS[i % 3]}, path)


def trial(kind: str, tmp_dir: str | None, folder: Path, kills: int, seed: int) -> tuple[int, int]:
    """(unreadable or inconsistent files, completed saves) over ``kills`` kills."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    path = folder / "last.ckpt"
    torch.save({"i": 0, "x": PAYLOADS[0]}, path)
    rng, bad, last = random.Random(seed), 0, 0
    fork = multiprocessing.get_context("fork")
    for _ in range(kills):
        child = fork.Process(target=save_forever, args=(kind, tmp_dir, str(path), last + 1))
        child.start()
        time.sleep(rng.uniform(0.02, 0.2))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        try:
            ckpt = torch.load(path, weights_only=True)
            ok = torch.equal(ckpt["x"], PAYLOADS[ckpt["i"] % 3])
            last = ckpt["i"]
        except Exception:
            ok = False
        if not ok:
            bad += 1
            torch.save({"i": last, "x": PAYLOADS[last % 3]}, path)  # repair, go on
    return bad, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "deeptrain-kill-during-save")
    parser.add_argument("--other-tmp", default="/dev/shm", help="a temp folder on another filesystem than --dir")
    args = parser.parse_args()
    same_fs = str(args.dir.parent)
    cases = [("torch.save", None), ("lightning", same_fs), ("lightning", args.other_tmp), ("atomic", None)]
    print(f"{args.kills} SIGKILLs per writer, checkpoints in {args.dir} ({PAYLOADS[0].numel() * 4 / 1e6:.0f} MB)")
    print(f"{'writer':<12} {'temp folder':<28} {'unreadable':>10} {'saves':>6}")
    for kind, tmp_dir in cases:
        bad, saves = trial(kind, tmp_dir, args.dir, args.kills, seed=0)
        where = "-" if tmp_dir is None else tmp_dir + (" (same fs)" if tmp_dir == same_fs else " (other fs)")
        print(f"{kind:<12} {where:<28} {bad:>10} {saves:>6}", flush=True)
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
