"""The task state rules (docs/protocol.md §3.1-§3.2), as icij_nb.model has them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from icij_nb.model import (
    CancelledEvent,
    Effect,
    ErrorEvent,
    ErrorRecord,
    ProgressEvent,
    QueuedEvent,
    ResultEvent,
    RetryEvent,
    Task,
    TaskState,
    resolve_state,
)

CREATED, QUEUED, RUNNING = TaskState.CREATED, TaskState.QUEUED, TaskState.RUNNING
CANCELLED, ERROR, DONE = TaskState.CANCELLED, TaskState.ERROR, TaskState.DONE

# The winner when ``incoming`` (column) competes with ``current`` (row), written out
# from the rules: DONE is final; a ready state is only replaced by a more advanced
# ready state; otherwise the more advanced state wins.
_COLUMNS = (CREATED, QUEUED, RUNNING, CANCELLED, ERROR, DONE)
_LETTER = dict(zip("CQRXED", _COLUMNS, strict=True))
_WINNERS = {
    CREATED: "C Q R X E D",
    QUEUED: "Q Q R X E D",
    RUNNING: "R R R X E D",
    CANCELLED: "X X X X E D",
    ERROR: "E E E E E D",
    DONE: "D D D D D D",
}
PAIRS = [
    pytest.param(current, incoming, _LETTER[winner], id=f"{current}<-{incoming}")
    for current, row in _WINNERS.items()
    for incoming, winner in zip(_COLUMNS, row.split(), strict=True)
]

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_task(
    state: TaskState = QUEUED,
    *,
    max_attempts: int = 1,
    attempts_left: int | None = None,
) -> Task:
    return Task(
        id="ocr-1",
        name="ocr",
        group="cpu",
        args={"path": "a.pdf"},
        state=state,
        max_attempts=max_attempts,
        attempts_left=max_attempts if attempts_left is None else attempts_left,
        created_at=T0,
    )


def record(message: str = "boom") -> ErrorRecord:
    return ErrorRecord(name="ValueError", message=message, created_at=at(0))


def progress(value: float, seconds: float = 1, worker: str | None = "w-1"):
    return ProgressEvent("ocr-1", value, created_at=at(seconds), worker_id=worker)


def failed(attempts_left: int, seconds: float = 2, message: str = "boom"):
    return ErrorEvent(
        "ocr-1", record(message), attempts_left, created_at=at(seconds), worker_id="w-1"
    )


# -- precedence ----------------------------------------------------------------


@pytest.mark.parametrize(("current", "incoming", "winner"), PAIRS)
def test_resolve_state_follows_the_precedence_table(current, incoming, winner):
    assert resolve_state(current, incoming) is winner


@pytest.mark.parametrize(("current", "incoming", "winner"), PAIRS)
def test_a_newer_update_only_lets_queued_replace_running(current, incoming, winner):
    expected = QUEUED if (current, incoming) == (RUNNING, QUEUED) else winner
    assert resolve_state(current, incoming, incoming_is_newer=True) is expected


def test_task_state_parse_is_case_insensitive():
    assert TaskState.parse("running") is RUNNING
    assert TaskState.parse("Done") is DONE


def test_task_state_parse_lists_valid_states_on_a_bad_name():
    with pytest.raises(ValueError, match="unknown task state 'finished'") as info:
        TaskState.parse("finished")
    for state in TaskState:
        assert state.value in str(info.value)


def test_only_done_error_and_cancelled_are_ready():
    assert {s for s in TaskState if s.is_ready} == {DONE, ERROR, CANCELLED}


# -- ProgressEvent ---------------------------------------------------------------


@pytest.mark.parametrize("state", [CREATED, QUEUED])
def test_first_progress_starts_an_attempt(state):
    task = make_task(state)
    assert task.apply(progress(0.0, seconds=5)) is Effect.CHANGED
    assert task.state is RUNNING
    assert task.attempts == 1
    assert task.started_at == at(5)
    assert task.worker_id == "w-1"


def test_further_progress_updates_progress_but_not_attempts_or_start():
    task = make_task()
    task.apply(progress(0.0, seconds=1))
    assert task.apply(progress(0.5, seconds=3, worker=None)) is Effect.CHANGED
    assert (task.state, task.progress, task.attempts) == (RUNNING, 0.5, 1)
    assert task.started_at == at(1)
    assert task.worker_id == "w-1"  # an event without a worker id keeps the last one


def test_each_retry_counts_a_new_attempt():
    task = make_task(max_attempts=3)
    task.apply(progress(0.0, seconds=1))
    task.apply(failed(attempts_left=2, seconds=2))
    task.apply(progress(0.0, seconds=3, worker="w-2"))
    assert task.attempts == 2
    assert task.started_at == at(3)
    assert task.worker_id == "w-2"


def test_a_running_task_restarted_by_another_worker_records_a_lost_attempt():
    task = make_task(max_attempts=3)
    task.apply(progress(0.0, seconds=1, worker="w-1"))
    task.apply(progress(0.4, seconds=2, worker="w-1"))

    effect = task.apply(progress(0.0, seconds=4, worker="w-2"))

    assert effect is Effect.CHANGED
    assert (task.state, task.progress, task.attempts) == (RUNNING, 0.0, 2)
    assert task.attempts_left == 3  # a crash does not use up a retry
    assert (task.started_at, task.worker_id) == (at(4), "w-2")
    [lost] = task.errors
    assert (lost.name, lost.created_at) == ("WorkerLost", at(4))
    assert "worker w-1 stopped while running attempt 1" in lost.message
    assert "gave the task to worker w-2" in lost.message


def test_the_same_worker_resending_progress_records_no_lost_attempt():
    task = make_task(max_attempts=3)
    task.apply(progress(0.0, seconds=1, worker="w-1"))
    task.apply(progress(0.4, seconds=2, worker="w-1"))

    effect = task.apply(progress(0.0, seconds=3, worker="w-1"))  # sent again

    assert effect is Effect.CHANGED
    assert (task.state, task.progress, task.attempts) == (RUNNING, 0.0, 1)
    assert (task.started_at, task.worker_id) == (at(1), "w-1")
    assert task.errors == []


# -- ResultEvent -------------------------------------------------------------------


def test_result_ends_the_task_done():
    task = make_task()
    task.apply(progress(0.3))
    event = ResultEvent("ocr-1", {"pages": 3}, created_at=at(9), worker_id="w-1")
    assert task.apply(event) is Effect.CHANGED
    assert (task.state, task.progress) == (DONE, 1.0)
    assert task.completed_at == at(9)
    assert (task.result, task.has_result) == ({"pages": 3}, True)
    assert task.duration_s == 8.0


def test_a_none_result_is_kept_as_a_result():
    task = make_task()
    task.apply(ResultEvent("ocr-1", None, created_at=at(2)))
    assert task.state is DONE
    assert task.result is None
    assert task.has_result


# -- ErrorEvent --------------------------------------------------------------------


def test_error_with_attempts_left_requeues_and_asks_for_a_republish():
    task = make_task(max_attempts=3)
    task.apply(progress(0.4))
    assert task.apply(failed(attempts_left=2)) is Effect.REPUBLISH
    assert (task.state, task.progress, task.attempts_left) == (QUEUED, 0.0, 2)
    assert [e.message for e in task.errors] == ["boom"]
    assert task.completed_at is None


def test_error_keeps_the_smaller_attempts_left():
    task = make_task(max_attempts=3, attempts_left=1)
    task.apply(progress(0.0))
    # The event claims more attempts than the record allows: the record wins.
    assert task.apply(failed(attempts_left=5)) is Effect.REPUBLISH
    assert task.attempts_left == 1
    task.apply(progress(0.0, seconds=3))
    assert task.apply(failed(attempts_left=0, seconds=4)) is Effect.CHANGED
    assert task.attempts_left == 0
    assert task.state is ERROR


def test_error_without_attempts_left_ends_the_task_in_error():
    task = make_task()
    task.apply(progress(0.0))
    assert task.apply(failed(attempts_left=0, seconds=7)) is Effect.CHANGED
    assert task.state is ERROR
    assert task.completed_at == at(7)
    assert len(task.errors) == 1


def test_errors_are_appended_oldest_first():
    task = make_task(max_attempts=3)
    for attempt, left in enumerate((2, 1, 0)):
        task.apply(progress(0.0, seconds=10 * attempt))
        task.apply(failed(left, seconds=10 * attempt + 1, message=f"try {attempt}"))
    assert [e.message for e in task.errors] == ["try 0", "try 1", "try 2"]
    assert (task.state, task.attempts) == (ERROR, 3)


# -- CancelledEvent ----------------------------------------------------------------


def test_requeueing_cancel_lets_the_broker_redeliver():
    task = make_task()
    task.apply(progress(0.6))
    event = CancelledEvent("ocr-1", requeue=True, created_at=at(3))
    assert task.apply(event) is Effect.CHANGED
    assert (task.state, task.progress) == (QUEUED, 0.0)
    assert task.completed_at is None


def test_a_worker_starting_a_task_cancelled_while_queued_must_be_told_to_stop():
    task = make_task()
    task.apply(CancelledEvent("ocr-1", requeue=False, created_at=at(1)))
    assert task.apply(progress(0.0, seconds=2)) is Effect.STOP
    assert (task.state, task.attempts) == (CANCELLED, 0)


# -- decisions of the manager -------------------------------------------------------


def test_queued_event_moves_only_a_created_task():
    task = make_task(CREATED)
    assert task.apply(QueuedEvent("ocr-1")) is Effect.CHANGED
    assert task.state is QUEUED
    task.apply(progress(0.0))
    assert task.apply(QueuedEvent("ocr-1")) is Effect.NONE
    assert task.state is RUNNING


def test_retry_event_starts_a_failed_task_over_and_keeps_its_errors():
    task = make_task(max_attempts=2)
    task.apply(progress(0.3))
    task.apply(failed(0))
    assert task.state is ERROR
    assert task.apply(RetryEvent("ocr-1")) is Effect.REPUBLISH
    assert (task.state, task.progress, task.completed_at) == (QUEUED, 0.0, None)
    assert task.attempts_left == 2
    assert [e.message for e in task.errors] == ["boom"]


def test_retry_event_leaves_a_running_or_done_task_alone():
    task = make_task()
    task.apply(progress(0.3))
    assert task.apply(RetryEvent("ocr-1")) is Effect.NONE
    task.apply(ResultEvent("ocr-1", 1))
    assert task.apply(RetryEvent("ocr-1")) is Effect.NONE
    assert task.state is DONE


def test_cancel_without_requeue_ends_the_task_cancelled():
    task = make_task()
    task.apply(progress(0.6))
    event = CancelledEvent("ocr-1", requeue=False, created_at=at(4))
    assert task.apply(event) is Effect.CHANGED
    assert task.state is CANCELLED
    assert task.completed_at == at(4)


# -- late and out-of-order events ----------------------------------------------------


def done_task() -> Task:
    task = make_task()
    task.apply(progress(0.0, seconds=1))
    task.apply(ResultEvent("ocr-1", "first", created_at=at(2)))
    return task


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(progress(0.2, seconds=5), id="progress"),
        pytest.param(CancelledEvent("ocr-1", requeue=True), id="cancelled-requeue"),
        pytest.param(CancelledEvent("ocr-1", requeue=False), id="cancelled"),
        pytest.param(ResultEvent("ocr-1", "second"), id="second-result"),
    ],
)
def test_a_done_task_ignores_late_events(event):
    task = done_task()
    before = task.snapshot()
    assert task.apply(event) is Effect.NONE
    assert task == before


def test_a_late_error_on_a_done_task_is_recorded_without_changing_state():
    task = done_task()
    assert task.apply(failed(attempts_left=3, seconds=6)) is Effect.CHANGED
    assert (task.state, task.result, task.progress) == (DONE, "first", 1.0)
    assert task.completed_at == at(2)
    assert len(task.errors) == 1


@pytest.mark.parametrize("state", [ERROR, CANCELLED])
def test_a_late_result_on_a_failed_task_is_kept_once(state):
    task = make_task(state)
    assert task.apply(ResultEvent("ocr-1", None)) is Effect.CHANGED
    assert (task.state, task.result, task.has_result) == (state, None, True)
    assert task.apply(ResultEvent("ocr-1", "again")) is Effect.NONE
    assert task.result is None


@pytest.mark.parametrize("state", [ERROR, CANCELLED])
def test_a_failed_task_is_not_reopened_by_progress_or_requeue(state):
    task = make_task(state)
    # A CANCELLED task some worker runs anyway: the record stays, the worker is
    # told to stop (see the test below).
    assert task.apply(progress(0.9)) is (
        Effect.STOP if state is CANCELLED else Effect.NONE
    )
    assert task.apply(CancelledEvent("ocr-1", requeue=True)) is Effect.NONE
    assert task.apply(failed(attempts_left=2)) is Effect.CHANGED
    assert task.state is state
    assert (task.attempts, task.progress) == (0, 0.0)


def test_progress_arriving_after_the_result_does_not_reopen_the_task():
    task = make_task()
    task.apply(ResultEvent("ocr-1", 42, created_at=at(3)))
    task.apply(progress(0.0, seconds=1))
    task.apply(progress(0.5, seconds=2))
    assert (task.state, task.progress, task.result) == (DONE, 1.0, 42)
    assert task.started_at is None
    assert task.duration_s is None


def test_snapshot_is_not_changed_by_later_events():
    task = make_task(max_attempts=2)
    snap = task.snapshot()
    task.apply(progress(0.0))
    task.apply(failed(attempts_left=1))
    assert (snap.state, snap.attempts, snap.errors) == (QUEUED, 0, [])


# -- ErrorRecord -------------------------------------------------------------------


def _inner() -> None:
    raise KeyError("page 3")


def _outer() -> None:
    try:
        _inner()
    except KeyError as exc:
        raise RuntimeError("OCR failed on a.pdf") from exc


def test_error_record_keeps_name_message_cause_and_frames():
    with pytest.raises(RuntimeError) as info:
        _outer()
    rec = ErrorRecord.from_exception(info.value)
    assert rec.name == "RuntimeError"
    assert rec.message == "OCR failed on a.pdf"
    assert rec.cause == "'page 3'"
    names = [f.name for f in rec.stacktrace]
    assert names[-1] == "_outer"
    assert all(f.file.endswith("test_model.py") for f in rec.stacktrace)
    assert all(f.lineno > 0 for f in rec.stacktrace)
    assert rec.created_at.tzinfo is not None


def test_error_record_of_an_unraised_exception_has_no_frames_or_cause():
    rec = ErrorRecord.from_exception(ValueError("bad"))
    assert (rec.name, rec.message, rec.cause, rec.stacktrace) == (
        "ValueError",
        "bad",
        None,
        (),
    )


def test_error_record_format_reads_like_a_traceback():
    with pytest.raises(RuntimeError) as info:
        _outer()
    text = ErrorRecord.from_exception(info.value).format()
    lines = text.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert any("in _outer" in line and "test_model.py" in line for line in lines)
    assert "RuntimeError: OCR failed on a.pdf" in lines
    assert lines[-1] == "caused by: 'page 3'"
