"""The quickstart notebook runs under papermill in a real kernel and ends with every
task DONE in its final task table.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(180)]

QUICKSTART = Path(__file__).parents[2] / "notebooks" / "quickstart.ipynb"


def last_code_cell_text(notebook: nbformat.NotebookNode) -> str:
    cell = [c for c in notebook.cells if c.cell_type == "code"][-1]
    texts = [
        o.data["text/plain"] for o in cell.outputs if "text/plain" in o.get("data", {})
    ]
    assert texts, f"the last code cell has no text/plain output: {cell.outputs!r}"
    return texts[-1]


def parse_table(text: str) -> dict[tuple[str, str, str], int]:
    """Read the text form of the (group, name, state, tasks) DataFrame."""
    header, *rows = text.strip().splitlines()
    assert header.split() == ["group", "name", "state", "tasks"], text
    table = {}
    for row in rows:
        _index, group, name, state, tasks = row.split()
        table[(group, name, state)] = int(tasks)
    return table


def test_committed_quickstart_has_no_outputs() -> None:
    notebook = nbformat.read(QUICKSTART, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1


def test_quickstart_ends_with_every_task_done(tmp_path: Path) -> None:
    n_docs = 30
    output = tmp_path / "quickstart.out.ipynb"

    papermill.execute_notebook(
        str(QUICKSTART),
        str(output),
        kernel_name="python3",
        parameters={"n_docs": n_docs},
        cwd=str(tmp_path),
        execution_timeout=120,
        progress_bar=False,
    )

    table = parse_table(last_code_cell_text(nbformat.read(output, as_version=4)))
    # One tokenize and one embed task per document, all DONE.
    assert table == {
        ("cpu", "tokenize", "DONE"): n_docs,
        ("gpu", "embed", "DONE"): n_docs,
    }
    assert sum(table.values()) == 2 * n_docs
    # The default store is ":memory:": nothing is written beside the notebook.
    assert not (tmp_path / ".icij_nb").exists()
