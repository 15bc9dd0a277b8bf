"""The SQLite task store's schema, and how a Task maps to its rows and back.

Tables: ``meta`` (the schema version), ``tasks`` (one row per task), ``errors`` (one
row per failed attempt, keyed by task and attempt), ``managers`` (who holds which
tasks, with a heartbeat; recovery reads it to find tasks whose kernel died).

Times are ISO 8601 text with their UTC offset; args, results and stack traces are
JSON text. The writer (``sqlite.py``) and the read-only readers (``readers.py``)
share these statements and converters, so both read a row the same way.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from icij_nb.errors import StoreError
from icij_nb.model import ErrorRecord, StackFrame, Task, TaskState

SCHEMA_VERSION: Final = 1

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    grp TEXT,
    state TEXT NOT NULL,
    progress REAL NOT NULL,
    args TEXT NOT NULL,
    max_attempts INTEGER NOT NULL,
    attempts_left INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    completed_at TEXT,
    worker_id TEXT,
    result TEXT,
    has_result INTEGER NOT NULL,
    manager_id TEXT
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state);
CREATE TABLE IF NOT EXISTS errors (
    task_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    message TEXT NOT NULL,
    cause TEXT,
    stacktrace TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
);
CREATE TABLE IF NOT EXISTS managers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    broker TEXT NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
);
"""

UPSERT: Final = """
INSERT INTO tasks (id, name, grp, state, progress, args, max_attempts, attempts_left,
    attempts, created_at, started_at, completed_at, worker_id, result, has_result,
    manager_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET state=excluded.state, progress=excluded.progress,
    max_attempts=excluded.max_attempts, attempts_left=excluded.attempts_left,
    attempts=excluded.attempts, started_at=excluded.started_at,
    completed_at=excluded.completed_at, worker_id=excluded.worker_id,
    result=excluded.result, has_result=excluded.has_result,
    manager_id=excluded.manager_id
"""

UPDATE: Final = """
UPDATE tasks SET state=?, progress=?, max_attempts=?, attempts_left=?, attempts=?,
    started_at=?, completed_at=?, worker_id=?, result=?, has_result=?, manager_id=?
WHERE id=?
"""

ERROR_INSERT: Final = """
INSERT OR IGNORE INTO errors
    (task_id, seq, name, message, cause, stacktrace, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""

#: rows in the layout of :data:`icij_nb.frames.ROW_FIELDS`, oldest task first
FRAME_QUERY: Final = """
SELECT t.id, t.name, t.grp, t.state, t.progress, t.attempts, t.max_attempts,
    t.worker_id, t.created_at, t.started_at, t.completed_at, t.args, t.result,
    t.has_result, e.name, e.message
FROM tasks t LEFT JOIN errors e ON e.task_id = t.id AND e.seq = (
    SELECT MAX(seq) FROM errors WHERE task_id = t.id)
ORDER BY t.created_at, t.rowid
"""

UNFINISHED: Final = "('CREATED','QUEUED','RUNNING')"


def check_version(db: sqlite3.Connection, path: str) -> None:
    """Create the schema in a new database; refuse one of another kind or version.

    Raises:
        StoreError: the database is not a task store, or of another version.
    """
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    if not tables:  # a new store
        db.executescript(SCHEMA)
        db.execute(
            "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        return
    row = (
        db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if "meta" in tables
        else None
    )
    if row is None:
        msg = (
            f"{path!r} is a SQLite database but not an icij_nb task store (no "
            "schema version); nothing was written to it. Pass another store path."
        )
        raise StoreError(msg)
    if int(row[0]) != SCHEMA_VERSION:
        msg = (
            f"the task store {path!r} has schema version {row[0]}, this icij_nb "
            f"reads version {SCHEMA_VERSION}; use another store path"
        )
        raise StoreError(msg)


# -- Task -> rows ---------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _result_json(task: Task) -> str:
    # Rows are built on the runtime loop, and most results are None: skip the
    # encoder for it (json.dumps(None) costs about a microsecond per row).
    return "null" if task.result is None else json.dumps(task.result)


def task_row(t: Task, args_json: str | None, manager_id: str | None) -> tuple[Any, ...]:
    """The parameters of :data:`UPSERT` for a task held by ``manager_id``."""
    return (
        t.id,
        t.name,
        t.group,
        t.state.value,
        t.progress,
        args_json if args_json is not None else json.dumps(t.args),
        t.max_attempts,
        t.attempts_left,
        t.attempts,
        t.created_at.isoformat(),
        _iso(t.started_at),
        _iso(t.completed_at),
        t.worker_id,
        _result_json(t) if t.has_result else None,
        int(t.has_result),
        manager_id,
    )


def update_row(t: Task, manager_id: str | None) -> tuple[Any, ...]:
    """The parameters of :data:`UPDATE`, for a task already written.

    A written task's args, name and created_at never change.
    """
    return (
        t.state.value,
        t.progress,
        t.max_attempts,
        t.attempts_left,
        t.attempts,
        _iso(t.started_at),
        _iso(t.completed_at),
        t.worker_id,
        _result_json(t) if t.has_result else None,
        int(t.has_result),
        manager_id,
        t.id,
    )


def error_row(task_id: str, seq: int, e: ErrorRecord) -> tuple[Any, ...]:
    """The parameters of :data:`ERROR_INSERT` for attempt ``seq`` (0-based)."""
    frames = [
        {"name": f.name, "file": f.file, "lineno": f.lineno} for f in e.stacktrace
    ]
    return (
        task_id,
        seq,
        e.name,
        e.message,
        e.cause,
        json.dumps(frames),
        e.created_at.isoformat(),
    )


# -- rows -> Task ---------------------------------------------------------------------


def load_task(db: sqlite3.Connection, task_id: str) -> Task | None:
    """The stored task with that id, with its errors, or None."""
    row = db.execute(
        "SELECT id, name, grp, state, progress, args, max_attempts, "
        "attempts_left, attempts, created_at, started_at, completed_at, "
        "worker_id, result, has_result FROM tasks WHERE id = ?",
        (task_id,),
    ).fetchone()
    if row is None:
        return None
    errors = [
        _error_from_row(r)
        for r in db.execute(
            "SELECT name, message, cause, stacktrace, created_at FROM errors "
            "WHERE task_id = ? ORDER BY seq",
            (task_id,),
        )
    ]
    return _task_from_row(row, errors)


def _parse_dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _error_from_row(row: Iterable[Any]) -> ErrorRecord:
    name, message, cause, stacktrace, created_at = row
    frames = tuple(StackFrame(**f) for f in json.loads(stacktrace))
    return ErrorRecord(
        name=name,
        message=message,
        cause=cause,
        stacktrace=frames,
        created_at=datetime.fromisoformat(created_at),
    )


def _task_from_row(row: tuple[Any, ...], errors: list[ErrorRecord]) -> Task:
    (tid, name, grp, state, progress, args, max_attempts, attempts_left, attempts,
     created_at, started_at, completed_at, worker_id, result,
     has_result) = row  # fmt: skip
    return Task(
        id=tid,
        name=name,
        group=grp,
        args=json.loads(args),
        state=TaskState(state),
        progress=progress,
        max_attempts=max_attempts,
        attempts_left=attempts_left,
        attempts=attempts,
        created_at=datetime.fromisoformat(created_at),
        started_at=_parse_dt(started_at),
        completed_at=_parse_dt(completed_at),
        worker_id=worker_id,
        result=json.loads(result) if has_result else None,
        has_result=bool(has_result),
        errors=errors,
    )
