"""Worker crashes: kill -9 mid-task, SIGTERM to a pool, a task that kills its worker.

Each scenario ends with an audit from the store (one row per task, the right result,
a ready state that says why) and from the broker (nothing left in the work queues
once every consumer is gone), and records its figures for docs/reliability.md.
"""

from __future__ import annotations

import os
import signal

import pytest
from fault_app import app
from faultkit import (
    WAIT_S,
    alive,
    audit,
    children_of,
    drain,
    executions,
    pid_of_worker,
    starts,
)
from rabbit import Vhost

import icij_nb as nb
from icij_nb.process_pool import ProcessPool
from icij_nb.testing import wait_processes_gone, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(240)]

QUICK = 20  # quick tasks submitted beside the one a scenario aims at


def consumers(vhost: Vhost, n: int, what: str) -> None:
    vhost.wait_until(lambda: vhost.consumer_count("TASK.cpu") == n, WAIT_S, what=what)


def running_on(tm: nb.TaskManager, handle: nb.TaskHandle) -> int:
    wait_until(
        lambda: tm.get(handle).state is nb.TaskState.RUNNING,
        timeout_s=WAIT_S,
        what=f"{handle.id} to run",
    )
    return pid_of_worker(tm.get(handle).worker_id)


def check_lost_attempt(task: nb.Task, victim: int) -> None:
    """The store shows the attempt the killed worker lost, and the one that won."""
    assert task.state is nb.TaskState.DONE
    assert task.attempts == 2
    [lost] = task.errors
    assert lost.name == "WorkerLost"
    assert str(victim) in lost.message
    assert pid_of_worker(task.worker_id) != victim


def test_kill_9_of_a_process_pool_worker_mid_task_redelivers_it_once(
    managers, vhost, raw, scratch, figures
):
    log, release = scratch / "runs.log", scratch / "release"
    tm = managers(app, store=scratch / "tasks.sqlite3")
    pool = tm.start_pool("cpu", workers=2, processes=True)
    assert isinstance(pool, ProcessPool)
    consumers(vhost, 2, "2 worker processes")
    held = tm.submit("hold", {"x": -1, "log": str(log), "release": str(release)})
    victim = running_on(tm, held)
    quick = tm.map("square", [{"x": x, "log": str(log)} for x in range(QUICK)])

    os.kill(victim, signal.SIGKILL)

    wait_until(lambda: starts(log)["-1"] == 2, timeout_s=WAIT_S, what="the redelivery")
    release.touch()
    assert held.result(timeout_s=WAIT_S) == -1
    assert quick.results(timeout_s=WAIT_S) == [x * x for x in range(QUICK)]
    check_lost_attempt(tm.get(held), victim)
    # The pool replaced the killed process and serves with two again.
    wait_until(lambda: pool.restarts == 1, timeout_s=WAIT_S, what="a respawn")
    assert victim not in pool.pids
    assert len([p for p in pool.pids if alive(p)]) == 2
    consumers(vhost, 2, "2 worker processes again")
    drain(raw)
    pool.stop()
    expected = {held.id: -1} | {h.id: x * x for x, h in enumerate(quick)}
    result = audit(tm.frame(), expected, raw)
    assert result.figures() | {"done": 0} == {
        "submitted": QUICK + 1,
        "done": 0,
        "error": 0,
        "cancelled": 0,
        "lost": 0,
        "duplicates": 0,
        "wrong_results": 0,
        "left_in_queues": 0,
    }
    assert result.done == QUICK + 1
    runs = starts(log)
    assert sorted(runs.values()) == [1] * QUICK + [2]
    figures.record(
        "1a-kill9-process-pool",
        **result.figures(),
        reruns=sum(runs.values()) - len(expected),
        worker_lost_records=len(tm.get(held).errors),
        respawned=pool.restarts,
    )


def test_kill_9_of_a_cli_pool_worker_mid_task_redelivers_it_once(
    managers, vhost, raw, scratch, cli_pool, figures
):
    log, release = scratch / "runs.log", scratch / "release"
    tm = managers(app, store=scratch / "tasks.sqlite3")
    cli = cli_pool("-g", "cpu", "-n", "2", "--grace-s", "2")
    consumers(vhost, 2, "the CLI pool's 2 processes")
    held = tm.submit("hold", {"x": -1, "log": str(log), "release": str(release)})
    victim = running_on(tm, held)
    assert victim in children_of(cli.proc.pid)
    quick = tm.map("square", [{"x": x, "log": str(log)} for x in range(QUICK)])

    os.kill(victim, signal.SIGKILL)

    wait_until(lambda: starts(log)["-1"] == 2, timeout_s=WAIT_S, what="the redelivery")
    release.touch()
    assert held.result(timeout_s=WAIT_S) == -1
    assert quick.results(timeout_s=WAIT_S) == [x * x for x in range(QUICK)]
    check_lost_attempt(tm.get(held), victim)
    consumers(vhost, 2, "the CLI pool to respawn its process")
    assert "restarting" in cli.log
    workers = children_of(cli.proc.pid)
    drain(raw)
    cli.proc.send_signal(signal.SIGTERM)
    assert cli.proc.wait(timeout=WAIT_S) == 0
    wait_processes_gone(workers)
    result = audit(
        tm.frame(), {held.id: -1} | {h.id: x * x for x, h in enumerate(quick)}, raw
    )
    assert (result.done, result.lost, result.duplicates, result.wrong_results) == (
        QUICK + 1,
        0,
        0,
        0,
    )
    assert result.left_in_queues == {"TASK": 0, "TASK.cpu": 0, "MANAGER_EVENT": 0}
    runs = starts(log)
    assert sorted(runs.values()) == [1] * QUICK + [2]
    figures.record(
        "1b-kill9-cli-pool",
        **result.figures(),
        reruns=sum(runs.values()) - result.submitted,
        worker_lost_records=len(tm.get(held).errors),
        respawned=cli.log.count("restarting it in"),
    )


