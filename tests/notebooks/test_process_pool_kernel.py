"""Process pools started from a real IPython kernel, on RabbitMQ.

The scenarios are the ``process_pool_*.ipynb`` notebooks beside this file; the tests
inject a fresh vhost's URL into their ``parameters`` cell, run them in a ``python3``
kernel and read what the cells print (JSON lines). The lifecycle tests drive the
kernel with jupyter_client: shut it down, restart it, or kill it, and check that no
worker process outlives it. Processes are read from ``/proc`` (a zombie counts as
gone: it runs nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from kernels import CELL_TIMEOUT_S, Kernel, started_kernel
from nbclient import NotebookClient
from rabbit import Vhost, make_vhost, rabbitmq, rabbitmq_gate, vhost

from icij_nb.testing import parent_of, wait_processes_gone
from icij_nb.testing import process_alive as alive

# Fixtures from tests/rabbit.py, registered by pytest from this module's namespace.
__all__ = ["make_vhost", "rabbitmq", "rabbitmq_gate", "vhost"]

pytestmark = [pytest.mark.notebook, pytest.mark.rabbitmq, pytest.mark.timeout(180)]

HERE = Path(__file__).parent
WAIT_S = 30.0


def read_notebook(name: str) -> nbformat.NotebookNode:
    return nbformat.read(HERE / name, as_version=4)


def cell_by_id(notebook: nbformat.NotebookNode, cell_id: str) -> Any:
    return next(c for c in notebook.cells if c.get("id") == cell_id)


def with_url(notebook: nbformat.NotebookNode, url: str) -> nbformat.NotebookNode:
    """The notebook with its ``parameters`` cell pointing at ``url``."""
    cell = cell_by_id(notebook, "parameters")
    assert "parameters" in cell.metadata.get("tags", [])
    cell.source = f"amqp_url = {url!r}"
    return notebook


def stdout_lines(cell: Any) -> list[str]:
    text = "".join(
        o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout"
    )
    return text.splitlines()


def printed_json(cell: Any) -> list[Any]:
    """Each stdout line of a cell that is JSON, decoded."""
    found = []
    for line in stdout_lines(cell):
        with contextlib.suppress(ValueError):
            found.append(json.loads(line))
    return found


def logged_stop(logs: Path, pid: int) -> bool:
    """True if worker process ``pid`` logged its own graceful stop."""
    line = f"worker process {pid} stopped"
    return any(line in path.read_text() for path in logs.glob("*.log"))


# -- a notebook run by nbclient -------------------------------------------------------


def test_notebook_tasks_run_in_a_process_pool_started_from_the_kernel(
    vhost: Vhost, tmp_path: Path
) -> None:
    notebook = with_url(read_notebook("process_pool_gather.ipynb"), vhost.amqp_url)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute()
    finally:
        started = printed_json(cell_by_id(notebook, "setup"))
        for pid in started[0]["pids"] if started else []:
            with contextlib.suppress(ProcessLookupError):
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)

    [setup] = printed_json(cell_by_id(notebook, "setup"))
    pids = setup["pids"]
    assert len(pids) == 2
    assert setup["kernel"] not in pids
    gathered = cell_by_id(notebook, "gather")
    assert stdout_lines(gathered)[0] == "[0, 1, 4, 9, 16, 25] ['HI']"
    [where] = printed_json(gathered)
    assert where["outside_pool"] == []
    assert set(where["result_pids"]) <= set(pids)
    assert printed_json(cell_by_id(notebook, "close")) == [
        {"stopped": True, "alive": []}
    ]
    assert [p for p in pids if alive(p)] == []
    assert sorted((tmp_path / ".icij_nb" / "logs").glob("*.log")) == [
        tmp_path / ".icij_nb" / "logs" / "cpu-0.log",
        tmp_path / ".icij_nb" / "logs" / "cpu-1.log",
    ]


# -- a kernel driven by jupyter_client ------------------------------------------------


def start_pool(kernel: Kernel, url: str) -> dict[str, Any]:
    """Run the scenario's ``start`` cell: a process pool; what it printed."""
    notebook = with_url(read_notebook("process_pool_lifecycle.ipynb"), url)
    kernel.run(cell_by_id(notebook, "parameters").source)
    [started] = kernel.run(cell_by_id(notebook, "start").source)
    kernel.children += started["pids"]  # a failed test must leave no worker behind
    return dict(started)


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    with started_kernel(tmp_path) as started:
        yield started


def check_started(started: dict[str, Any], vhost: Vhost) -> list[int]:
    pids: list[int] = started["pids"]
    assert len(pids) == 2
    assert all(parent_of(pid) == started["kernel"] for pid in pids)
    assert started["ran_in"] in pids
    vhost.wait_until(
        lambda: vhost.consumer_count("TASK.cpu") == 2, WAIT_S, what="2 consumers"
    )
    return pids


def test_kernel_shutdown_stops_its_process_pool(
    kernel: Kernel, vhost: Vhost, tmp_path: Path
) -> None:
    pids = check_started(start_pool(kernel, vhost.amqp_url), vhost)

    kernel.manager.shutdown_kernel(now=False)

    wait_processes_gone(pids)
    # Each process stopped itself (not killed along with the kernel's group).
    logs = tmp_path / ".icij_nb" / "logs"
    assert all(logged_stop(logs, pid) for pid in pids)
    vhost.wait_until(
        lambda: vhost.consumer_count("TASK.cpu") == 0, WAIT_S, what="no consumer"
    )


def test_kernel_restart_stops_its_process_pool_and_a_new_one_starts(
    kernel: Kernel, vhost: Vhost, tmp_path: Path
) -> None:
    old = check_started(start_pool(kernel, vhost.amqp_url), vhost)

    kernel.manager.restart_kernel()
    kernel.client.wait_for_ready(timeout=CELL_TIMEOUT_S)

    wait_processes_gone(old)
    logs = tmp_path / ".icij_nb" / "logs"
    assert all(logged_stop(logs, pid) for pid in old)
    new = check_started(start_pool(kernel, vhost.amqp_url), vhost)
    assert not set(new) & set(old)


def test_killed_kernel_leaves_no_worker_process(
    kernel: Kernel, vhost: Vhost, tmp_path: Path
) -> None:
    started = start_pool(kernel, vhost.amqp_url)
    pids = check_started(started, vhost)
    assert started["kernel"] == kernel.pid

    # SIGKILL to the kernel alone (not its process group): no cleanup code runs in it.
    os.kill(kernel.pid, signal.SIGKILL)

    wait_processes_gone(pids)
    logs = tmp_path / ".icij_nb" / "logs"
    assert all(logged_stop(logs, pid) for pid in pids)
    vhost.wait_until(
        lambda: vhost.consumer_count("TASK.cpu") == 0, WAIT_S, what="no consumer"
    )
