"""TaskStore: the manager's durable record of every task, in SQLite.

The manager owns the live :class:`~icij_nb.model.Task` records on the runtime loop and
marks them dirty with :meth:`TaskStore.put`; a flusher writes dirty rows in batches
(every ``flush_interval_s``, or sooner when many are waiting), on the store's own
thread, so the store is never the bottleneck and the loop never waits on disk.
``frame()`` flushes first, then reads: the DataFrame is derived from the store.

Tables: ``tasks`` (one row per task), ``errors`` (one row per failed attempt),
``managers`` (who holds which tasks; used on start to find tasks whose kernel died).

A store file is created readable by its owner only. ``":memory:"`` gives a store that
lives as long as the manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sqlite3
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pandas as pd

from icij_nb.errors import StoreError, UnknownTask
from icij_nb.model import ErrorRecord, StackFrame, Task, TaskState, utcnow
from icij_nb.threads import DaemonExecutor

logger = logging.getLogger(__name__)

MEMORY: Final = ":memory:"
SCHEMA_VERSION: Final = 1
#: how often a manager writes its heartbeat, even with nothing else to write
HEARTBEAT_S: Final = 10.0
#: a manager of another machine silent for this long is taken for dead
STALE_AFTER: Final = timedelta(seconds=60)

_SCHEMA = """
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

_UPSERT = """
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

_UPDATE = """
UPDATE tasks SET state=?, progress=?, max_attempts=?, attempts_left=?, attempts=?,
    started_at=?, completed_at=?, worker_id=?, result=?, has_result=?, manager_id=?
WHERE id=?
"""

#: rows built per loop turn when flushing, so a big flush does not hold the loop
_ROWS_PER_TURN: Final = 2_000

_ERROR_INSERT = """
INSERT OR IGNORE INTO errors
    (task_id, seq, name, message, cause, stacktrace, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""

#: Columns of :meth:`TaskStore.frame`, in order (documented in docs/tasks-table.md).
FRAME_COLUMNS: Final = (
    "id",
    "name",
    "group",
    "state",
    "progress",
    "attempts",
    "max_attempts",
    "worker",
    "created_at",
    "started_at",
    "completed_at",
    "duration_s",
    "args",
    "result",
    "error",
)

_FRAME_QUERY = """
SELECT t.id, t.name, t.grp, t.state, t.progress, t.attempts, t.max_attempts,
    t.worker_id, t.created_at, t.started_at, t.completed_at, t.args, t.result,
    t.has_result, e.name, e.message
FROM tasks t LEFT JOIN errors e ON e.task_id = t.id AND e.seq = (
    SELECT MAX(seq) FROM errors WHERE task_id = t.id)
ORDER BY t.created_at, t.rowid
"""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _result_json(task: Task) -> str:
    # Rows are built on the runtime loop, and most results are None: skip the
    # encoder for it (json.dumps(None) costs about a microsecond per row).
    return "null" if task.result is None else json.dumps(task.result)


def default_store_path(app_name: str) -> Path:
    """Where a store lives unless told: ``$ICIJ_NB_STORE_DIR`` or ``./.icij_nb/``.

    In Jupyter and under papermill the working directory is the notebook's folder,
    so the store sits beside the notebook, one file per app.
    """
    base = Path(os.environ.get("ICIJ_NB_STORE_DIR", ".icij_nb"))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in app_name)
    return base / f"{safe}.sqlite3"


