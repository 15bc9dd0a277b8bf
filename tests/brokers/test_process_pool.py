"""Process pools started from a manager: worker processes forked from this one.

Tasks are defined in this module (inside :func:`make_app`, as a notebook cell would
define them) and run in the forked processes without any module to import there.
Every test runs on a fresh RabbitMQ vhost; the pool's logs go to ``tmp_path``.
Process liveness is read from ``/proc`` (a zombie counts as gone: it runs nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rabbit import Vhost

import icij_nb as nb
from icij_nb.process_pool import ProcessPool
from icij_nb.testing import children_of, parent_of, wait_processes_gone, wait_until
from icij_nb.testing import process_alive as alive

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(180)]

WAIT_S = 30.0
# A worker process must be gone this long after its manager was killed.
ORPHAN_DEADLINE_S = 15.0


def make_app() -> nb.App:
    app = nb.App("process_pool_tests")

    @app.task(group="cpu")
    def whoami(x: int) -> dict[str, int]:
        return {"x": x, "pid": os.getpid()}

    @app.task(group="cpu")
    def rendezvous(folder: str, n: int) -> int:
        # Returns once n processes are inside this function at the same time.
        here = Path(folder)
        (here / str(os.getpid())).touch()
        deadline = time.monotonic() + WAIT_S
        while len(list(here.iterdir())) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {list(here.iterdir())} met")
            time.sleep(0.02)
        return os.getpid()

    @app.task(group="cpu")
    def hold_sync(counter: str, release: str) -> int:
        return _hold(counter, release)

    @app.task(group="cpu")
    async def hold_async(counter: str, release: str) -> int:
        _count(counter, "start")
        while True:  # polled: a file is what another process can set
            if os.path.exists(release):  # noqa: ASYNC240 - a stat, not I/O wait
                break
            await asyncio.sleep(0.02)
        _count(counter, "end")
        return os.getpid()

    return app


def _count(counter: str, what: str) -> None:
    with open(counter, "a", encoding="utf-8") as f:
        f.write(f"{what} {os.getpid()}\n")


def _hold(counter: str, release: str) -> int:
    _count(counter, "start")
    deadline = time.monotonic() + 60
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.02)
    _count(counter, "end")
    return os.getpid()


def executions(counter: Path) -> list[tuple[str, int]]:
    """``(start|end, pid)`` lines the hold tasks wrote, in order."""
    if not counter.exists():
        return []
    return [
        (what, int(pid))
        for what, pid in (line.split() for line in counter.read_text().splitlines())
    ]


# -- processes, from /proc -----------------------------------------------------


def pid_of_worker(worker_id: str | None) -> int:
    """The process id in a worker id (``<app>-worker-<host>-<pid>-<index>``)."""
    assert worker_id is not None
    match = re.search(r"-(\d+)-\d+$", worker_id)
    assert match is not None, worker_id
    return int(match.group(1))


# -- fixtures --------------------------------------------------------------------


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Process pools write their logs under ./.icij_nb/logs.
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def release(scratch: Path) -> Path:
    """A file the hold tasks wait for; created at teardown at the latest."""
    return scratch / "release"


@pytest.fixture
def counter(scratch: Path) -> Path:
    return scratch / "executions.txt"


@pytest.fixture
def manager(vhost: Vhost, scratch: Path, release: Path) -> Iterator[nb.TaskManager]:
    tm = nb.connect(make_app(), broker=vhost.amqp_url, store=":memory:")
    pids: list[int] = []
    try:
        yield tm
    finally:
        release.touch()
        for pool in tm.pools:
            pids += getattr(pool, "pids", [])
        tm.close(timeout_s=60)
        for pid in pids:  # a failed test must not leave a worker behind
            with contextlib.suppress(ProcessLookupError):
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


def start_process_pool(
    tm: nb.TaskManager, vhost: Vhost, workers: int = 2
) -> ProcessPool:
    pool = tm.start_pool("cpu", workers=workers, processes=True)
    assert isinstance(pool, ProcessPool)
    vhost.wait_until(
        lambda: vhost.consumer_count("TASK.cpu") == workers,
        WAIT_S,
        what=f"{workers} worker processes consuming TASK.cpu",
    )
    return pool


# -- tests -----------------------------------------------------------------------


def test_process_pool_runs_tasks_of_this_module_in_child_processes(
    manager: nb.TaskManager, vhost: Vhost, scratch: Path
) -> None:
    before = children_of(os.getpid())

    pool = start_process_pool(manager, vhost)

    assert len(pool.pids) == 2
    assert all(parent_of(pid) == os.getpid() for pid in pool.pids)
    assert children_of(os.getpid()) - before == set(pool.pids)
    # Two tasks that only return once two processes run them at the same time.
    meeting = scratch / "meeting"
    meeting.mkdir()
    met = manager.map("rendezvous", [{"folder": str(meeting), "n": 2}] * 2)
    assert sorted(manager.gather(met, timeout_s=WAIT_S)) == sorted(pool.pids)
    handles = manager.map("whoami", [{"x": i} for i in range(6)])
    results = manager.gather(handles, timeout_s=WAIT_S)
    assert [r["x"] for r in results] == list(range(6))
    assert {r["pid"] for r in results} <= set(pool.pids)
    for handle, result in zip(handles, results, strict=True):
        task = manager.get(handle)
        assert task.state is nb.TaskState.DONE
        assert pid_of_worker(task.worker_id) == result["pid"]
    assert all(path.is_file() for path in pool.log_files)


def test_pool_stop_leaves_no_process(manager: nb.TaskManager, vhost: Vhost) -> None:
    before = children_of(os.getpid())
    pool = start_process_pool(manager, vhost)
    pids = pool.pids
    assert manager.result(manager.submit("whoami", {"x": 1}), timeout_s=WAIT_S)

    pool.stop()

    assert pool.stopped
    assert [p for p in pids if alive(p)] == []
    assert children_of(os.getpid()) == before
    assert pool not in manager.pools
    vhost.wait_until(
        lambda: vhost.consumer_count("TASK.cpu") == 0, WAIT_S, what="no consumer"
    )
    pool.stop()  # twice is harmless


def test_manager_close_stops_its_process_pools(
    manager: nb.TaskManager, vhost: Vhost
) -> None:
    before = children_of(os.getpid())
    pool = start_process_pool(manager, vhost)
    pids = pool.pids

    manager.close()

    assert pool.stopped
    assert [p for p in pids if alive(p)] == []
    assert children_of(os.getpid()) == before


def test_process_pool_on_the_memory_broker_is_a_config_error(
    scratch: Path,
) -> None:
    before = children_of(os.getpid())
    tm = nb.connect(make_app(), store=":memory:")
    try:
        with pytest.raises(nb.ConfigError) as raised:
            tm.start_pool("cpu", workers=2, processes=True)
        assert tm.pools == []
    finally:
        tm.close()
    message = str(raised.value)
    assert "memory broker" in message
    assert "RabbitMQ" in message
    assert "processes=False" in message
    assert children_of(os.getpid()) == before


MANAGER_SCRIPT = """
import json, sys
import icij_nb as nb

