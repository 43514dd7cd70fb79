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
"""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from fsspec.utils import get_protocol
from lightning.fabric.plugins import TorchCheckpointIO

TMP_MARK = ".tmp-"
PathLike = Union[str, Path]  # as Lightning's own _PATH


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
    """Lightning's ``TorchCheckpointIO`` with atomic local writes and clear load errors.

    Remote paths (``s3://``, ...) keep Lightning's fsspec transaction. The CLI installs this
    plugin on every trainer whose strategy uses the plain ``TorchCheckpointIO``.

    Examples:
        >>> trainer = L.Trainer(plugins=[AtomicCheckpointIO()])  # doctest: +SKIP
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: PathLike, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or not is_local_path(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: PathLike, map_location: Optional[Callable] = lambda storage, loc: storage,
                        weights_only: Optional[bool] = None) -> dict[str, Any]:
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except UNREADABLE as err:
            if (corrupt := as_corrupt_checkpoint_error(path, err)) is err:
                raise
            raise corrupt from err


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