def test_sigterm_to_a_cli_pool_finishes_or_requeues_its_running_tasks(
    managers, vhost, raw, scratch, cli_pool, figures
):
    log = scratch / "runs.log"
    soon, never = scratch / "release-soon", scratch / "release-later"
    tm = managers(app, store=scratch / "tasks.sqlite3")
    cli = cli_pool("-g", "cpu", "-n", "2", "--grace-s", "3")
    consumers(vhost, 2, "the CLI pool's 2 processes")
    finishing = tm.submit("hold", {"x": 1, "log": str(log), "release": str(soon)})
    requeued = tm.submit("hold", {"x": 2, "log": str(log), "release": str(never)})
    running_on(tm, finishing)
    running_on(tm, requeued)
    queued = tm.map("square", [{"x": x, "log": str(log)} for x in range(10, 20)])
    workers = children_of(cli.proc.pid)

    cli.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping" in cli.log, timeout_s=WAIT_S, what="the pool to stop")
    soon.touch()  # within the grace period; the other one outlives it

    assert cli.proc.wait(timeout=WAIT_S) == 0
    wait_processes_gone(workers)
    assert finishing.result(timeout_s=WAIT_S) == 1
    wait_until(
        lambda: tm.get(requeued).state is nb.TaskState.QUEUED,
        timeout_s=WAIT_S,
        what="the held task to be requeued",
    )
    assert raw.ready("TASK.cpu") == 1 + len(queued)
    # A new pool takes what the first one gave back.
    never.touch()
    second = cli_pool("-g", "cpu", "-n", "1")
    assert requeued.result(timeout_s=WAIT_S) == 2
    assert queued.results(timeout_s=WAIT_S) == [x * x for x in range(10, 20)]
    task = tm.get(requeued)
    assert (task.state, task.attempts, task.errors) == (nb.TaskState.DONE, 2, [])
    runs = starts(log)
    assert (runs["1"], runs["2"]) == (1, 2)
    held = {"1", "2"}
    ended_in_first_pool = {
        key for what, key, pid in executions(log) if what == "end" and pid in workers
    }
    assert ended_in_first_pool & held == {"1"}
    assert all(runs[str(x)] == 1 for x in range(10, 20))
    ended = [key for what, key, _ in executions(log) if what == "end"]
    assert sorted(ended, key=int) == ["1", "2", *map(str, range(10, 20))]
    drain(raw)
    second.proc.send_signal(signal.SIGTERM)
    assert second.proc.wait(timeout=WAIT_S) == 0
    expected = {finishing.id: 1, requeued.id: 2} | {
        h.id: x * x for x, h in zip(range(10, 20), queued, strict=True)
    }
    result = audit(tm.frame(), expected, raw)
    assert (result.done, result.lost, result.duplicates, result.wrong_results) == (
        12,
        0,
        0,
        0,
    )
    assert result.left_in_queues == {"TASK": 0, "TASK.cpu": 0, "MANAGER_EVENT": 0}
    figures.record(
        "2-sigterm-cli-pool",
        **result.figures(),
        finished_in_grace=len(held & ended_in_first_pool),
        requeued=len(held - ended_in_first_pool),
        reruns=sum(runs.values()) - len(expected),
    )


def test_a_poison_task_is_dead_lettered_after_the_delivery_limit(
    managers, vhost, raw, scratch, figures
):
    log = scratch / "runs.log"
    tm = managers(app, store=scratch / "tasks.sqlite3")
    pool = tm.start_pool("cpu", workers=2, processes=True)
    assert isinstance(pool, ProcessPool)
    consumers(vhost, 2, "2 worker processes")

    pill = tm.submit("poison", {"log": str(log)})
    good = tm.map("square", [{"x": x, "log": str(log)} for x in range(QUICK)])

    with pytest.raises(nb.TaskFailed, match="DeadLettered") as failed:
        pill.result(timeout_s=120)
    assert good.results(timeout_s=WAIT_S) == [x * x for x in range(QUICK)]
    error = failed.value.error
    assert error is not None
    assert "delivery limit" in error.message
    task = tm.get(pill)
    assert task.state is nb.TaskState.ERROR
    names = [e.name for e in task.errors]
    assert names[-1] == "DeadLettered"
    assert set(names[:-1]) <= {"WorkerLost"}
    deliveries = starts(log)["poison"]
    assert deliveries == 11  # the first delivery and 10 redeliveries (delivery-limit)
    assert raw.ready("TASK_DLQ") == 1
    consumers(vhost, 2, "the pool to be whole again")
    assert pool.restarts == deliveries
    drain(raw)
    pool.stop()
    expected = {pill.id: None} | {h.id: x * x for x, h in enumerate(good)}
    result = audit(tm.frame(), expected, raw)
    assert (result.done, result.error, result.lost, result.duplicates) == (
        QUICK,
        1,
        0,
        0,
    )
    assert result.left_in_queues == {"TASK": 0, "TASK.cpu": 0, "MANAGER_EVENT": 0}
    figures.record(
        "6-poison-task",
        **result.figures(),
        poison_deliveries=deliveries,
        respawned=pool.restarts,
        dead_lettered=raw.ready("TASK_DLQ"),
        worker_lost_records=names.count("WorkerLost"),
    )
