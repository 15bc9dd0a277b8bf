"""notebooks/temporal.ipynb runs end to end under papermill, with its own server."""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest

pytestmark = [pytest.mark.temporal, pytest.mark.notebook, pytest.mark.timeout(300)]

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"


def outputs(notebook: nbformat.NotebookNode, cell_id: str) -> str:
    """What a cell printed, or its value; not the progress lines of its waits."""
    found = next(c for c in notebook.cells if c.get("id") == cell_id)
    texts = [
        o.get("text") or o.get("data", {}).get("text/plain", "")
        for o in found.outputs
        if "icij_nb" not in o.get("metadata", {})
    ]
    return "".join(texts)


def test_the_grouped_pipeline_runs_on_an_embedded_temporal_server(
    tmp_path: Path, temporal_server: object
) -> None:
    output = tmp_path / "temporal.out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / "temporal.ipynb"),
        str(output),
        parameters={"corpus": str(NOTEBOOKS / "data" / "corpus.jsonl")},
        kernel_name="python3",
        cwd=str(tmp_path),
        execution_timeout=240,
        progress_bar=False,
    )
    executed = nbformat.read(output, as_version=4)
    assert (
        outputs(executed, "preprocess") == "40 documents preprocessed, 1 failed: [17]\n"
    )
    assert outputs(executed, "close") == (
        "41 documents: 40 classified, failed: [17], retried by Temporal: [3]\n"
    )
    assert "temporal://127.0.0.1:" in outputs(executed, "connect")
    assert outputs(executed, "board").startswith("TaskBoard: 81 tasks ERROR=1 DONE=80")
