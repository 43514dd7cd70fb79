"""The documentation stays true to the code: README size and commands, API reference coverage, strict site build."""

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import deeptrain
import deeptrain.data

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("nn", "training", "data", "callbacks", "tools")


def bash_block_after(text: str, marker: str) -> str:
    """The first ```bash block after ``marker``."""
    return re.search(r"```bash\n(.*?)\n```", text[text.index(marker):], re.S).group(1).strip()


def test_readme_is_short_and_ci_runs_its_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    ci = (ROOT / ".ci" / "run").read_text()
    install = bash_block_after(readme, "## Quickstart").split(" && ")[0]
    assert install == 'pip install -e ".[dev]"' and install in ci
    test_command = bash_block_after(readme, "Run the tests")
    assert test_command in ci.splitlines(), f"{test_command!r} is not a line of .ci/run"
    assert "mkdocs build --strict" in ci


def test_readme_lists_every_command_of_the_cli():
    from deeptrain.cli import COMMANDS, LIGHTNING_COMMANDS

    listed = re.findall(r"^\| `deeptrain (\w+)", (ROOT / "README.md").read_text(), re.M)
    assert sorted(listed) == sorted([*LIGHTNING_COMMANDS, *COMMANDS])


def test_api_reference_has_every_module_of_every_subpackage():
    for sub in SUBPACKAGES:
        page = (ROOT / "docs" / "api" / f"{sub}.md").read_text()
        documented = set(re.findall(rf"^::: (deeptrain\.{sub}\.\w+)$", page, re.M))
        modules = {f"deeptrain.{sub}.{p.stem}" for p in (ROOT / "deeptrain" / sub).glob("*.py") if p.stem != "__init__"}
        assert modules <= documented, f"docs/api/{sub}.md lacks {sorted(modules - documented)}"


@pytest.mark.parametrize("package", [deeptrain, deeptrain.data], ids=lambda p: p.__name__)
def test_api_reference_links_every_exported_name(package):
    """Each exported name is linked to the documented object it is (mkdocs --strict checks the link resolves)."""
    index = (ROOT / "docs" / "api" / "index.md").read_text()
    for name in package.__all__:
        linked = re.findall(rf"\[`{name}`\]\[(deeptrain\.[\w.]+)\]", index)
        assert linked, f"docs/api/index.md does not link {package.__name__}.{name}"
        module, attr = linked[0].rsplit(".", 1)
        assert getattr(importlib.import_module(module), attr) is getattr(package, name), f"{name} links {linked[0]}"


@pytest.mark.slow
def test_docs_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")  # from the docs extra, which dev includes
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "nn" / "index.html").is_file()
    assert (tmp_path / "site" / "reports" / "cifar10" / "index.html").is_file()  # the study write-ups are published
