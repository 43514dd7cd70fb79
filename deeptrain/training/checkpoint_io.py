"""Checkpoint files that a kill cannot corrupt, and a clear error for one that is anyway.

Lightning's ``TorchCheckpointIO`` serializes to memory and writes through an fsspec
transaction; for local paths fsspec writes to ``tempfile.mkstemp()`` (the system temp
folder) and then ``shutil.move``s the file into place. When the temp folder is on another
filesystem than the checkpoints (a tmpfs ``/tmp``, a mounted volume), that move is a copy
into the target, and a kill during the copy leaves a truncated ``last.ckpt``; it also never
fsyncs, so a power loss can leave an empty file behind a completed rename.

:class:`AtomicCheckpointIO` writes to a temporary file in the target folder, fsyncs it,
``os.replace``s it onto the target (atomic on POSIX and Windows) and fsyncs the folder:
a reader sees the old file or the new one, never a part.

It does so off the training loop's critical path: ``save_checkpoint`` copies the checkpoint's
tensors to host memory (a point-in-time snapshot, as Lightning's ``AsyncCheckpointIO`` takes)
and a worker thread writes, fsyncs and renames it while training goes on; removals wait for the
writes queued before them, so the old best file goes only once the new one is on disk.
"""

from __future__ import annotations

import errno
import os
import pickle
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from fsspec.utils import get_protocol
from lightning.fabric.plugins import TorchCheckpointIO
from lightning_utilities.core.apply_func import apply_to_collection

TMP_MARK = ".tmp-"
PathLike = Union[str, Path]  # as Lightning's own PathLike


def is_local_path(path: PathLike) -> bool:
    """A path on this machine's file system, not ``s3://...`` and the like (fsspec's protocol ``file``)."""
    return get_protocol(str(path)) == "file"


