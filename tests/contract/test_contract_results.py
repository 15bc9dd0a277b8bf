"""Contract: results and errors come back through every backend.

submit/map/gather/wait and their records, a None result, a failure as TaskFailed
with its error record, and a task over its timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from backends import WAIT_S

import icij_nb as nb


def test_submit_map_and_gather_return_results_in_order(app, backend, release):
    @app.task(group="cpu")
    def double(n: int) -> int:
        if n == 0:
            # The first of the batch finishes last: results still come in order.
            release.wait(WAIT_S)
        return n * 2

    @app.task(group="cpu")
    async def shout(word: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"word": word.upper(), "nested": [1.5, None, {"k": True}]}

    tm = backend(app)
    tm.start_pool("cpu", workers=3)

    batch = tm.map("double", [{"n": i} for i in range(6)])
    assert isinstance(batch, nb.TaskBatch)
    assert tm.gather(batch[1:], timeout_s=WAIT_S) == [2, 4, 6, 8, 10]
    release.set()
    assert batch.results(timeout_s=WAIT_S) == [i * 2 for i in range(6)]
    assert tm.gather(reversed(batch), timeout_s=WAIT_S) == [10, 8, 6, 4, 2, 0]
    single = tm.submit("double", {"n": 21})
    other = tm.submit("shout", {"word": "hey"})

    assert single.result(timeout_s=WAIT_S) == 42
    assert tm.result(single.id, timeout_s=WAIT_S) == 42
    assert tm.gather([other, single.id], timeout_s=WAIT_S) == [
        {"word": "HEY", "nested": [1.5, None, {"k": True}]},
        42,
    ]
    assert single.state is nb.TaskState.DONE
    assert tm.counts[nb.TaskState.DONE] == 8
    record = tm.get(single)
    assert (record.state, record.result, record.progress, record.attempts) == (
        nb.TaskState.DONE,
        42,
        1.0,
        1,
    )
    assert record.worker_id is not None
    assert record.worker_id.startswith("contract-worker-")


def test_a_none_result_is_a_result(app, backend):
    @app.task
    def nothing() -> None:
        return None

    tm = backend(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("nothing")

    assert handle.result(timeout_s=WAIT_S) is None
    task = tm.get(handle)
    assert task.state is nb.TaskState.DONE
    assert task.has_result is True
    assert task.result is None
    assert tm.frame().set_index("id").loc[handle.id, "state"] == "DONE"


def test_a_failed_task_raises_task_failed_with_its_error_record(app, backend):
    @app.task
    def boom() -> None:
        raise ValueError("bad")

    @app.task
    def fine() -> int:
        return 1

    tm = backend(app)
    tm.start_pool(None, workers=2)
    failed, done = tm.submit("boom"), tm.submit("fine")

    with pytest.raises(nb.TaskFailed, match="ValueError: bad") as caught:
        failed.result(timeout_s=WAIT_S)
    assert caught.value.task_id == failed.id
    assert caught.value.error is not None
    assert (caught.value.error.name, caught.value.error.message) == (
        "ValueError",
        "bad",
    )
    assert failed.state is nb.TaskState.ERROR
    assert [(e.name, e.message) for e in tm.errors(failed)] == [("ValueError", "bad")]
    assert tm.get(failed).has_result is False
    # wait() gives records and does not raise; gather() raises or collects.
    records = tm.wait([failed, done], timeout_s=WAIT_S)
    assert [r.state for r in records] == [nb.TaskState.ERROR, nb.TaskState.DONE]
    assert records[0].errors[-1].name == "ValueError"
    assert records[1].result == 1
    results = tm.gather([done, failed], timeout_s=WAIT_S, return_exceptions=True)
    assert results[0] == 1
    assert isinstance(results[1], nb.TaskFailed)
    assert results[1].task_id == failed.id
    with pytest.raises(nb.TaskFailed, match="ValueError: bad"):
        tm.gather([done, failed], timeout_s=WAIT_S)
    assert tm.counts[nb.TaskState.ERROR] == 1


def test_a_task_over_its_timeout_fails_and_the_worker_goes_on(app, backend):
    @app.task(group="cpu", timeout_s=0.2)
    async def too_slow() -> None:
        await asyncio.sleep(3600)

    @app.task(group="cpu")
    def quick(n: int) -> int:
        return n

    tm = backend(app)
    tm.start_pool("cpu", workers=1)
    handle = tm.submit("too_slow")

    with pytest.raises(nb.TaskFailed, match="TaskTimeout") as caught:
        handle.result(timeout_s=WAIT_S)
    error = caught.value.error
    assert error is not None
    assert error.name == "TaskTimeout"
    assert "timeout of 0.2s" in error.message
    assert handle.state is nb.TaskState.ERROR
    assert tm.get(handle).attempts == 1  # TimeoutError is not in recover_from
    assert tm.submit("quick", {"n": 1}).result(timeout_s=WAIT_S) == 1
