"""Bad input fails at once, in the cell, with a message that says what was wrong
and what to do; bad output from a task fails that task, with the reason on record.
"""

from __future__ import annotations

import datetime as dt

import pytest

import icij_nb as nb


@pytest.fixture
def tm(app, make_manager):
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(group="cpu")
    def tokenize(doc: str) -> list[str]:
        return doc.split()

    return make_manager(app)


def no_tasks(tm: nb.TaskManager) -> bool:
    return not any(tm.counts.values())


# -- at submit ---------------------------------------------------------------------


def test_unknown_task_name_lists_the_registered_ones(tm):
    with pytest.raises(nb.UnknownTask) as caught:
        tm.submit("tokenise", {"doc": "a b"})

    message = str(caught.value)
    assert "no task named 'tokenise' in app 'testapp'" in message
    assert "registered: 'add', 'tokenize'" in message
    assert "Did you decorate it with @app.task?" in message
    assert no_tasks(tm)


def test_unknown_group_in_start_pool_lists_the_declared_ones(tm):
    with pytest.raises(nb.UnknownGroup) as caught:
        tm.start_pool("gpu", workers=1)

    message = str(caught.value)
    assert "no task group named 'gpu'" in message
    assert "declared groups: 'cpu'" in message
    assert tm.pools == []


def test_duplicate_task_name_names_the_first_definition(app):
    @app.task(name="job")
    def first() -> None:
        pass

    def second() -> None:
        pass

    with pytest.raises(nb.DuplicateTask) as caught:
        app.task(name="job")(second)

    message = str(caught.value)
    assert "a task named 'job' is already registered in app 'testapp'" in message
    assert "first" in message
    assert "@app.task(name=...)" in message
    assert app.get("job").fn is first


def test_args_that_json_cannot_carry_fail_at_submit_and_name_the_path(tm):
    args = {"doc": "a", "meta": {"when": dt.datetime(2024, 1, 2)}}

    with pytest.raises(nb.InvalidArguments) as caught:
        tm.submit("tokenize", args)

    message = str(caught.value)
    assert "arguments of task 'tokenize' cannot be sent" in message
    assert "args['meta']['when'] is a datetime" in message
    assert "Convert it to a str, number, bool, None, list or dict" in message
    assert no_tasks(tm)
    assert len(tm.frame()) == 0


def test_map_with_one_bad_args_dict_queues_nothing(tm):
    with pytest.raises(nb.InvalidArguments) as caught:
        tm.map("tokenize", [{"doc": "ok"}, {"doc": float("nan")}])

    message = str(caught.value)
    assert message.startswith("args_list[1]: ")
    assert "args['doc'] is nan; JSON has no NaN" in message
    assert "no task was submitted" in message
    assert no_tasks(tm)


def test_args_that_do_not_fit_the_signature_fail_at_submit(tm):
    with pytest.raises(nb.InvalidArguments) as missing:
        tm.submit("add", {"x": 1})
    with pytest.raises(nb.InvalidArguments) as extra:
        tm.submit("add", {"x": 1, "y": 2, "z": 3})

    assert "arguments ['x'] do not fit task 'add'" in str(missing.value)
    assert "missing a required argument: 'y'" in str(missing.value)
    assert "It takes: x, y." in str(missing.value)
    assert "arguments ['x', 'y', 'z'] do not fit task 'add'" in str(extra.value)
    assert "It takes: x, y." in str(extra.value)
    assert no_tasks(tm)


def test_args_that_are_not_a_dict_fail_at_submit(tm):
    with pytest.raises(nb.InvalidArguments, match="must be a dict of keyword"):
        tm.submit("add", [1, 2])
    assert no_tasks(tm)


def test_map_with_a_dict_instead_of_a_list_says_what_it_takes(tm):
    with pytest.raises(nb.InvalidArguments) as caught:
        tm.map("add", {"x": 1, "y": 2})

    message = str(caught.value)
    assert "map('add', ...) takes a list of args dicts, one per task" in message
    assert "got a dict; for one task use submit()" in message
    assert no_tasks(tm)


def test_submitting_after_close_raises_manager_closed(tm):
    tm.close()
    tm.close()  # harmless twice

    with pytest.raises(nb.ManagerClosed) as caught:
        tm.submit("add", {"x": 1, "y": 2})
    with pytest.raises(nb.ManagerClosed):
        tm.map("add", [{"x": 1, "y": 2}])
    with pytest.raises(nb.ManagerClosed):
        tm.start_pool(None)

    message = str(caught.value)
    assert "the task manager of app 'testapp' is closed" in message
    assert "nothing was submitted" in message
    assert "nb.connect(app)" in message


