"""SqliteStore: the task store in a SQLite file (the default) or in memory.

The manager marks changed tasks with :meth:`SqliteStore.put`; a flusher writes the
dirty rows in batches (every ``flush_interval_s``, or sooner when many are waiting),
on the store's own thread, so the store is never the bottleneck and the loop never
waits on disk. ``frame()`` and ``load()`` flush first, then read: the DataFrame is
derived from the store.

A store file is created readable by its owner only (0600), in WAL mode; a database
of another kind or schema version is refused untouched (``schema.py`` has the
tables). ``":memory:"`` gives a store that lives as long as the manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import pandas as pd

from icij_nb.errors import StoreError
from icij_nb.frames import frame_from_rows
from icij_nb.model import ErrorRecord, Task, utcnow
from icij_nb.store import schema
from icij_nb.store.recovery import (
    MANAGER_HEARTBEAT_S,
    ManagerRow,
    Orphan,
    decide,
    gone_managers,
)
from icij_nb.threads import DaemonExecutor

logger = logging.getLogger(__name__)

MEMORY: Final = ":memory:"
#: rows built per loop turn when flushing, so a big flush does not hold the loop
_ROWS_PER_TURN: Final = 2_000


def default_store_path(app_name: str) -> Path:
    """Where a store lives unless told: ``$ICIJ_NB_STORE_DIR`` or ``./.icij_nb/``.

    In Jupyter and under papermill the working directory is the notebook's folder,
    so the store sits beside the notebook, one file per app.
    """
    base = Path(os.environ.get("ICIJ_NB_STORE_DIR", ".icij_nb"))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in app_name)
    return base / f"{safe}.sqlite3"


class SqliteStore:
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
        #: task rows inserted so far (updates of written rows not counted)
        self.rows_written = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label} pending={len(self._dirty)}>"

    @property
    def label(self) -> str:
        """``memory``, or the file's path."""
        return "memory" if self.is_memory else self.path

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
            schema.check_version(db, self.path)
            if not self.is_memory:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(schema.SCHEMA)
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

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            msg = f"the task store {self.path!r} is closed"
            raise StoreError(msg)
        return self._db

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
                if loop.time() - last_beat > MANAGER_HEARTBEAT_S:
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
        me = self.manager_id
        for count, task in enumerate(dirty.values(), 1):
            if task.id in self._written:
                updates.append(schema.update_row(task, me))
            else:
                rows.append(schema.task_row(task, args_json.get(task.id), me))
            if count % _ROWS_PER_TURN == 0:
                await asyncio.sleep(0)  # a big flush must not hold the loop
        error_rows = [schema.error_row(tid, seq, e) for tid, seq, e in errors]
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
                db.executemany(schema.UPSERT, rows)
                db.executemany(schema.UPDATE, updates)
                db.executemany(schema.ERROR_INSERT, error_rows)
                db.execute(
                    "UPDATE managers SET heartbeat_at = ? WHERE id = ?",
                    (utcnow().isoformat(), self.manager_id),
                )
        except sqlite3.DatabaseError as exc:
            msg = f"cannot write to the task store {self.path!r}: {exc}"
            raise StoreError(msg) from exc
        self.rows_written += len(rows)

    # -- reads ------------------------------------------------------------------

    async def load(self, task_id: str) -> Task | None:
        """The stored task with that id, with its errors, or None."""
        await self.flush()
        result: Task | None = await self._in_thread(self._load, task_id)
        return result

    def _load(self, task_id: str) -> Task | None:
        return schema.load_task(self._require_db(), task_id)

    async def frame(self) -> pd.DataFrame:
        """All stored tasks as a DataFrame with :data:`~icij_nb.FRAME_COLUMNS`."""
        await self.flush()
        rows: list[tuple[Any, ...]] = await self._in_thread(self._frame_rows)
        return frame_from_rows(rows)

    def _frame_rows(self) -> list[tuple[Any, ...]]:
        return self._require_db().execute(schema.FRAME_QUERY).fetchall()

    # -- recovery ---------------------------------------------------------------

    async def recover(self, *, durable_broker: bool) -> list[Orphan]:
        """Claim the unfinished tasks of managers that are gone, and say what to do.

        One transaction makes this manager the holder of every CREATED, QUEUED or
        RUNNING task of a gone manager (or of none) and forgets those managers.
        Nothing else of a task is written: states, progress and errors are as
        stored, for the manager to settle (see ``recovery.py``).

        Returns:
            One :class:`~icij_nb.store.recovery.Orphan` per claimed task.
        """
        orphans: list[Orphan] = await self._in_thread(self._claim, durable_broker)
        if orphans:
            logger.warning(
                "task store %s: %d unfinished task(s) of stopped managers claimed, "
                "to be %s",
                self.path,
                len(orphans),
                "adopted" if durable_broker else "marked lost (ERROR, retryable)",
            )
        return orphans

    def _claim(self, durable_broker: bool) -> list[Orphan]:
        db = self._require_db()
        with db:
            # IMMEDIATE: take the write lock before reading, so two managers
            # opening the file at once cannot both claim the same tasks.
            db.execute("BEGIN IMMEDIATE")
            gone = self._gone(db)
            if not gone:
                return []
            marks = ",".join("?" * len(gone))
            held = db.execute(
                f"SELECT id, manager_id FROM tasks WHERE state IN {schema.UNFINISHED} "
                f"AND (manager_id IN ({marks}) OR manager_id IS NULL)",
                list(gone),
            ).fetchall()
            orphans = []
            for task_id, holder in held:
                task = schema.load_task(db, task_id)
                if task is None:  # pragma: no cover - selected just above
                    continue
                decision = decide(task, holder, durable_broker=durable_broker)
                orphans.append(Orphan(task, decision))
            db.executemany(
                "UPDATE tasks SET manager_id = ? WHERE id = ?",
                [(self.manager_id, task_id) for task_id, _ in held],
            )
            db.execute(f"DELETE FROM managers WHERE id IN ({marks})", list(gone))
        return orphans

    def _gone(self, db: sqlite3.Connection) -> set[str]:
        registered = [
            ManagerRow(mid, host, pid, datetime.fromisoformat(beat))
            for mid, host, pid, beat in db.execute(
                "SELECT id, host, pid, heartbeat_at FROM managers"
            )
        ]
        unregistered = [
            mid
            for (mid,) in db.execute(
                "SELECT DISTINCT manager_id FROM tasks WHERE manager_id IS NOT NULL "
                f"AND state IN {schema.UNFINISHED} AND manager_id NOT IN "
                "(SELECT id FROM managers)"
            )
        ]
        return gone_managers(
            registered,
            unregistered,
            me=self.manager_id,
            host=socket.gethostname(),
            now=utcnow(),
        )


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