class CorruptCheckpointError(ValueError):
    """A checkpoint file exists but cannot be read (truncated, overwritten, not a checkpoint)."""


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save(obj, path)`` so that ``path`` is never seen partly written.

    Writes ``.<name>.tmp-<pid>`` beside ``path``, fsyncs it, renames it onto ``path`` and
    fsyncs the folder. A temporary file left by a killed process is removed by the next save.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a full or read-only disk: name the file we meant to write, not the temporary
        raise type(err)(err.errno, err.strerror, str(path)) from err
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_temporaries(path: Path) -> None:
    for tmp in path.parent.glob(f".{path.name}{TMP_MARK}*"):
        pid = tmp.name.rsplit(TMP_MARK, 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with atomic local writes, done in the background, and clear load errors.

    A local save snapshots the checkpoint's tensors to host memory in the calling thread and
    returns; a worker thread writes the file with :func:`atomic_torch_save`, so a kill at any
    moment leaves the previous file or the new one. Jobs run in order; at most ``max_pending``
    saves wait at a time (each holds a host copy of the checkpoint), a further save first waits
    for the oldest. Removals are queued behind the writes, ``load_checkpoint`` and ``teardown``
    (the end of every ``fit``/``validate``/...) wait for all of them, and so does the interpreter
    at exit. A failed write is raised by the next call that waits or saves, and the jobs queued
    after it are dropped (the old best file is not removed when the new one failed).

    Remote paths (``s3://``, ...) keep Lightning's fsspec transaction. The CLI installs this
    plugin on every trainer whose strategy uses the plain ``TorchCheckpointIO``.

    Args:
        background: write in a worker thread (False: ``save_checkpoint`` returns once the file is on disk).
        max_pending: saves that may wait for the worker at a time.

    Examples:
        >>> trainer = L.Trainer(plugins=[AtomicCheckpointIO()])  # doctest: +SKIP
        >>> trainer.strategy.checkpoint_io.wait()  # every file saved so far is on disk  # doctest: +SKIP
    """

    def __init__(self, background: bool = True, max_pending: int = 2) -> None:
        super().__init__()
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be an int >= 1, got {max_pending!r}")
        self.background = background
        self._writer = BackgroundWriter(max_pending) if background else None

    def save_checkpoint(self, checkpoint: dict[str, Any], path: PathLike, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or not is_local_path(path):
            self.wait()
            return super().save_checkpoint(checkpoint, path, storage_options)
        if self._writer is None:
            return atomic_torch_save(checkpoint, path)
        self._writer.submit(atomic_torch_save, host_snapshot(checkpoint), path, save=True)

    def remove_checkpoint(self, path: PathLike) -> None:
        if self._writer is None:
            return super().remove_checkpoint(path)
        self._writer.submit(super().remove_checkpoint, path)  # after the writes queued before it

    def wait(self) -> None:
        """Block until every queued write and removal is done; raise the first error of one that failed."""
        if self._writer is not None:
            self._writer.wait()

    def teardown(self) -> None:
        self.wait()
        super().teardown()

    def load_checkpoint(self, path: PathLike, map_location: Optional[Callable] = lambda storage, loc: storage,
                        weights_only: Optional[bool] = None) -> dict[str, Any]:
        self.wait()  # the file may be one being written
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except UNREADABLE as err:
            if (corrupt := as_corrupt_checkpoint_error(path, err)) is err:
                raise
            raise corrupt from err


def host_snapshot(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """``checkpoint`` with every tensor copied to host memory and every container rebuilt: what the
    training loop changes next (weights, optimizer moments, loop counters) cannot reach it."""
    return apply_to_collection(checkpoint, torch.Tensor, lambda t: t.detach().to("cpu", copy=True))


def wait_for_checkpoints(trainer: Any) -> None:
    """Block until the files ``trainer`` saved are on disk (with :class:`AtomicCheckpointIO`, a save
    returns before its file is written); for code that reads them while training runs."""
    wait = getattr(trainer.strategy.checkpoint_io, "wait", None)
    if callable(wait):
        wait()


class BackgroundWriter:
    """One worker thread that runs file jobs in submission order.

    At most ``max_pending`` jobs submitted with ``save=True`` wait at a time; submitting one more
    first waits for the oldest. After a job fails, the jobs queued behind it are skipped and its
    error is raised by the next :meth:`submit` or :meth:`wait`. The worker is a
    ``ThreadPoolExecutor`` thread, which the interpreter joins at exit: queued jobs finish even
    when nobody calls :meth:`wait`.
    """

    def __init__(self, max_pending: int = 2) -> None:
        self.max_pending = max_pending
        self._executor: Optional[ThreadPoolExecutor] = None
        self._jobs: list[Future] = []
        self._saves: list[Future] = []
        self._error: Optional[BaseException] = None
        self._failed = False  # set by the worker; the jobs after a failure are skipped until wait()

    def submit(self, fn: Callable[..., Any], *args: Any, save: bool = False) -> None:
        if self._failed:
            self.wait()  # raises the error
        if save:
            self._saves = [f for f in self._saves if not f.done()]
            while len(self._saves) >= self.max_pending:
                self._saves.pop(0).result()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deeptrain-checkpoint")
        future = self._executor.submit(self._run, fn, *args)
        self._jobs = [f for f in self._jobs if not f.done()] + [future]
        if save:
            self._saves.append(future)

    def _run(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._failed:
            return  # a job before this one failed: remove or overwrite nothing more
        try:
            fn(*args)
        except BaseException as err:
            self._error, self._failed = err, True

    def wait(self) -> None:
        for future in self._jobs:
            future.result()
        self._jobs, self._saves = [], []
        error, self._error, self._failed = self._error, None, False
        if error is not None:
            raise error


# what torch.load raises for a truncated or foreign file (an empty file: EOFError; a cut zip: RuntimeError)
UNREADABLE = (RuntimeError, EOFError, OSError, pickle.UnpicklingError)


def as_corrupt_checkpoint_error(path: PathLike, err: BaseException) -> BaseException:
    """``err`` from ``torch.load(path)`` as a :class:`CorruptCheckpointError` naming the file, when it
    means the file is damaged (not when it is missing, remote, or refused by ``weights_only``)."""
    first_line = (str(err).splitlines() or [""])[0]
    if (isinstance(err, FileNotFoundError) or "Weights only load failed" in first_line
            or not is_local_path(path) or not os.path.isfile(path)):
        return err
    return CorruptCheckpointError(
        f"checkpoint {path} cannot be read ({type(err).__name__}: {first_line}); it is truncated or not a "
        f"checkpoint: resume from another file in {os.path.dirname(os.path.abspath(path))}"
    )


class IncompatibleCheckpointError(ValueError):
    """A checkpoint's weights do not fit the model they are loaded into."""


def _base_name(key: str) -> Optional[str]:
    """Parameter name without torch.nn.utils.prune's reparametrization (``weight_orig`` + ``weight_mask``)."""
    if key.endswith("_mask"):
        return None
    return key[: -len("_orig")] if key.endswith("_orig") else key


def _shapes(state: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {base: tuple(v.shape) for k, v in state.items()
            if (base := _base_name(k)) is not None and isinstance(v, torch.Tensor)}


def _hparam_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) & set(current)):
        a, b = saved[key], current[key]
        if isinstance(a, dict) and isinstance(b, dict):
            out += _hparam_differences(a, b, f"{prefix}{key}.")
        elif a != b and not callable(b):
            out.append(f"model.{prefix}{key}: {a!r} in the checkpoint, {b!r} here")
    return out


def check_checkpoint_fits(model: torch.nn.Module, checkpoint: dict[str, Any], source: Optional[str] = None,
                          hparams: Optional[dict[str, Any]] = None, limit: int = 5) -> None:
    """Raise :class:`IncompatibleCheckpointError` if ``checkpoint["state_dict"]`` does not fit ``model``.

    The message names each layer whose shape differs (both shapes), the layers only one side
    has and the hyperparameters that differ, instead of torch's ``size mismatch`` traceback.
    """
    if "state_dict" not in checkpoint:
        return
    saved, wanted = _shapes(checkpoint["state_dict"]), _shapes(model.state_dict())
    problems = [f"{k} is {tuple(saved[k])} in the checkpoint but {tuple(wanted[k])} in the model"
                for k in wanted if k in saved and saved[k] != wanted[k]]
    missing, unexpected = sorted(set(wanted) - set(saved)), sorted(set(saved) - set(wanted))
    if missing:
        problems.append(f"the checkpoint lacks {missing[:limit]}{' ...' if len(missing) > limit else ''}")
    if unexpected:
        problems.append(f"the model has no {unexpected[:limit]}{' ...' if len(unexpected) > limit else ''}")
    if not problems:
        return
    differences = _hparam_differences(checkpoint.get("hyper_parameters", {}), dict(hparams or {}))
    shown = "; ".join(problems[:limit]) + (f"; and {len(problems) - limit} more" if len(problems) > limit else "")
    hint = (f" It was trained with other options: {'; '.join(differences[:limit])}." if differences else "")
    raise IncompatibleCheckpointError(
        f"checkpoint {source or ''} does not fit this model: {shown}.{hint} Use the options it was trained with "
        "(its config.yaml in the log folder), or Classifier.load_from_checkpoint(path), which rebuilds its model."
    )


# errno of a write that the disk refused: why, and what the user can do about it
STORAGE_ERRORS = {
    errno.ENOSPC: "free some space there",
    errno.EDQUOT: "free some space there (the disk quota is exceeded)",
    errno.EROFS: "remount it writable",
    errno.EACCES: "give this user write access",
    errno.EPERM: "give this user write access",
}


def storage_error(err: Optional[BaseException]) -> Optional[OSError]:
    """The ``OSError`` in ``err``'s chain (itself, its cause or context) saying that the disk refused
    a write (full, over quota, read-only, no permission), or None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in STORAGE_ERRORS:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def storage_error_message(err: BaseException) -> Optional[str]:
    """One line for a log, checkpoint or cache write that a full or read-only disk refused: the path,
    the reason, the fix; None for any other error. Files written before are left as they were
    (checkpoints are replaced atomically), so a fit resumes from its last checkpoint."""
    found = storage_error(err)
    if found is None:
        return None
    target = f" {found.filename}" if found.filename else " (a log or checkpoint file)"
    return (f"cannot write{target}: {found.strerror or os.strerror(found.errno)}; {STORAGE_ERRORS[found.errno]}, "
            "or write elsewhere with --trainer.default_root_dir DIR (logs and checkpoints; DEEPTRAIN_CACHE_DIR for "
            "data caches); the checkpoints already written are intact (resume a fit with --ckpt_path last)")
