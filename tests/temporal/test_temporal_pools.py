"""Temporal pools in processes and from the CLI; a killed worker's task is retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import icij_nb as nb
from icij_nb.model import TaskState
from icij_nb.testing import wait_until

pytestmark = [pytest.mark.temporal, pytest.mark.timeout(180)]


def make_app(group: str) -> nb.App:
    app = nb.App("tpools")

    @app.task(group=group)
    def pid(s: float) -> int:
        time.sleep(s)
        return os.getpid()

    return app


def test_a_process_pool_runs_tasks_in_its_processes(make_tm: Any, group: str) -> None:
    tm = make_tm(make_app(group))
    pool = tm.start_pool(group, workers=2, processes=True)
    pids = set(tm.gather(tm.map("pid", [{"s": 0.2}] * 6), timeout_s=60))
    assert pids <= set(pool.pids)
    assert os.getpid() not in pids


def test_a_killed_worker_process_task_is_retried_by_temporal(
    make_tm: Any, group: str
) -> None:
    tm = make_tm(make_app(group))
    pool = tm.start_pool(group, workers=1, processes=True)
    handle = tm.submit("pid", {"s": 6})
    wait_until(lambda: handle.state is TaskState.RUNNING, timeout_s=30)
    first = pool.pids[0]
    os.kill(first, signal.SIGKILL)
    # Temporal notices on the heartbeat timeout, the pool replaces the process.
    assert handle.result(timeout_s=90) not in (first, os.getpid())
    task = tm.get(handle.id)
    assert task.attempts == 2
    assert [e.name for e in task.errors] == ["WorkerLost"]


def test_icij_nb_workers_start_serves_a_group_on_temporal(
    make_tm: Any, group: str, temporal_server: Any, tmp_path: Path
) -> None:
    module = tmp_path / "cli_tasks.py"
    module.write_text(
        textwrap.dedent(
            f"""
            import icij_nb as nb
            app = nb.App("tcli")

            @app.task(group={group!r})
            def shout(word: str) -> str:
                return word.upper()
            """
        )
    )
    cli = subprocess.Popen(
        [sys.executable, "-m", "icij_nb.cli", "workers", "start",
         f"{module}:app", "--group", group, "-n", "2",
         "--broker", temporal_server.url],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        start_new_session=True,
    )  # fmt: skip
    try:
        app = nb.App("tcli")
        app.task(name="shout", group=group)(lambda word: None)
        tm = make_tm(app)
        assert tm.submit("shout", {"word": "hey"}).result(timeout_s=60) == "HEY"
    finally:
        os.killpg(cli.pid, signal.SIGTERM)
        assert cli.wait(30) == 0
