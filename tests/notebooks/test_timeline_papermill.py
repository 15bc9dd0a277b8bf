"""A notebook run by papermill keeps the timeline image and the text progress.

Under papermill no widget renders, so what the output notebook holds is what a
reader sees on nbviewer or GitHub: the blocking ``tm.gather`` leaves one text
progress line per group (its last state, updated in place), and
``nb.timeline(tm.frame())`` leaves one PNG, shown once.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(180)]

NOTEBOOK = Path(__file__).parent / "timeline_papermill.ipynb"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def cell(notebook: nbformat.NotebookNode, cell_id: str) -> Any:
    return next(c for c in notebook.cells if c.get("id") == cell_id)


def data_outputs(notebook: nbformat.NotebookNode, cell_id: str) -> list[Any]:
    return [o["data"] for o in cell(notebook, cell_id).outputs if "data" in o]


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> nbformat.NotebookNode:
    folder = tmp_path_factory.mktemp("timeline_papermill")
    path = folder / "timeline.out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(path),
        kernel_name="python3",
        cwd=str(folder),
        execution_timeout=120,
        progress_bar=False,
    )
    return nbformat.read(path, as_version=4)


def test_the_committed_notebook_has_no_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")


def test_the_wait_leaves_one_final_progress_line_per_group(
    output: nbformat.NotebookNode,
) -> None:
    shown = [d["text/plain"] for d in data_outputs(output, "wait")]
    assert len(shown) == 1, shown  # one display, updated in place
    lines = shown[0].splitlines()
    assert [line.split()[0] for line in lines] == ["cpu", "io"]
    assert "12/12" in lines[0]
    assert "100%" in lines[0]
    assert "4/4" in lines[1]
    assert all("tasks/s]" in line for line in lines)
    printed = "".join(o.get("text", "") for o in cell(output, "wait").outputs)
    assert "errors: 1" in printed


def test_the_timeline_is_kept_as_one_png(output: nbformat.NotebookNode) -> None:
    images = [d["image/png"] for d in data_outputs(output, "timeline")]
    assert len(images) == 1  # drawn without pyplot: not shown a second time
    png = base64.b64decode(images[0])
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) > 10_000
    printed = "".join(o.get("text", "") for o in cell(output, "close").outputs)
    assert "<Timeline tasks=16 workers=3 not_started=0>" in printed
