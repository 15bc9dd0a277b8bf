"""The task store: the durable record of every task a manager tracks.

- ``base.py``: :class:`Store`, the interface the manager depends on;
- ``sqlite.py``: :class:`SqliteStore`, the default implementation (a SQLite file
  beside the notebook, or ``":memory:"``), with batched writes off the loop;
- ``schema.py``: its tables, and how a Task maps to rows and back;
- ``recovery.py``: which managers are gone and what becomes of their unfinished
  tasks (decisions the manager applies; a store never changes a task's state);
- ``readers.py``: read-only access to a store file for the CLI.

The DataFrame's columns and dtypes live in :mod:`icij_nb.frames`, shared with the
board.
"""

from icij_nb.store.base import Store
from icij_nb.store.readers import read_frame, read_task
from icij_nb.store.recovery import Adopt, Decision, Lost, Orphan, lost_event
from icij_nb.store.sqlite import MEMORY, SqliteStore, default_store_path

#: The default store, under its public name since the first release: a SQLite
#: file, or ``":memory:"`` (``nb.TaskStore(path)`` builds a :class:`SqliteStore`).
TaskStore = SqliteStore

__all__ = [
    "MEMORY",
    "Adopt",
    "Decision",
    "Lost",
    "Orphan",
    "SqliteStore",
    "Store",
    "TaskStore",
    "default_store_path",
    "lost_event",
    "read_frame",
    "read_task",
]
