"""RabbitMQ stopped and started again in the middle of a run of 1,000 tasks.

The private node of the session is stopped (``rabbitmqctl stop``: every connection
drops, the node halts) and started again on the same data; the manager and the
worker processes reconnect by themselves and every task ends DONE, once.
"""

from __future__ import annotations

import pytest
from fault_app import app
from faultkit import audit, drain, starts

import icij_nb as nb
from icij_nb.testing import wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(300)]

TASKS = 1_000


def test_broker_restart_mid_run_every_task_ends_done_once(
    private_rabbit, managers, vhost, raw, scratch, figures
):
    log = scratch / "runs.log"
    tm = managers(app, store=scratch / "tasks.sqlite3")
    pool = tm.start_pool("cpu", workers=2, processes=True)
    vhost.wait_until(lambda: vhost.consumer_count("TASK.cpu") == 2, 60)
    batch = tm.map(
        "square", [{"x": x, "log": str(log), "delay_s": 0.005} for x in range(TASKS)]
    )
    wait_until(
        lambda: tm.counts[nb.TaskState.DONE] >= TASKS // 5,
        timeout_s=120,
        what="a fifth of the tasks to finish",
    )
    done_before = tm.counts[nb.TaskState.DONE]

    private_rabbit.restart()

    assert batch.results(timeout_s=180) == [x * x for x in range(TASKS)]
    assert done_before < TASKS  # the restart did happen in the middle of the run
    wait_until(
        lambda: tm.counts[nb.TaskState.DONE] == TASKS,
        timeout_s=30,
        what="the manager's counts to agree",
    )
    drain(raw)
    pool.stop()
    frame = tm.frame()
    result = audit(frame, {h.id: x * x for x, h in enumerate(batch)}, raw)
    assert (result.done, result.lost, result.duplicates, result.wrong_results) == (
        TASKS,
        0,
        0,
        0,
    )
    assert result.left_in_queues == {"TASK": 0, "TASK.cpu": 0, "MANAGER_EVENT": 0}
    assert raw.ready("MANAGER_EVENT_DLQ") == 0
    runs = starts(log)
    assert set(runs) == {str(x) for x in range(TASKS)}
    figures.record(
        "3-broker-restart",
        **result.figures(),
        done_before_restart=done_before,
        reruns=sum(runs.values()) - TASKS,
        tasks_with_a_worker_lost_record=int(frame["error"].notna().sum()),
    )
