"""The SQLite store on its own: round-trips, batched writes, the frame, files,
recovery decisions; and the store strings connect() accepts."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

import icij_nb as nb
from icij_nb import (
    FRAME_COLUMNS,
    ConfigError,
    ErrorRecord,
    StackFrame,
    StoreError,
    Task,
    TaskState,
)
from icij_nb.model import utcnow
from icij_nb.store import Adopt, Lost, Orphan, Store, TaskStore, lost_event
from icij_nb.testing import wait_until_async

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
OpenStore = Callable[..., Awaitable[TaskStore]]


@pytest.fixture
async def open_store() -> AsyncIterator[OpenStore]:
    """``await open_store(path, manager_id=...)`` opens a store; closed at teardown."""
    opened: list[TaskStore] = []

    async def make(
        path: str | Path = ":memory:",
        *,
        manager_id: str = "m-test",
        flush_interval_s: float = 3600,
        flush_batch: int = 5_000,
    ) -> TaskStore:
        store = TaskStore(
            path, flush_interval_s=flush_interval_s, flush_batch=flush_batch
        )
        opened.append(store)
        await store.open(manager_id=manager_id, broker_kind="memory")
        return store

    yield make
    for store in reversed(opened):
        await store.close()


def make_task(n: int = 0, state: TaskState = TaskState.QUEUED, **fields) -> Task:
    return Task(
        id=f"ocr-{n}",
        name="ocr",
        group="cpu",
        args={"path": f"{n}.pdf", "pages": [1, 2], "opts": {"lang": None}},
        state=state,
        created_at=T0 + timedelta(seconds=n),
        **fields,
    )


def put_with_errors(store: TaskStore, task: Task) -> None:
    store.put(task)
    for seq, error in enumerate(task.errors):
        store.put_error(task.id, seq, error)


# -- round-trips --------------------------------------------------------------


def finished_task() -> Task:
    error = ErrorRecord(
        name="OSError",
        message="disk full",
        cause="No space left on device",
        stacktrace=(
            StackFrame(name="run", file="/app/worker.py", lineno=12),
            StackFrame(name="ocr", file="/app/tasks.py", lineno=40),
        ),
        created_at=T0 + timedelta(seconds=3),
    )
    return make_task(
        1,
        TaskState.DONE,
        progress=1.0,
        max_attempts=3,
        attempts_left=2,
        attempts=2,
        started_at=T0 + timedelta(seconds=4),
        completed_at=T0 + timedelta(seconds=9, microseconds=250),
        worker_id="testapp-w-1",
        result={"text": "hello", "pages": [1, 2]},
        has_result=True,
        errors=[error],
    )


@pytest.mark.parametrize("where", ["memory", "file"])
async def test_put_flush_load_round_trips_a_task(open_store, tmp_path, where):
    path = ":memory:" if where == "memory" else tmp_path / "tasks.sqlite3"
    store = await open_store(path)
    task = finished_task()
    put_with_errors(store, task)
    await store.flush()
    assert await store.load(task.id) == task


async def test_a_none_result_is_stored_as_a_result(open_store):
    store = await open_store()
    done = make_task(1, TaskState.DONE, result=None, has_result=True)
    pending = make_task(2)
    store.put(done)
    store.put(pending)
    loaded_done = await store.load(done.id)
    loaded_pending = await store.load(pending.id)
    assert loaded_done is not None
    assert loaded_pending is not None
    assert (loaded_done.result, loaded_done.has_result) == (None, True)
    assert (loaded_pending.result, loaded_pending.has_result) == (None, False)


async def test_load_of_an_unknown_id_is_none(open_store):
    store = await open_store()
    assert await store.load("nope") is None


async def test_a_later_put_of_the_same_task_wins(open_store):
    store = await open_store()
    task = make_task(1)
    store.put(task)
    await store.flush()
    task.state, task.progress, task.attempts = TaskState.RUNNING, 0.5, 1
    store.put(task)
    loaded = await store.load(task.id)
    assert loaded is not None
    assert (loaded.state, loaded.progress, loaded.attempts) == (
        TaskState.RUNNING,
        0.5,
        1,
    )


# -- batching -------------------------------------------------------------------


async def test_many_puts_are_written_by_one_flush(open_store):
    store = await open_store()
    tasks = [make_task(n) for n in range(500)]
    for task in tasks:
        store.put(task)
        store.put(task)  # a second change before the flush is the same row
    assert store.rows_written == 0
    await store.flush()
    assert store.rows_written == 500
    await store.flush()
    assert store.rows_written == 500
    assert len(await store.frame()) == 500


async def test_a_full_batch_is_written_without_waiting_for_the_interval(open_store):
    store = await open_store(flush_interval_s=3600, flush_batch=50)
    for n in range(50):
        store.put(make_task(n))
    await wait_until_async(lambda: store.rows_written == 50, what="a batch write")


async def test_changes_are_written_after_the_flush_interval(open_store):
    store = await open_store(flush_interval_s=0.05)
    store.put(make_task(1))
    await wait_until_async(lambda: store.rows_written == 1, what="a timed write")


async def test_close_writes_what_is_pending(open_store, tmp_path):
    path = tmp_path / "tasks.sqlite3"
    store = await open_store(path)
    store.put(make_task(1, TaskState.DONE))
    await store.close()
    await store.close()  # twice is harmless
    again = await open_store(path, manager_id="m-2")
    assert (await again.load("ocr-1")) == make_task(1, TaskState.DONE)


# -- frame ------------------------------------------------------------------------


async def test_frame_has_the_documented_columns_and_types(open_store):
    store = await open_store()
    failed = make_task(
        2,
        TaskState.ERROR,
        attempts=1,
        started_at=T0,
        errors=[ErrorRecord("ValueError", "bad page", created_at=T0)],
    )
    put_with_errors(store, finished_task())
    put_with_errors(store, failed)
    store.put(make_task(3))
    frame = await store.frame()

    assert tuple(frame.columns) == FRAME_COLUMNS
    assert list(frame["id"]) == ["ocr-1", "ocr-2", "ocr-3"]  # by creation time
    state = frame["state"].dtype
    assert isinstance(state, pd.CategoricalDtype)
    assert state.ordered
    assert list(state.categories) == [s.value for s in TaskState]
    assert list(frame["state"]) == ["DONE", "ERROR", "QUEUED"]
    for column in ("created_at", "started_at", "completed_at"):
        assert str(frame[column].dt.tz) == "UTC", column
    assert frame["created_at"][0] == pd.Timestamp(T0 + timedelta(seconds=1))
    assert frame["duration_s"][0] == pytest.approx(5.00025)
    assert pd.isna(frame["duration_s"][1])
    assert frame["result"][0] == {"text": "hello", "pages": [1, 2]}
    assert frame["args"][2] == {
        "path": "3.pdf",
        "pages": [1, 2],
        "opts": {"lang": None},
    }
    assert list(frame["error"][:2]) == ["OSError: disk full", "ValueError: bad page"]
    assert pd.isna(frame["error"][2])
    assert frame["worker"][0] == "testapp-w-1"
    assert frame["progress"].dtype == "float64"
    assert frame["attempts"].dtype == "int64"


async def test_frame_of_an_empty_store_has_the_columns(open_store):
    store = await open_store()
    frame = await store.frame()
    assert tuple(frame.columns) == FRAME_COLUMNS
    assert frame.empty


# -- files --------------------------------------------------------------------------


async def test_a_new_store_file_is_private_to_its_owner(open_store, tmp_path):
    path = tmp_path / "sub" / "tasks.sqlite3"
    store = await open_store(path)
    store.put(make_task(1))
    await store.flush()
    assert path.stat().st_mode & 0o777 == 0o600
    for sidecar in tmp_path.glob("sub/tasks.sqlite3-*"):
        assert sidecar.stat().st_mode & 0o077 == 0, sidecar


async def test_a_reopened_store_file_shows_earlier_tasks(open_store, tmp_path):
    path = tmp_path / "tasks.sqlite3"
    first = await open_store(path, manager_id="m-1")
    task = finished_task()
    put_with_errors(first, task)
    await first.close()

    second = await open_store(path, manager_id="m-2")
    assert await second.load(task.id) == task
    assert list((await second.frame())["id"]) == [task.id]


async def test_a_corrupt_file_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "tasks.sqlite3"
    garbage = b"this is not a database\x00\xff" * 200
    path.write_bytes(garbage)
    store = TaskStore(path)
    with pytest.raises(StoreError) as info:
        await store.open(manager_id="m-1", broker_kind="memory")
    await store.close()
    message = str(info.value)
    assert f"cannot open the task store {str(path)!r}" in message
    assert "move it aside" in message
    assert path.read_bytes() == garbage


async def test_a_store_of_another_schema_version_is_refused(open_store, tmp_path):
    path = tmp_path / "tasks.sqlite3"
    await (await open_store(path)).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.close()
    store = TaskStore(path)
    with pytest.raises(StoreError, match="has schema version 99") as info:
        await store.open(manager_id="m-2", broker_kind="memory")
    await store.close()
    assert "use another store path" in str(info.value)


# -- recovery -------------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def register_manager(
    path: Path, manager_id: str, *, pid: int, heartbeat_at: datetime, host: str = ""
) -> None:
    """Write the row a manager keeps in the store while it runs."""
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT OR REPLACE INTO managers VALUES (?, ?, ?, ?, ?, ?)",
            (
                manager_id,
                host or socket.gethostname(),
                pid,
                "memory",
                heartbeat_at.isoformat(),
                heartbeat_at.isoformat(),
            ),
        )
    db.close()


async def leave_tasks(open_store, path: Path, manager_id: str) -> list[Task]:
    """Store QUEUED, RUNNING and DONE tasks held by ``manager_id``, then stop it."""
    store = await open_store(path, manager_id=manager_id)
    tasks = [
        make_task(1, TaskState.QUEUED, max_attempts=3, attempts_left=3),
        make_task(2, TaskState.RUNNING, attempts=1, started_at=T0),
        make_task(3, TaskState.DONE, result=7, has_result=True),
    ]
    for task in tasks:
        store.put(task)
    await store.close()
    return tasks


GONE = {
    "dead-pid": lambda: {"pid": dead_pid(), "heartbeat_at": utcnow()},
    "stale-other-host": lambda: {
        "pid": 1,
        "heartbeat_at": utcnow() - timedelta(minutes=5),
        "host": "elsewhere.invalid",
    },
}


def by_id(orphans: list[Orphan]) -> dict[str, Orphan]:
    return {o.task.id: o for o in orphans}


@pytest.mark.parametrize("how", list(GONE))
async def test_tasks_of_a_gone_manager_are_lost_with_a_memory_broker(
    open_store, tmp_path, how
):
    path = tmp_path / "tasks.sqlite3"
    left = await leave_tasks(open_store, path, "m-old")
    register_manager(path, "m-old", **GONE[how]())

    store = await open_store(path, manager_id="m-new")
    orphans = by_id(await store.recover(durable_broker=False))

    assert sorted(orphans) == ["ocr-1", "ocr-2"]
    assert orphans["ocr-1"].decision == Lost("m-old", TaskState.QUEUED)
    assert orphans["ocr-2"].decision == Lost("m-old", TaskState.RUNNING)
    for task in left:  # a decision, not a change: the records are as stored
        assert await store.load(task.id) == task
    for orphan in orphans.values():
        assert orphan.task == await store.load(orphan.task.id)
    assert await store.recover(durable_broker=False) == []  # claimed once


async def test_a_lost_decision_applied_and_stored_ends_the_task_in_error(
    open_store, tmp_path
):
    path = tmp_path / "tasks.sqlite3"
    await leave_tasks(open_store, path, "m-old")
    store = await open_store(path, manager_id="m-new")

    for orphan in await store.recover(durable_broker=False):
        event = orphan.event()
        assert event is not None
        orphan.task.apply(event)
        put_with_errors(store, orphan.task)

    for task_id, was in [("ocr-1", "QUEUED"), ("ocr-2", "RUNNING")]:
        task = await store.load(task_id)
        assert task is not None
        assert task.state is TaskState.ERROR
        assert task.attempts_left == 0
        assert task.completed_at is not None
        lost = task.errors[-1]
        assert lost.name == "TaskLost"
        assert lost.created_at == task.completed_at
        assert f"while it was {was}" in lost.message
        assert f"tm.retry({task_id!r})" in lost.message
    done = await store.load("ocr-3")
    assert done is not None
    assert (done.state, done.result, done.errors) == (TaskState.DONE, 7, [])


def test_lost_event_puts_an_unfinished_task_in_error_with_no_attempts_left():
    task = make_task(1, TaskState.RUNNING, max_attempts=3, attempts_left=2, attempts=1)
    at = T0 + timedelta(hours=1)

    task.apply(lost_event(task, gone_state=TaskState.RUNNING, at=at))

    assert (task.state, task.attempts_left, task.attempts) == (TaskState.ERROR, 0, 1)
    assert task.completed_at == at
    assert [(e.name, e.created_at) for e in task.errors] == [("TaskLost", at)]
    assert "stopped while it was RUNNING" in task.errors[0].message


async def test_tasks_of_a_gone_manager_are_kept_with_a_durable_broker(
    open_store, tmp_path
):
    path = tmp_path / "tasks.sqlite3"
    left = await leave_tasks(open_store, path, "m-old")
    register_manager(path, "m-old", pid=dead_pid(), heartbeat_at=utcnow())

    store = await open_store(path, manager_id="m-new")
    orphans = by_id(await store.recover(durable_broker=True))

    assert sorted(orphans) == ["ocr-1", "ocr-2"]
    for orphan in orphans.values():
        assert orphan.decision == Adopt("m-old")
        assert orphan.event() is None
    for task in left:
        assert await store.load(task.id) == task


async def test_tasks_of_a_closed_manager_are_lost_with_a_memory_broker(
    open_store, tmp_path
):
    path = tmp_path / "tasks.sqlite3"
    await leave_tasks(open_store, path, "m-old")  # closed: no managers row is left

    store = await open_store(path, manager_id="m-new")
    orphans = by_id(await store.recover(durable_broker=False))
    assert sorted(orphans) == ["ocr-1", "ocr-2"]
    assert orphans["ocr-1"].decision == Lost("m-old", TaskState.QUEUED)


async def test_claimed_tasks_belong_to_the_manager_that_recovered_them(
    open_store, tmp_path
):
    path = tmp_path / "tasks.sqlite3"
    await leave_tasks(open_store, path, "m-old")
    first = await open_store(path, manager_id="m-new")
    assert len(await first.recover(durable_broker=True)) == 2

    # m-new lives (in this process): a third manager finds nothing to claim.
    third = await open_store(path, manager_id="m-third")
    assert await third.recover(durable_broker=True) == []


async def test_a_quiet_manager_alive_on_this_host_keeps_its_tasks(open_store, tmp_path):
    # On this machine the process table decides: a manager that wrote nothing for
    # minutes (one long task, say) is alive while its process is.
    path = tmp_path / "tasks.sqlite3"
    left = await leave_tasks(open_store, path, "m-quiet")
    register_manager(
        path, "m-quiet", pid=os.getpid(), heartbeat_at=utcnow() - timedelta(minutes=5)
    )

    store = await open_store(path, manager_id="m-new")
    assert await store.recover(durable_broker=False) == []
    for task in left:
        assert await store.load(task.id) == task


@pytest.mark.parametrize("host", ["", "elsewhere.invalid"])
async def test_tasks_of_a_live_manager_are_not_touched(open_store, tmp_path, host):
    path = tmp_path / "tasks.sqlite3"
    left = await leave_tasks(open_store, path, "m-live")
    register_manager(path, "m-live", pid=os.getpid(), heartbeat_at=utcnow(), host=host)

    store = await open_store(path, manager_id="m-new")
    assert await store.recover(durable_broker=False) == []
    for task in left:
        assert await store.load(task.id) == task


async def test_a_store_does_not_recover_its_own_tasks(open_store, tmp_path):
    store = await open_store(tmp_path / "tasks.sqlite3", manager_id="m-1")
    store.put(make_task(1, TaskState.RUNNING))
    await store.flush()
    assert await store.recover(durable_broker=False) == []
    task = await store.load("ocr-1")
    assert task is not None
    assert task.state is TaskState.RUNNING


# -- store strings ------------------------------------------------------------------


def test_the_sqlite_store_is_a_store_under_its_public_name(tmp_path):
    store = nb.TaskStore(tmp_path / "tasks.sqlite3")
    assert isinstance(store, Store)
    assert store.label == str(tmp_path / "tasks.sqlite3")
    assert repr(store) == f"<SqliteStore {tmp_path / 'tasks.sqlite3'} pending=0>"
    assert nb.TaskStore().label == "memory"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://analyst:s3cret@db.example:5432/tasks",
        "postgres://db/tasks",
        "mysql://analyst:s3cret@db/tasks",
        "file:///tmp/tasks.sqlite3",
    ],
)
def test_a_store_url_of_another_scheme_is_refused(app, tmp_path, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        nb.connect(app, store=url)
    message = str(info.value)
    assert f"unsupported store URL {url.split('://')[0]}://" in message
    assert "sqlite:///relative/path" in message
    assert "':memory:'" in message
    assert "s3cret" not in message
    assert list(tmp_path.iterdir()) == []  # no directory named after the scheme


def test_a_sqlite_url_with_a_host_is_refused(app):
    with pytest.raises(ConfigError, match="names no host"):
        nb.connect(app, store="sqlite://somehost/tasks.sqlite3")


@pytest.mark.parametrize(
    ("given", "where"),
    [
        ("sqlite:///rel/tasks.sqlite3", "rel/tasks.sqlite3"),
        ("{tmp}/plain.sqlite3", "{tmp}/plain.sqlite3"),
        ("sqlite:///{tmp}/abs.sqlite3", "{tmp}/abs.sqlite3"),
    ],
)
def test_sqlite_store_strings_name_a_file(
    app, make_manager, tmp_path, monkeypatch, given, where
):
    monkeypatch.chdir(tmp_path)
    tm = make_manager(app, store=given.format(tmp=tmp_path))
    expected = Path(where.format(tmp=tmp_path))
    assert tm.store.label == str(expected)
    assert (tmp_path / expected).is_file()


@pytest.mark.parametrize("given", [":memory:", "sqlite://", "sqlite:///:memory:"])
def test_memory_store_strings_write_no_file(
    app, make_manager, tmp_path, monkeypatch, given
):
    monkeypatch.chdir(tmp_path)
    tm = make_manager(app, store=given)
    assert tm.store.is_memory
    assert list(tmp_path.iterdir()) == []


def test_a_path_object_is_a_path_even_when_it_looks_like_a_url(
    app, make_manager, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    tm = make_manager(app, store=Path("odd:name.sqlite3"))
    assert (tmp_path / "odd:name.sqlite3").is_file()
    assert tm.store.label == "odd:name.sqlite3"


def test_a_store_of_another_type_is_refused(app):
    with pytest.raises(ConfigError, match=r"store must be a SQLite file path.*got 42"):
        nb.connect(app, store=42)