def test_full_queue_refuses_the_next_task_and_keeps_the_queued_ones(app, make_manager):
    @app.task(group=nb.TaskGroup("capped", max_task_queue_size=2))
    def job(i: int) -> int:
        return i

    tm = make_manager(app)  # no pool: nothing leaves the queue
    kept = [tm.submit("job", {"i": i}) for i in range(2)]

    with pytest.raises(nb.TaskQueueFull) as caught:
        tm.submit("job", {"i": 2})

    message = str(caught.value)
    assert "the queue of group 'capped' is full (2 tasks" in message
    assert "max_task_queue_size" in message
    assert "start a pool for it, or raise the cap" in message
    assert caught.value.group == "capped"
    assert tm.counts[nb.TaskState.QUEUED] == 2
    assert len(tm.frame()) == 2
    tm.start_pool("capped", workers=1)
    assert tm.gather(kept, timeout_s=5) == [0, 1]


def test_map_into_a_full_queue_keeps_the_tasks_that_fit(app, make_manager):
    @app.task(group=nb.TaskGroup("capped", max_task_queue_size=2))
    def job(i: int) -> int:
        return i

    tm = make_manager(app)
    with pytest.raises(nb.TaskQueueFull) as caught:
        tm.map("job", [{"i": i} for i in range(3)])

    assert len(caught.value.not_queued) == 1
    assert tm.counts[nb.TaskState.QUEUED] == 2
    frame = tm.frame()
    assert sorted(a["i"] for a in frame["args"]) == [0, 1]
    assert caught.value.not_queued[0] not in set(frame["id"])
    tm.start_pool("capped", workers=1)
    done = tm.wait(list(frame["id"]), timeout_s=5)
    assert sorted(t.result for t in done) == [0, 1]


# -- waiting -----------------------------------------------------------------------


def test_blocking_wait_that_times_out_names_the_task_and_its_state(tm):
    handle = tm.submit("tokenize", {"doc": "a"})  # no pool for "cpu"
    other = tm.submit("tokenize", {"doc": "b"})

    with pytest.raises(nb.WaitTimeout) as caught:
        handle.result(timeout_s=0.1)
    with pytest.raises(nb.WaitTimeout) as both:
        tm.gather([handle, other], timeout_s=0.1)

    error = caught.value
    assert isinstance(error, TimeoutError)
    assert error.task_id == handle.id
    assert error.state is nb.TaskState.QUEUED
    message = str(error)
    assert f"waiting for task {handle.id!r} (tokenize), still QUEUED" in message
    assert "the task goes on" in message
    assert "start a pool for its group" in message
    assert "and 1 other task(s)" in str(both.value)
    assert handle.state is nb.TaskState.QUEUED


# -- what a task does wrong --------------------------------------------------------


def test_non_json_result_ends_the_task_in_error_with_invalid_result(app, make_manager):
    @app.task(max_retries=2, recover_from=(Exception,))
    def returns_a_set() -> set[int]:
        return {1, 2}

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("returns_a_set")

    with pytest.raises(nb.TaskFailed) as caught:
        handle.result(timeout_s=5)

    error = caught.value.error
    assert error is not None
    assert error.name == "InvalidResult"
    assert "task 'returns_a_set' returned a value JSON cannot carry" in error.message
    assert "the result is a set ({1, 2})" in error.message
    assert tm.get(handle).attempts == 1  # a bad result is not retried


@pytest.mark.parametrize(("kind", "value"), [("sync", -0.1), ("async", 1.5)])
def test_progress_outside_0_1_ends_the_task_in_error_with_invalid_progress(
    app, make_manager, kind, value
):
    @app.task
    def bad_sync(progress) -> None:
        progress(value)

    @app.task
    async def bad_async(progress) -> None:
        await progress(value)

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit(f"bad_{kind}")

    with pytest.raises(nb.TaskFailed):
        handle.result(timeout_s=5)

    (error,) = tm.errors(handle)
    assert error.name == "InvalidProgress"
    assert f"progress must be a number in [0, 1], got {value!r}" in error.message
    assert "report done / total" in error.message


def test_raising_task_records_its_traceback_frames(app, make_manager):
    def lookup(key: str) -> int:
        raise KeyError(key)

    @app.task
    def explode(key: str) -> int:
        return lookup(key)

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("explode", {"key": "missing"})

    with pytest.raises(nb.TaskFailed) as caught:
        handle.result(timeout_s=5)

    (error,) = tm.errors(handle)
    assert error.name == "KeyError"
    frames = [f.name for f in error.stacktrace]
    assert frames[-2:] == ["explode", "lookup"]
    assert error.stacktrace[-1].file == __file__
    message = str(caught.value)
    assert f"task {handle.id!r} (explode) failed after 1 attempt(s)" in message
    assert "Traceback (most recent call last):" in message
    assert "in lookup" in message
    assert tm.get(handle).attempts == 1  # default recover_from is empty


def test_raising_task_is_retried_only_when_recover_from_lists_the_error(
    app, make_manager
):
    @app.task(max_retries=1, recover_from=(KeyError,))
    def explode(error: str) -> None:
        raise {"key": KeyError, "value": ValueError}[error]("boom")

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    listed = tm.submit("explode", {"error": "key"})
    unlisted = tm.submit("explode", {"error": "value"})

    tm.wait([listed, unlisted], timeout_s=5)

    assert [e.name for e in tm.errors(listed)] == ["KeyError", "KeyError"]
    assert [e.name for e in tm.errors(unlisted)] == ["ValueError"]
