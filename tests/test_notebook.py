"""The quickstart notebook runs top to bottom (a few training steps), as a learner runs it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("QUICKSTART_STEPS", "30")
    monkeypatch.setenv("GPT_PLAYGROUND_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PYTHONPATH", str(NOTEBOOK.parent.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "completed at step 30" in text and "--- temperature 0.5 ---" in text and "--- temperature 1.2 ---" in text
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) >= 2  # the loss plot and the attention map
    assert (tmp_path / "runs" / "quickstart" / "latest" / "model.safetensors").is_file()
