"""docs/tutorial.ipynb runs from the first cell to the last: a failing cell fails the suite.

The notebook's cells assert the chapter's claims on real data (gradients vanish with sigmoid +
Glorot, SELU self-normalizes, a fused BN network computes the same logits, find_lr and
mc_predict leave the model as they found it, ...), so this is more than "it ran".
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from deeptrain.data.sources import default_data_dir

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def execute(notebook: Path, workdir: Path, timeout: int = 600) -> nbformat.NotebookNode:
    """Run every cell in a fresh kernel whose working directory is ``workdir``; raise on the first error."""
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


@pytest.mark.slow
def test_tutorial_notebook_runs(tmp_path, monkeypatch):
    # The kernel starts in tmp_path: a relative data dir must not follow it there.
    monkeypatch.setenv("DEEPTRAIN_DATA_DIR", str(default_data_dir().resolve()))
    monkeypatch.setenv("DEEPTRAIN_TUTORIAL_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("DEEPTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = execute(NOTEBOOK, tmp_path)
    text = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    assert "suggested lr" in text and "MC dropout, T = 30" in text  # the last sections printed their results
    assert (tmp_path / "out" / "task_a.ckpt").is_file()  # outputs went where they were sent
