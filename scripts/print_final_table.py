"""Print the final task table of an executed notebook.

Usage: python scripts/print_final_table.py OUTPUT.ipynb

Prints the text/plain output of the notebook's last code cell (the quickstart ends with
a cell whose output is the task table), or its stdout if it has no text/plain output,
then the path of the notebook. Standard library only.
"""

import json
import sys
from pathlib import Path
from typing import Any


def _text(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)


def cell_text(cell: dict[str, Any]) -> str | None:
    """Return a code cell's text/plain output, else its stdout, else None."""
    outputs = cell.get("outputs", [])
    for output in reversed(outputs):
        data = output.get("data", {})
        if "text/plain" in data:
            return _text(data["text/plain"])
    stdout = [
        _text(output["text"])
        for output in outputs
        if output.get("output_type") == "stream" and output.get("name") == "stdout"
    ]
    return "".join(stdout) if stdout else None


def main(argv: list[str]) -> int:
    """Print the last code cell's table and the notebook's path."""
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(argv[1])
    notebook = json.loads(path.read_text(encoding="utf-8"))
    code_cells = [c for c in notebook.get("cells", []) if c.get("cell_type") == "code"]
    if not code_cells:
        print(f"{path}: no code cells", file=sys.stderr)
        return 1
    text = cell_text(code_cells[-1])
    if text is None:
        print(f"{path}: the last code cell has no text output", file=sys.stderr)
        return 1
    print(text.rstrip("\n"))
    print(f"\nOutput notebook: {path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