class TaskStore:
    """SQLite-backed record of tasks, with batched writes off the event loop.

    Args:
        path: the database file, or ``":memory:"``.
        flush_interval_s: the longest a change waits before it is written.
        flush_batch: this many dirty tasks trigger a write at once.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = MEMORY,
        *,
        flush_interval_s: float = 0.2,
        flush_batch: int = 5_000,
    ) -> None:
        self.path = str(path)
        self._flush_interval_s = flush_interval_s
        self._flush_batch = flush_batch
        self._thread = DaemonExecutor(1, name="icij_nb-store")
        self._db: sqlite3.Connection | None = None
        self._dirty: dict[str, Task] = {}
        self._args_json: dict[str, str] = {}
        self._new_errors: list[tuple[str, int, ErrorRecord]] = []
        self._written: set[str] = set()
        self._wake: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        self.manager_id: str | None = None
        self.rows_written = 0

    def __repr__(self) -> str:
        where = "memory" if self.path == MEMORY else self.path
        return f"<TaskStore {where} pending={len(self._dirty)}>"

    @property
    def is_memory(self) -> bool:
        """True for a store that lives only as long as the process."""
        return self.path == MEMORY

    # -- life -------------------------------------------------------------------

    async def open(self, *, manager_id: str, broker_kind: str) -> None:
        """Open (creating if needed) the database and register this manager."""
        self.manager_id = manager_id
        await self._in_thread(self._open_db, manager_id, broker_kind)
        self._wake = asyncio.Event()
        self._flusher = asyncio.create_task(self._flush_loop(), name="icij_nb-flush")

    def _open_db(self, manager_id: str, broker_kind: str) -> None:
        if not self.is_memory:
            _create_private(Path(self.path))
        db = None
        try:
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            db.execute("PRAGMA busy_timeout = 5000")
            _check_version(db, self.path)
            if not self.is_memory:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(_SCHEMA)
            now = utcnow().isoformat()
            db.execute(
                "INSERT OR REPLACE INTO managers VALUES (?, ?, ?, ?, ?, ?)",
                (manager_id, socket.gethostname(), os.getpid(), broker_kind, now, now),
            )
        except (sqlite3.DatabaseError, StoreError) as exc:
            if db is not None:
                db.close()
            if isinstance(exc, StoreError):
                raise
            msg = (
                f"cannot open the task store {self.path!r}: {exc}. If another "
                "process holds it, close that manager; if the file is damaged, move "
                "it aside (nothing was overwritten) or pass store=<new path>."
            )
            raise StoreError(msg) from exc
        self._db = db

    async def close(self) -> None:
        """Write what is pending and close the database; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self.flush()
        await self._in_thread(self._close_db)
        self._thread.shutdown(wait=False)

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.execute("DELETE FROM managers WHERE id = ?", (self.manager_id,))
            self._db.close()
            self._db = None

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, fn, *args)
        except sqlite3.DatabaseError as exc:  # reads; writes say so themselves
            msg = (
                f"cannot read the task store {self.path!r}: {exc}. If the file is "
                "damaged, move it aside (nothing was overwritten) and pass "
                "store=<new path>."
            )
            raise StoreError(msg) from exc

    # -- writes -----------------------------------------------------------------

    def put(self, task: Task, *, args_json: str | None = None) -> None:
        """Mark ``task`` for writing; call on the loop after each change."""
        self._dirty[task.id] = task
        if args_json is not None:
            self._args_json[task.id] = args_json
        if len(self._dirty) >= self._flush_batch and self._wake is not None:
            self._wake.set()

    def put_error(self, task_id: str, seq: int, error: ErrorRecord) -> None:
        """Record the error of attempt ``seq`` (0-based) of a task."""
        self._new_errors.append((task_id, seq, error))

    async def _flush_loop(self) -> None:
        wake = self._wake
        if wake is None:  # pragma: no cover - set in open()
            return
        loop = asyncio.get_running_loop()
        last_beat = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self._flush_interval_s)
            wake.clear()
            try:
                if loop.time() - last_beat > HEARTBEAT_S:
                    # Managers on other machines are judged by this heartbeat.
                    await self._in_thread(self._write, [], [], [])
                    last_beat = loop.time()
                await self.flush()
            except StoreError:
                logger.exception("task store %s: write failed; will retry", self.path)

    async def flush(self) -> None:
        """Write every pending change now."""
        if not self._dirty and not self._new_errors:
            return
        dirty, self._dirty = self._dirty, {}
        args_json, self._args_json = self._args_json, {}
        errors, self._new_errors = self._new_errors, []
        rows: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        for count, task in enumerate(dirty.values(), 1):
            if task.id in self._written:
                updates.append(self._update_row(task))
            else:
                rows.append(self._row(task, args_json.get(task.id)))
            if count % _ROWS_PER_TURN == 0:
                await asyncio.sleep(0)  # a big flush must not hold the loop
        error_rows = [_error_row(tid, seq, e) for tid, seq, e in errors]
        try:
            await self._in_thread(self._write, rows, error_rows, updates)
            self._written.update(dirty)
        except BaseException:
            # Keep what failed (or was interrupted) for the next flush; newer
            # changes made meanwhile win.
            for task in dirty.values():
                self._dirty.setdefault(task.id, task)
            for tid, text in args_json.items():
                self._args_json.setdefault(tid, text)
            self._new_errors[:0] = errors
            raise

    def _row(self, t: Task, args_json: str | None) -> tuple[Any, ...]:
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
            self.manager_id,
        )

    def _update_row(self, t: Task) -> tuple[Any, ...]:
        # A task already written: args, name and created_at never change.
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
            self.manager_id,
            t.id,
        )

    def _write(
        self,
        rows: list[tuple[Any, ...]],
        error_rows: list[tuple[Any, ...]],
        updates: list[tuple[Any, ...]],
    ) -> None:
        db = self._require_db()
        try:
            with db:
                db.execute("BEGIN")
                db.executemany(_UPSERT, rows)
                db.executemany(_UPDATE, updates)
                db.executemany(_ERROR_INSERT, error_rows)
                db.execute(
                    "UPDATE managers SET heartbeat_at = ? WHERE id = ?",
                    (utcnow().isoformat(), self.manager_id),
                )
        except sqlite3.DatabaseError as exc:
            msg = f"cannot write to the task store {self.path!r}: {exc}"
            raise StoreError(msg) from exc
        self.rows_written += len(rows)

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            msg = f"the task store {self.path!r} is closed"
            raise StoreError(msg)
        return self._db

    # -- reads ------------------------------------------------------------------

    async def load(self, task_id: str) -> Task | None:
        """The stored task with that id, with its errors, or None."""
        await self.flush()
        result: Task | None = await self._in_thread(self._load, task_id)
        return result

    def _load(self, task_id: str) -> Task | None:
        return _load_task(self._require_db(), task_id)

    async def frame(self) -> pd.DataFrame:
        """All stored tasks as a DataFrame with :data:`FRAME_COLUMNS`."""
        await self.flush()
        rows: list[tuple[Any, ...]] = await self._in_thread(self._frame_rows)
        return build_frame(rows)

    def _frame_rows(self) -> list[tuple[Any, ...]]:
        return self._require_db().execute(_FRAME_QUERY).fetchall()

    async def counts(self) -> dict[tuple[str | None, str], int]:
        """How many stored tasks are in each (group, state)."""
        await self.flush()
        rows = await self._in_thread(
            lambda: (
                self._require_db()
                .execute("SELECT grp, state, COUNT(*) FROM tasks GROUP BY grp, state")
                .fetchall()
            )
        )
        return {(g, s): n for g, s, n in rows}

    # -- recovery ---------------------------------------------------------------

    async def recover(self, *, durable_broker: bool) -> list[Task]:
        """Settle unfinished tasks left by managers that are gone.

        With a broker that keeps tasks (RabbitMQ), their tasks are adopted: they stay
        QUEUED or RUNNING and this manager applies their events. With the memory
        broker their queue died with them: they end in ERROR with a ``TaskLost``
        record saying what happened, and can be retried.

        Returns:
            The tasks that changed hands or state, as now stored.
        """
        changed: list[Task] = await self._in_thread(self._recover, durable_broker)
        return changed

    def _recover(self, durable_broker: bool) -> list[Task]:
        db = self._require_db()
        gone = _gone_managers(db, self.manager_id)
        if not gone:
            return []
        marks = ",".join("?" * len(gone))
        ids = [
            r[0]
            for r in db.execute(
                f"SELECT id FROM tasks WHERE state IN ('CREATED','QUEUED','RUNNING') "
                f"AND (manager_id IN ({marks}) OR manager_id IS NULL)",
                list(gone),
            )
        ]
        changed = []
        with db:
            db.execute("BEGIN")
            for task_id in ids:
                task = self._load(task_id)
                if task is None:  # pragma: no cover - selected just above
                    continue
                if not durable_broker:
                    _mark_lost(task, gone_state=task.state)
                    err = task.errors[-1]
                    db.execute(
                        _ERROR_INSERT, _error_row(task.id, len(task.errors) - 1, err)
                    )
                db.execute(_UPSERT, self._row(task, json.dumps(task.args)))
                changed.append(task)
            db.execute(
                f"DELETE FROM managers WHERE id IN ({marks})",
                list(gone),
            )
        if changed:
            logger.warning(
                "task store %s: %d unfinished task(s) of stopped managers %s",
                self.path,
                len(changed),
                "adopted" if durable_broker else "marked lost (ERROR, retryable)",
            )
        return changed


