"""The Python examples of the docs run, in order, in a real kernel.

Each ```python block of a page becomes one cell of a notebook; the blocks may use
top-level ``await``, as in a notebook. A failing assertion or exception in a block
fails the test with the block's traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(120)]

DOCS = Path(__file__).parents[2] / "docs"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
PAGES = [
    "architecture.md",
    "tasks-table.md",
    "retries-and-timeouts.md",
    "timeline.md",
]


def python_blocks(page: str) -> list[str]:
    return PYTHON_BLOCK.findall((DOCS / page).read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", PAGES)
def test_doc_examples_run_in_a_kernel(page: str, tmp_path: Path) -> None:
    blocks = python_blocks(page)
    assert blocks, f"docs/{page} has no ```python example"
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

    executed = [c for c in notebook.cells if c.execution_count is not None]
    assert len(executed) == len(blocks)
