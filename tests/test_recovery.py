"""A kernel that dies leaves its store behind: the next manager on the same file
shows what finished, marks what was queued or running as lost (ERROR, TaskLost),
and can retry it. A manager that is still alive keeps its tasks.

The first kernel is a real subprocess, killed with SIGKILL.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import icij_nb as nb
from icij_nb.testing import wait_until

# The first kernel: two quick tasks finish, one stuck task runs forever in the
# single worker of group "slow", and a second stuck task waits in the queue behind it.
KERNEL = """
import asyncio
import json
import sys
import icij_nb as nb
from icij_nb.testing import wait_until

app = nb.App("recovery")

@app.task(group="fast")
def quick(i: int) -> int:
    return i * 2

@app.task(group="slow")
async def stuck(i: int) -> int:
    await asyncio.sleep(3600)
    return i

tm = nb.connect(app, store=sys.argv[1])
tm.start_pool("fast", workers=1)
tm.start_pool("slow", workers=1)
done = tm.map("quick", [{"i": 1}, {"i": 2}])
done.results(timeout_s=10)
running = tm.submit("stuck", {"i": 3})
wait_until(lambda: running.state is nb.TaskState.RUNNING, timeout_s=10)
queued = tm.submit("stuck", {"i": 4})
tm.frame()  # writes every pending record
print(json.dumps({
    "done": [h.id for h in done], "running": running.id, "queued": queued.id
}), flush=True)
sys.stdin.read()  # hold on until killed
"""


def recovery_app() -> nb.App:
    """The app of the test process: same task names, and ``stuck`` now finishes."""
    app = nb.App("recovery")

    @app.task(group="fast")
    def quick(i: int) -> int:
        return i * 2

    @app.task(group="slow")
    async def stuck(i: int) -> int:
        return i

    return app


class Kernel:
    def __init__(self, store: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(KERNEL), str(store)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.kill()
            pytest.fail(f"the kernel died early: {self.proc.stderr.read()}")
        self.ids: dict[str, Any] = json.loads(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=10)


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    started = Kernel(tmp_path / "tasks.sqlite3")
    yield started
    started.kill()


def test_new_manager_shows_finished_tasks_and_marks_unfinished_ones_lost(
    kernel, tmp_path, make_manager
):
    kernel.kill()
    assert kernel.proc.returncode == -signal.SIGKILL

    tm = make_manager(recovery_app(), store=tmp_path / "tasks.sqlite3")
    frame = tm.frame().set_index("id")

    assert len(frame) == 4
    for task_id, value in zip(kernel.ids["done"], (2, 4), strict=True):
        assert frame.loc[task_id, "state"] == "DONE"
        assert frame.loc[task_id, "result"] == value
    for key in ("running", "queued"):
        task_id = kernel.ids[key]
        assert frame.loc[task_id, "state"] == "ERROR"
        assert frame.loc[task_id, "error"].startswith("TaskLost: ")
        (error,) = tm.errors(task_id)
        assert error.name == "TaskLost"
        assert f"tm.retry({task_id!r})" in error.message
    assert "RUNNING" in tm.errors(kernel.ids["running"])[0].message
    assert "QUEUED" in tm.errors(kernel.ids["queued"])[0].message


def test_lost_tasks_run_to_done_when_retried(kernel, tmp_path, make_manager):
    kernel.kill()
    tm = make_manager(recovery_app(), store=tmp_path / "tasks.sqlite3")
    tm.start_pool("slow", workers=2)

    handles = [tm.retry(kernel.ids[key]) for key in ("running", "queued")]

    assert tm.gather(handles, timeout_s=10) == [3, 4]
    for handle in handles:
        task = tm.get(handle)
        assert task.state is nb.TaskState.DONE
        assert [e.name for e in task.errors] == ["TaskLost"]
    frame = tm.frame().set_index("id")
    assert set(frame["state"]) == {"DONE"}


def test_second_manager_on_the_file_of_a_live_one_does_not_mark_its_tasks_lost(
    kernel, tmp_path, make_manager
):
    tm = make_manager(recovery_app(), store=tmp_path / "tasks.sqlite3")
    frame = tm.frame().set_index("id")

    assert frame.loc[kernel.ids["running"], "state"] == "RUNNING"
    assert frame.loc[kernel.ids["queued"], "state"] == "QUEUED"
    assert frame["error"].isna().all()
    assert kernel.proc.poll() is None  # the first kernel still runs

    # Once it dies, the next manager settles its tasks.
    kernel.kill()
    later = make_manager(recovery_app(), store=tmp_path / "tasks.sqlite3")
    assert later.get(kernel.ids["running"]).state is nb.TaskState.ERROR


def test_second_manager_in_the_same_process_leaves_running_tasks_alone(
    app, make_manager, release, tmp_path
):
    @app.task
    def held() -> str:
        release.wait(30)
        return "ok"

    store = tmp_path / "shared.sqlite3"
    first = make_manager(app, store=store)
    first.start_pool(None, workers=1)
    handle = first.submit("held")
    wait_until(lambda: handle.state is nb.TaskState.RUNNING, what="task to run")
    first.frame()  # write the RUNNING record

    second = make_manager(app, store=store)

    assert second.frame().set_index("id").loc[handle.id, "state"] == "RUNNING"
    release.set()
    assert handle.result(timeout_s=5) == "ok"
    assert first.get(handle).errors == []
