"""Blocking and awaiting in a real IPython kernel, and interrupting a blocked cell.

The scenarios are tiny notebooks beside this file; the tests run them in a fresh
``python3`` kernel and read what the cells print. Every wait has a deadline, so a
deadlock fails the test instead of hanging it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client import KernelClient, KernelManager
from nbclient import NotebookClient

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(120)]

HERE = Path(__file__).parent
CELL_TIMEOUT_S = 60


def read_notebook(name: str) -> nbformat.NotebookNode:
    return nbformat.read(HERE / name, as_version=4)


def cell_by_id(notebook: nbformat.NotebookNode, cell_id: str) -> Any:
    return next(c for c in notebook.cells if c.get("id") == cell_id)


def stdout_lines(cell: Any) -> list[str]:
    text = "".join(
        o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout"
    )
    return text.splitlines()


def test_blocking_gather_and_top_level_await_in_a_kernel(tmp_path: Path) -> None:
    notebook = read_notebook("blocking_wait.ipynb")
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},
    )

    client.execute()  # raises CellExecutionError on a failing cell, times out on a hang

    squares = [i * i for i in range(8)]
    assert stdout_lines(cell_by_id(notebook, "blocking")) == [str([*squares, 5])]
    assert stdout_lines(cell_by_id(notebook, "awaiting")) == [
        str(squares[:4]),
        str(squares[:4]),
        "42",
    ]
    assert stdout_lines(cell_by_id(notebook, "close")) == ["True"]


# -- interrupting a blocked cell, with a kernel driven message by message ----------


@dataclass
class Execution:
    """What one execute request produced."""

    reply: dict[str, Any]
    stdout: list[str] = field(default_factory=list)

    @property
    def lines(self) -> list[str]:
        return "".join(self.stdout).splitlines()


class Kernel:
    """A kernel and its client; runs code and collects replies, with deadlines."""

    def __init__(self, manager: KernelManager, client: KernelClient) -> None:
        self.manager, self.client = manager, client

    def execute(self, code: str, *, until_stdout: str | None = None) -> str:
        """Send ``code``; if ``until_stdout`` is given, return once it was printed."""
        msg_id: str = self.client.execute(code)
        if until_stdout is not None:
            deadline = time.monotonic() + CELL_TIMEOUT_S
            printed = ""
            while until_stdout not in printed:
                printed += "".join(self._stdout(msg_id, deadline, once=True))
        return msg_id

    def finish(self, msg_id: str, stdout: list[str] | None = None) -> Execution:
        """Wait for the end of request ``msg_id``: its output and its reply."""
        deadline = time.monotonic() + CELL_TIMEOUT_S
        result = Execution(reply={}, stdout=list(stdout or []))
        result.stdout += self._stdout(msg_id, deadline, once=False)
        while True:
            reply = self.client.get_shell_msg(timeout=_left(deadline))
            if reply["parent_header"].get("msg_id") == msg_id:
                result.reply = reply["content"]
                return result

    def run(self, code: str) -> Execution:
        return self.finish(self.execute(code))

    def _stdout(self, msg_id: str, deadline: float, *, once: bool) -> list[str]:
        # Reads iopub messages of request ``msg_id``: until the kernel is idle
        # again, or (once=True) until the first stdout text.
        texts: list[str] = []
        while True:
            msg = self.client.get_iopub_msg(timeout=_left(deadline))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            content, kind = msg["content"], msg["msg_type"]
            if kind == "stream" and content["name"] == "stdout":
                texts.append(content["text"])
                if once:
                    return texts
            if kind == "status" and content["execution_state"] == "idle":
                if once:
                    msg = f"request {msg_id} ended without printing what was awaited"
                    raise AssertionError(msg)
                return texts


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the kernel did not answer in time (deadlock?)")
    return left


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=CELL_TIMEOUT_S)
        yield Kernel(manager, client)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def cell_source(cell_id: str) -> str:
    return str(cell_by_id(read_notebook("interrupt_gather.ipynb"), cell_id).source)


def interrupt_cell(kernel: Kernel, cell_id: str) -> Execution:
    """Run a cell that blocks in tm.gather; interrupt it once it printed "waiting"
    (a watcher thread in the kernel prints it when the wait has begun).
    """
    msg_id = kernel.execute(cell_source(cell_id), until_stdout="waiting")
    kernel.manager.interrupt_kernel()
    return kernel.finish(msg_id, stdout=["waiting\n"])


def assert_ok(execution: Execution) -> None:
    reply = execution.reply
    assert reply["status"] == "ok", f"{reply.get('ename')}: {reply.get('evalue')}"


def test_interrupt_stops_a_blocked_gather_and_leaves_the_kernel_usable(
    kernel: Kernel,
) -> None:
    assert_ok(kernel.run(cell_source("setup")))

    blocked = interrupt_cell(kernel, "block")

    assert blocked.reply["status"] == "error"
    assert blocked.reply["ename"] == "KeyboardInterrupt"
    after = kernel.run(cell_source("after"))
    assert_ok(after)
    # Only the wait stopped: the task is still unfinished, and the pool still
    # runs new tasks.
    assert after.lines == ["False", "42"]
    closed = kernel.run(cell_source("close"))
    assert_ok(closed)
    assert closed.lines == ["True"]


def test_interrupt_with_cancel_on_interrupt_cancels_the_awaited_task(
    kernel: Kernel,
) -> None:
    assert_ok(kernel.run(cell_source("setup")))

    blocked = interrupt_cell(kernel, "block_and_cancel")

    assert blocked.reply["ename"] == "KeyboardInterrupt"
    after = kernel.run(cell_source("after_cancel"))
    assert_ok(after)
    assert after.lines == ["CANCELLED"]
    assert_ok(kernel.run(cell_source("close")))