def _load_task(db: sqlite3.Connection, task_id: str) -> Task | None:
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


def _read_only(path: str | os.PathLike[str]) -> sqlite3.Connection:
    try:
        return sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True, timeout=5)
    except sqlite3.DatabaseError as exc:
        msg = f"cannot read the task store {os.fspath(path)!r}: {exc}"
        raise StoreError(msg) from exc


def read_frame(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The tasks of a store file as a DataFrame, read-only (for the CLI)."""
    db = _read_only(path)
    try:
        return build_frame(db.execute(_FRAME_QUERY).fetchall())
    except sqlite3.DatabaseError as exc:
        msg = f"cannot read the task store {os.fspath(path)!r}: {exc}"
        raise StoreError(msg) from exc
    finally:
        db.close()


def read_task(path: str | os.PathLike[str], task_id: str) -> Task:
    """One task of a store file, read-only.

    Raises:
        UnknownTask: no task with that id in the store.
    """
    db = _read_only(path)
    try:
        task = _load_task(db, task_id)
    finally:
        db.close()
    if task is None:
        msg = f"no task with id {task_id!r} in {os.fspath(path)!r}"
        raise UnknownTask(msg, task_id=task_id)
    return task


def _gone_managers(db: sqlite3.Connection, me: str | None) -> set[str]:
    host = socket.gethostname()
    now = utcnow()
    gone = set()
    for manager_id, m_host, pid, heartbeat in db.execute(
        "SELECT id, host, pid, heartbeat_at FROM managers"
    ):
        if manager_id == me:
            continue
        if m_host == host:
            # On this machine the process table is the truth: a manager busy for
            # minutes without writing is alive, a killed kernel is not.
            if not _pid_alive(pid):
                gone.add(manager_id)
        elif now - datetime.fromisoformat(heartbeat) > STALE_AFTER:
            gone.add(manager_id)
    # Rows of managers that left no trace at all (closed without cleanup).
    for (manager_id,) in db.execute(
        "SELECT DISTINCT manager_id FROM tasks WHERE manager_id IS NOT NULL AND "
        "state IN ('CREATED','QUEUED','RUNNING') AND manager_id NOT IN "
        "(SELECT id FROM managers)"
    ):
        if manager_id != me:
            gone.add(manager_id)
    return gone


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mark_lost(task: Task, *, gone_state: TaskState) -> None:
    now = utcnow()
    record = ErrorRecord(
        name="TaskLost",
        message=(
            f"the kernel that held this task stopped while it was {gone_state.value}; "
            f"its in-process queue went with it. Retry it with tm.retry({task.id!r})."
        ),
        created_at=now,
    )
    task.errors.append(record)
    task.state, task.completed_at, task.attempts_left = TaskState.ERROR, now, 0


def _create_private(path: Path) -> None:
    """Create the store file readable by its owner only (0600), if it is new."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        msg = f"cannot create the task store {str(path)!r}: {exc}"
        raise StoreError(msg) from exc
    os.close(fd)


def _check_version(db: sqlite3.Connection, path: str) -> None:
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    if not tables:  # a new store
        db.executescript(_SCHEMA)
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


def _error_row(task_id: str, seq: int, e: ErrorRecord) -> tuple[Any, ...]:
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


_STATE_ORDER: Final = [s.value for s in TaskState]


def build_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """Turn rows of the frame query into the documented DataFrame."""
    raw = pd.DataFrame.from_records(
        rows,
        columns=[
            "id", "name", "group", "state", "progress", "attempts", "max_attempts",
            "worker", "created_at", "started_at", "completed_at", "args", "result",
            "has_result", "error_name", "error_message",
        ],
    )  # fmt: skip
    frame = raw[["id", "name", "group"]].copy()
    frame["state"] = pd.Categorical(raw["state"], categories=_STATE_ORDER, ordered=True)
    frame["progress"] = raw["progress"].astype("float64")
    frame["attempts"] = raw["attempts"].astype("int64")
    frame["max_attempts"] = raw["max_attempts"].astype("int64")
    frame["worker"] = raw["worker"]
    for column in ("created_at", "started_at", "completed_at"):
        frame[column] = pd.to_datetime(raw[column], utc=True, format="ISO8601")
    frame["duration_s"] = (
        frame["completed_at"] - frame["started_at"]
    ).dt.total_seconds()
    frame["args"] = [json.loads(a) for a in raw["args"]]
    frame["result"] = [
        json.loads(r) if h else None
        for r, h in zip(raw["result"], raw["has_result"], strict=True)
    ]
    frame["error"] = [
        f"{n}: {m}" if isinstance(n, str) else None
        for n, m in zip(raw["error_name"], raw["error_message"], strict=True)
    ]
    return frame.reset_index(drop=True)
