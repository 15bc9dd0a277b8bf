"""Contract: retries by the task's own rules (max_retries, recover_from) and retry()."""

from __future__ import annotations

import pytest
from backends import WAIT_S

import icij_nb as nb


def test_recoverable_errors_are_retried_until_an_attempt_succeeds(app, backend):
    calls: list[int] = []

    @app.task(group="cpu", max_retries=3, recover_from=(ConnectionError,))
    def flaky(key: str) -> int:
        calls.append(len(calls) + 1)
        if len(calls) < 3:
            raise ConnectionError(f"attempt {len(calls)} of {key} failed")
        return len(calls)

    tm = backend(app)
    tm.start_pool("cpu", workers=1)
    handle = tm.submit("flaky", {"key": "k1"})

    assert handle.result(timeout_s=WAIT_S) == 3
    task = tm.get(handle)
    assert task.state is nb.TaskState.DONE
    assert (task.attempts, task.max_attempts, task.attempts_left) == (3, 4, 2)
    assert [(e.name, e.message) for e in tm.errors(handle)] == [
        ("ConnectionError", "attempt 1 of k1 failed"),
        ("ConnectionError", "attempt 2 of k1 failed"),
    ]


def test_retries_stop_when_the_attempts_run_out(app, backend):
    calls: list[int] = []

    @app.task(max_retries=2, recover_from=(ConnectionError,))
    def unreachable() -> None:
        calls.append(len(calls) + 1)
        raise ConnectionError(f"refused on call {len(calls)}")

    tm = backend(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("unreachable")

    with pytest.raises(nb.TaskFailed, match="after 3 attempt") as caught:
        handle.result(timeout_s=WAIT_S)
    assert caught.value.error is not None
    assert caught.value.error.name == "ConnectionError"
    task = tm.get(handle)
    assert calls == [1, 2, 3]
    assert (task.state, task.attempts, task.max_attempts) == (
        nb.TaskState.ERROR,
        3,
        3,
    )
    errors = tm.errors(handle)
    assert [e.name for e in errors] == ["ConnectionError"] * 3
    assert [e.message for e in errors] == [f"refused on call {i}" for i in (1, 2, 3)]


def test_errors_not_in_recover_from_are_not_retried(app, backend):
    calls: list[int] = []

    @app.task(max_retries=5, recover_from=(ConnectionError,))
    def broken() -> None:
        calls.append(1)
        raise ValueError("not a connection problem")

    tm = backend(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("broken")

    with pytest.raises(nb.TaskFailed, match="ValueError: not a connection problem"):
        handle.result(timeout_s=WAIT_S)
    assert len(calls) == 1
    assert tm.get(handle).attempts == 1
    assert [e.name for e in tm.errors(handle)] == ["ValueError"]
    assert tm.counts[nb.TaskState.ERROR] == 1


@pytest.mark.parametrize(("max_retries", "attempts"), [(0, 1), (1, 2)])
def test_max_retries_given_at_submit_overrides_the_task_setting(
    app, backend, max_retries, attempts
):
    calls: list[int] = []

    @app.task(max_retries=5, recover_from=(ConnectionError,))
    def unreachable() -> None:
        calls.append(1)
        raise ConnectionError("refused")

    tm = backend(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("unreachable", max_retries=max_retries)

    with pytest.raises(nb.TaskFailed):
        handle.result(timeout_s=WAIT_S)
    assert len(calls) == attempts
    assert tm.get(handle).max_attempts == attempts
    assert len(tm.errors(handle)) == attempts


def test_retry_of_a_failed_task_runs_it_again_under_the_same_id(app, backend):
    calls: list[int] = []

    @app.task
    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first call fails")
        return "ok"

    tm = backend(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("flaky")
    with pytest.raises(nb.TaskFailed):
        handle.result(timeout_s=WAIT_S)

    again = tm.retry(handle)

    assert again.id == handle.id
    assert again.result(timeout_s=WAIT_S) == "ok"
    task = tm.get(handle)
    assert task.state is nb.TaskState.DONE
    assert [e.message for e in task.errors] == ["first call fails"]
    assert len(calls) == 2


def test_retry_of_a_cancelled_task_runs_it(app, backend):
    @app.task(group="io")
    def fine() -> int:
        return 7

    tm = backend(app)
    handle = tm.submit("fine")
    handle.cancel()
    assert handle.state is nb.TaskState.CANCELLED

    handle.retry()

    assert handle.state is nb.TaskState.QUEUED
    tm.start_pool("io", workers=1)
    assert handle.result(timeout_s=WAIT_S) == 7