app = nb.App("orphans")


@app.task(group="cpu")
def noop() -> None:
    return None


tm = nb.connect(app, broker=sys.argv[1], store=":memory:")
pool = tm.start_pool("cpu", workers=2, processes=True)
print(json.dumps(pool.pids), flush=True)
sys.stdin.read()  # until killed
"""


def read_line(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    assert ready, f"no output from pid {proc.pid} within {timeout_s}s"
    return proc.stdout.readline().decode()


def test_killed_manager_process_leaves_no_orphan_worker(
    vhost: Vhost, scratch: Path
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", MANAGER_SCRIPT, vhost.amqp_url],
        cwd=scratch,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        pids = json.loads(read_line(proc, WAIT_S))
        assert len(pids) == 2
        assert all(parent_of(pid) == proc.pid for pid in pids)
        vhost.wait_until(
            lambda: vhost.consumer_count("TASK.cpu") == 2, WAIT_S, what="consumers"
        )

        proc.kill()  # SIGKILL: no atexit, no cleanup in the manager
        proc.wait(timeout=WAIT_S)

        wait_processes_gone(pids, timeout_s=ORPHAN_DEADLINE_S)
        vhost.wait_until(
            lambda: vhost.consumer_count("TASK.cpu") == 0, WAIT_S, what="no consumer"
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # workers share its group
        proc.wait(timeout=WAIT_S)
        if proc.stdin is not None:
            proc.stdin.close()
        if proc.stdout is not None:
            proc.stdout.close()


def test_sigterm_to_a_worker_process_lets_its_running_task_finish_once(
    manager: nb.TaskManager, vhost: Vhost, counter: Path, release: Path
) -> None:
    pool = start_process_pool(manager, vhost)
    handle = manager.submit(
        "hold_sync", {"counter": str(counter), "release": str(release)}
    )
    wait_until(
        lambda: manager.get(handle).state is nb.TaskState.RUNNING,
        timeout_s=WAIT_S,
        what="the task to run",
    )
    victim = pid_of_worker(manager.get(handle).worker_id)
    survivor = next(p for p in pool.pids if p != victim)
    log = pool.log_files[pool.pids.index(victim)]

    os.kill(victim, signal.SIGTERM)
    wait_until(
        lambda: "running tasks get" in log.read_text(),
        timeout_s=WAIT_S,
        what=f"the worker to start stopping ({log})",
    )
    release.touch()

    assert manager.result(handle, timeout_s=WAIT_S) == victim
    wait_processes_gone([victim])
    task = manager.get(handle)
    assert task.state is nb.TaskState.DONE
    assert pid_of_worker(task.worker_id) == victim
    # It ran exactly once: it was neither killed nor handed to the other process.
    assert executions(counter) == [("start", victim), ("end", victim)]
    # The other process still serves the group.
    assert manager.result(manager.submit("whoami", {"x": 7}), timeout_s=WAIT_S) == {
        "x": 7,
        "pid": survivor,
    }


def test_sigkill_of_a_worker_process_redelivers_its_task_to_another(
    manager: nb.TaskManager, vhost: Vhost, counter: Path, release: Path
) -> None:
    pool = start_process_pool(manager, vhost)
    handle = manager.submit(
        "hold_async", {"counter": str(counter), "release": str(release)}
    )
    wait_until(lambda: executions(counter), timeout_s=WAIT_S, what="the task to start")
    [(_, victim)] = executions(counter)
    survivor = next(p for p in pool.pids if p != victim)

    os.kill(victim, signal.SIGKILL)

    wait_until(
        lambda: len(executions(counter)) == 2,
        timeout_s=WAIT_S,
        what="the broker to redeliver the task",
    )
    release.touch()
    assert manager.result(handle, timeout_s=WAIT_S) == survivor
    assert executions(counter) == [
        ("start", victim),
        ("start", survivor),
        ("end", survivor),
    ]
    task = manager.get(handle)
    assert task.state is nb.TaskState.DONE
    assert pid_of_worker(task.worker_id) == survivor
    frame = manager.frame()
    assert frame.loc[frame["id"] == handle.id, "state"].tolist() == ["DONE"]
