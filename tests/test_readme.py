"""The README's test command works as written, and the suite writes only into pytest's temporary folders."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_test_command() -> str:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (line,) = [line for block in blocks for line in block.splitlines() if "-m pytest" in line]
    return line


def test_the_readme_test_command_works_with_its_relative_data_dir():
    """The README's variables as written (``DEEPTRAIN_DATA_DIR=../shared/data``, relative to the clone),
    on the tests that start the CLI in another working directory."""
    before, _, after = readme_test_command().partition("python -m pytest")
    assignments = dict(word.split("=", 1) for word in shlex.split(before))
    assert not Path(assignments["DEEPTRAIN_DATA_DIR"]).is_absolute()
    if not (ROOT / assignments["DEEPTRAIN_DATA_DIR"] / "FashionMNIST").is_dir():
        pytest.skip(f"no data at {assignments['DEEPTRAIN_DATA_DIR']} beside this clone")
    selected = ["tests/test_cli.py::test_fast_dev_run_leaves_the_working_directory_empty_and_prints_no_noise"]
    proc = subprocess.run([sys.executable, "-m", "pytest", *shlex.split(after), *selected],
                          cwd=ROOT, env={**os.environ, **assignments}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "1 passed" in proc.stdout


@pytest.mark.skipif(not os.environ.get("DEEPTRAIN_TEST_STRAY_FILE"), reason="run by the test below only")
def test_writes_a_stray_file():
    Path("stray.txt").write_text("left behind")


def test_a_suite_that_writes_into_the_working_directory_fails(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT),
                           f"{Path(__file__)}::test_writes_a_stray_file"],
                          cwd=tmp_path, env={**os.environ, "DEEPTRAIN_TEST_STRAY_FILE": "1"},
                          capture_output=True, text=True, timeout=300)
    assert (tmp_path / "stray.txt").exists()
    assert proc.returncode == 1 and "1 passed" in proc.stdout
    assert "the suite wrote outside pytest's temporary folders: working directory: ['stray.txt']" in proc.stdout
