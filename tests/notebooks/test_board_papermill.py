"""A board displayed in a notebook run by papermill shows the run's final state.

The board is displayed while no task exists; a later cell runs tasks to the end in a
blocking ``tm.gather``. In the output notebook, both faces of the displayed board
must show the final counts: its output (static HTML and text, updated in place by
``update_display``) and its saved widget state (what JupyterLab shows on opening).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest
from nbclient import NotebookClient

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(180)]

NOTEBOOK = Path(__file__).parent / "board_papermill.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def cell(notebook: nbformat.NotebookNode, cell_id: str) -> Any:
    return next(c for c in notebook.cells if c.get("id") == cell_id)


def models_with_class(state: dict[str, Any], css: str) -> list[dict[str, Any]]:
    return [
        m["state"]
        for m in state.values()
        if css in m.get("state", {}).get("_dom_classes", [])
    ]


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> nbformat.NotebookNode:
    folder = tmp_path_factory.mktemp("board_papermill")
    path = folder / "board.out.ipynb"
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


def test_the_displayed_output_shows_the_final_counts(
    output: nbformat.NotebookNode,
) -> None:
    outputs = [o for o in cell(output, "board").outputs if "data" in o]
    assert len(outputs) == 1
    data = outputs[0]["data"]

    assert WIDGET_VIEW in data
    assert "<b>13 tasks</b>" in data["text/html"]
    assert "ERROR 1" in data["text/html"]
    assert "DONE 12" in data["text/html"]
    assert "No tasks yet" not in data["text/html"]
    assert data["text/plain"].startswith("TaskBoard: 13 tasks ERROR=1 DONE=12")
    assert "page 1/3" in data["text/plain"]
    printed = "".join(o.get("text", "") for o in cell(output, "close").outputs)
    assert "'DONE': 12" in printed


def test_the_saved_widget_state_shows_the_final_counts_and_rows(
    output: nbformat.NotebookNode,
) -> None:
    state = output.metadata["widgets"][WIDGET_STATE]["state"]

    (counts,) = models_with_class(state, "icij-nb-counts")
    assert "<b>13 tasks</b>" in counts["value"]
    assert "DONE 12" in counts["value"]
    (page,) = models_with_class(state, "icij-nb-page")
    assert "rows 1-5 of 13" in page["value"]
    rows = models_with_class(state, "icij-nb-row-cells")
    states = [
        re.search(r'class="icij-nb-state"[^>]*><b[^>]*>(\w+)</b>', r["value"]).group(1)
        for r in rows
    ]
    assert states == ["DONE"] * 5
    view = next(o for o in cell(output, "board").outputs if "data" in o)
    board_id = view["data"][WIDGET_VIEW]["model_id"]
    assert "icij-nb-board" in state[board_id]["state"]["_dom_classes"]


def test_the_examples_of_docs_board_md_run_in_a_kernel(tmp_path: Path) -> None:
    page = (Path(__file__).parents[2] / "docs" / "board.md").read_text("utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```$", page, re.DOTALL | re.MULTILINE)
    assert blocks
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(block) for block in blocks]
    )
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=60,
        resources={"metadata": {"path": str(tmp_path)}},
    )

    client.execute()  # raises CellExecutionError with the failing block

    shown = [o for o in notebook.cells[0].outputs if "data" in o]
    assert "text/html" in shown[0]["data"]
