"""Read-only access to a store file, for the ``icij-nb tasks`` command.

The CLI reads a store that a running manager may be writing: it opens the file
read-only (SQLite's ``mode=ro``), never creates one, and never registers itself as
a manager, so it cannot take part in recovery.
"""

from __future__ import annotations

import os
import sqlite3

import pandas as pd

from icij_nb.errors import StoreError, UnknownTask
from icij_nb.frames import frame_from_rows
from icij_nb.model import Task
from icij_nb.store import schema


def open_read_only(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection to an existing store file.

    Raises:
        StoreError: the file cannot be opened.
    """
    try:
        return sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True, timeout=5)
    except sqlite3.DatabaseError as exc:
        msg = f"cannot read the task store {os.fspath(path)!r}: {exc}"
        raise StoreError(msg) from exc


def read_frame(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The tasks of a store file as a DataFrame, read-only (for the CLI)."""
    db = open_read_only(path)
    try:
        return frame_from_rows(db.execute(schema.FRAME_QUERY).fetchall())
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
    db = open_read_only(path)
    try:
        task = schema.load_task(db, task_id)
    finally:
        db.close()
    if task is None:
        msg = f"no task with id {task_id!r} in {os.fspath(path)!r}"
        raise UnknownTask(msg, task_id=task_id)
    return task
