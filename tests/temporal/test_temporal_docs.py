"""The Python examples of docs/temporal.md run, in order, in a real kernel."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = [pytest.mark.temporal, pytest.mark.notebook, pytest.mark.timeout(180)]

PAGE = Path(__file__).parents[2] / "docs" / "temporal.md"
PYTHON_BLOCK = re.compile(r"^ *```python\n(.*?)^ *```$", re.DOTALL | re.MULTILINE)


def test_temporal_doc_examples_run_in_a_kernel(
    tmp_path: Path, temporal_server: object
) -> None:
    blocks = [
        "\n".join(
            line[3:] if line.startswith("   ") else line for line in b.split("\n")
        )
        for b in PYTHON_BLOCK.findall(PAGE.read_text(encoding="utf-8"))
    ]
    assert len(blocks) >= 3
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(block) for block in blocks]
    )
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
