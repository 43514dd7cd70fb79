"""The suite runs as the README gives it, from any folder, and writes only into pytest's temporary folders.

- ``DEEPTRAIN_DATA_DIR=../shared/data`` is relative to where pytest starts; tests that start
  subprocesses in a temporary folder need it absolute.
- Caches (deeptrain's decoded image folders, matplotlib's, torch.compile's) go to a session
  temporary folder, never to the home folder; no bytecode or pytest cache in the working tree.
- At the end, the session fails if the working directory or ``~/.cache/deeptrain`` changed.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

SKIP = {".git", ".venv", ".ci-venv", "__pycache__"}  # not the suite's: environments and git


# At import, before any test module or helper (imported by a deeper conftest) reads the environment.
if _data := os.environ.get("DEEPTRAIN_DATA_DIR"):
    os.environ["DEEPTRAIN_DATA_DIR"] = str(Path(_data).resolve())
CACHES = Path(tempfile.mkdtemp(prefix="deeptrain-test-caches-"))
for _variable, _name in (("DEEPTRAIN_CACHE_DIR", "deeptrain"), ("MPLCONFIGDIR", "matplotlib"),
                         ("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("TRITON_CACHE_DIR", "triton")):
    os.environ[_variable] = str(CACHES / _name)
os.environ.setdefault("MPLBACKEND", "Agg")  # no display needed
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # subprocesses
sys.dont_write_bytecode = True


def pytest_configure(config: pytest.Config) -> None:
    config._deeptrain_before = snapshot(Path.cwd()), snapshot(user_cache())


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    shutil.rmtree(CACHES, ignore_errors=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = getattr(session.config, "_deeptrain_before", None)
    if before is None or session.config.option.collectonly:
        return
    after = snapshot(Path.cwd()), snapshot(user_cache())
    changed = [f"{where}: {sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))[:5]}" for where, a, b in
               zip(("working directory", "~/.cache/deeptrain"), before, after) if a != b]
    if changed:
        session.config.get_terminal_writer().line(
            "the suite wrote outside pytest's temporary folders: " + "; ".join(changed), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def user_cache() -> Path:
    return Path.home() / ".cache" / "deeptrain"


def snapshot(root: Path) -> dict[str, float]:
    """Every file under ``root`` (but environments, git and bytecode) with its modification time."""
    files: dict[str, float] = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP and not d.endswith(".egg-info")]
        for name in names:
            path = os.path.join(folder, name)
            try:
                files[os.path.relpath(path, root)] = os.stat(path).st_mtime
            except FileNotFoundError:
                pass
    return files
