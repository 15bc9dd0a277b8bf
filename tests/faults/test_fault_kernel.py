"""A kernel killed in the middle of a run on RabbitMQ.

- With a remote (CLI) pool working on, the kernel that submitted the tasks is
  killed: the workers go on and their events wait in ``MANAGER_EVENT``; a new
  manager on the same store and vhost adopts the tasks, applies the events that
  arrived meanwhile, ``tm.result(task_id)`` works for every task, and
  ``tm.frame()`` shows the true states.
- With a process pool started from the kernel, the kernel is killed: no worker
  process outlives it (read from the process table), and the tasks they held go
  back to their queue for the next manager.

The kernel is a real ``python3`` Jupyter kernel, driven with jupyter_client, and is
killed with SIGKILL: no cleanup code runs in it.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_app import app
from faultkit import (
    HERE,
    WAIT_S,
    alive,
    audit,
    children_of,
    drain,
    starts,
)
from kernels import Kernel, started_kernel

from icij_nb.store import read_frame
from icij_nb.testing import wait_processes_gone, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.notebook, pytest.mark.timeout(240)]


@pytest.fixture
def kernel(scratch: Path) -> Iterator[Kernel]:
    with started_kernel(scratch) as started:
        yield started


def connect_cell(vhost, store: Path) -> str:
    return (
        f"import json, os, sys\nsys.path.insert(0, {str(HERE)!r})\n"
        "import icij_nb as nb\nfrom fault_app import app\n"
        f"tm = nb.connect(app, broker={vhost.amqp_url!r}, store={str(store)!r}, "
        f"management_url={vhost.management_url!r})\n"
    )


def stored_done(store: Path) -> int:
    frame = read_frame(store)
    return int((frame["state"] == "DONE").sum())


def test_a_new_manager_adopts_the_run_of_a_killed_kernel(
    kernel, managers, vhost, raw, scratch, cli_pool, figures
):
    store, log, tasks = scratch / "tasks.sqlite3", scratch / "runs.log", 300
    cli = cli_pool("-g", "cpu", "-n", "2")
    vhost.wait_until(lambda: vhost.consumer_count("TASK.cpu") == 2, WAIT_S)
    [submitted] = kernel.run(
        connect_cell(vhost, store)
        + f"batch = tm.map('square', [{{'x': x, 'log': {str(log)!r}, "
        f"'delay_s': 0.02}} for x in range({tasks})])\n"
        "print(json.dumps([h.id for h in batch]))\n"
    )
    wait_until(
        lambda: stored_done(store) >= 30,
        timeout_s=WAIT_S,
        what="30 tasks recorded DONE by the kernel's manager",
    )

    kernel.kill()

    kernel.manager.provisioner.process.wait(timeout=WAIT_S)  # type: ignore[union-attr]
    done_at_kill = stored_done(store)
    assert done_at_kill < tasks  # killed in the middle of the run
    wait_until(
        lambda: len(starts(log)) == tasks and raw.ready("TASK.cpu") == 0,
        timeout_s=WAIT_S,
        what="the CLI pool to run every task",
    )
    waiting = raw.ready("MANAGER_EVENT")
    assert waiting > 0  # the events of the tasks finished after the kill

    tm = managers(app, store=store)

    results = [tm.result(task_id, timeout_s=WAIT_S) for task_id in submitted]
    assert results == [x * x for x in range(tasks)]
    frame = tm.frame()
    assert list(frame["id"]) == submitted
    assert set(frame["state"].astype(str)) == {"DONE"}
    assert frame["progress"].eq(1.0).all()
    drain(raw)
    cli.proc.send_signal(signal.SIGTERM)
    assert cli.proc.wait(timeout=WAIT_S) == 0
    expected = {task_id: x * x for x, task_id in enumerate(submitted)}
    result = audit(frame, expected, raw)
    assert (result.done, result.lost, result.duplicates, result.wrong_results) == (
        tasks,
        0,
        0,
        0,
    )
    assert result.left_in_queues == {"TASK": 0, "TASK.cpu": 0, "MANAGER_EVENT": 0}
    assert raw.ready("MANAGER_EVENT_DLQ") == 0
    runs = starts(log)
    figures.record(
        "4-kernel-killed-new-manager",
        **result.figures(),
        done_when_killed=done_at_kill,
        events_waiting_for_new_manager=waiting,
        reruns=sum(runs.values()) - tasks,
    )


def test_a_killed_kernel_leaves_no_worker_process_and_loses_no_task(
    kernel, managers, vhost, raw, scratch, figures
):
    store, log, tasks = scratch / "tasks.sqlite3", scratch / "runs.log", 100
    [started] = kernel.run(
        connect_cell(vhost, store)
        + "pool = tm.start_pool('cpu', workers=2, processes=True)\n"
        f"batch = tm.map('square', [{{'x': x, 'log': {str(log)!r}, "
        f"'delay_s': 0.05}} for x in range({tasks})])\n"
        "print(json.dumps({'pids': pool.pids, 'kernel': os.getpid(), "
        "'ids': [h.id for h in batch]}))\n"
    )
    pids, submitted = started["pids"], started["ids"]
    kernel.children += pids
    assert started["kernel"] == kernel.pid
    assert children_of(kernel.pid) >= set(pids)
    wait_until(
        lambda: stored_done(store) >= 10,
        timeout_s=WAIT_S,
        what="10 tasks recorded DONE by the kernel's manager",
    )

    kernel.kill()

    wait_processes_gone(pids, timeout_s=30)
    kernel.manager.provisioner.process.wait(timeout=WAIT_S)  # type: ignore[union-attr]
    orphans = [p for p in pids if alive(p)] + sorted(children_of(kernel.pid))
    assert orphans == []
    vhost.wait_until(
        lambda: vhost.consumer_count("TASK.cpu") == 0, WAIT_S, what="no consumer"
    )
    done_at_kill = stored_done(store)
    # Nothing is lost: a new manager and pool finish what the dead kernel left.
    tm = managers(app, store=store)
    tm.start_pool("cpu", workers=2)
    assert tm.gather(submitted, timeout_s=WAIT_S) == [x * x for x in range(tasks)]
    drain(raw)
    for pool in tm.pools:
        pool.stop(finish_running=True)
    expected = {task_id: x * x for x, task_id in enumerate(submitted)}
    result = audit(tm.frame(), expected, raw)
    assert (result.done, result.lost, result.duplicates, result.wrong_results) == (
        tasks,
        0,
        0,
        0,
    )
    assert result.left_in_queues == {"TASK": 0, "TASK.cpu": 0, "MANAGER_EVENT": 0}
    figures.record(
        "5-kernel-killed-with-process-pool",
        **result.figures(),
        worker_processes=len(pids),
        orphans=len(orphans),
        done_when_killed=done_at_kill,
        reruns=sum(starts(log).values()) - tasks,
    )


def test_tasks_submitted_just_before_the_kernel_dies_are_in_the_store(
    kernel, managers, vhost, raw, scratch, cli_pool, figures
):
    store, log, tasks = scratch / "tasks.sqlite3", scratch / "runs.log", 200
    ids_file = scratch / "ids.json"
    cli = cli_pool("-g", "cpu", "-n", "2")
    vhost.wait_until(lambda: vhost.consumer_count("TASK.cpu") == 2, WAIT_S)
    kernel.run(connect_cell(vhost, store) + "import signal\n")

    # map() returns, and the kernel dies at once: no flush interval passes.
    kernel.client.execute(
        f"batch = tm.map('square', [{{'x': x, 'log': {str(log)!r}}} "
        f"for x in range({tasks})])\n"
        f"open({str(ids_file)!r}, 'w').write(json.dumps([h.id for h in batch]))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    kernel.manager.provisioner.process.wait(timeout=WAIT_S)  # type: ignore[union-attr]

    submitted = json.loads(ids_file.read_text())
    assert len(submitted) == tasks
    wait_until(
        lambda: len(starts(log)) == tasks and raw.ready("TASK.cpu") == 0,
        timeout_s=WAIT_S,
        what="the CLI pool to run every task",
    )
    tm = managers(app, store=store)
    assert tm.gather(submitted, timeout_s=WAIT_S) == [x * x for x in range(tasks)]
    drain(raw)
    cli.proc.send_signal(signal.SIGTERM)
    assert cli.proc.wait(timeout=WAIT_S) == 0
    expected = {task_id: x * x for x, task_id in enumerate(submitted)}
    result = audit(tm.frame(), expected, raw)
    assert (result.done, result.lost, result.duplicates, result.wrong_results) == (
        tasks,
        0,
        0,
        0,
    )
    assert raw.ready("MANAGER_EVENT_DLQ") == 0
    assert result.left_in_queues == {"TASK": 0, "TASK.cpu": 0, "MANAGER_EVENT": 0}
    figures.record(
        "4b-kernel-killed-right-after-submit",
        **result.figures(),
        reruns=sum(starts(log).values()) - tasks,
    )
