"""The examples of docs/rabbitmq.md run, in order, in a real kernel, on RabbitMQ.

The page's URLs name the default vhost; the test points them at a fresh vhost of its
own, so the examples run unchanged otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = [pytest.mark.notebook, pytest.mark.rabbitmq, pytest.mark.timeout(300)]

PAGE = Path(__file__).parents[2] / "docs" / "rabbitmq.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
DOC_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def test_rabbitmq_doc_examples_run_in_a_kernel(vhost, tmp_path: Path) -> None:
    blocks = PYTHON_BLOCK.findall(PAGE.read_text(encoding="utf-8"))
    assert len(blocks) >= 4
    assert all(DOC_URL in b for b in blocks if "amqp://" in b)
    cells = [b.replace(DOC_URL, vhost.amqp_url) for b in blocks]
    cells.append("tm.close()\nwatch.close()")
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(c) for c in cells]
    )
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )

    client.execute()  # raises CellExecutionError with the failing block

    outputs = "".join(
        o.get("text", "") for c in notebook.cells for o in c.get("outputs", [])
    )
    assert "[['a', 'b'], ['c']]" in outputs
    assert "***" in outputs or "guest:guest" not in outputs
    assert (tmp_path / "pipeline_tasks.py").is_file()
