"""WorkerRegistry: which workers are alive, per group, from their heartbeats.

Pools send a heartbeat every few seconds (on an exchange icij-worker peers ignore);
the registry keeps the last one of each worker and when it came. A worker that says
it is stopping leaves the table at once; one that goes silent is shown not alive
after three missed heartbeats.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Final

import pandas as pd

from icij_nb.model import WorkerStatus, utcnow

#: how often a pool says which of its workers are alive and what they run
WORKER_HEARTBEAT_S: Final = 5.0
#: a worker not heard from for this long is shown not alive (three missed beats)
ALIVE_WITHIN_S: Final = 3 * WORKER_HEARTBEAT_S

#: Columns of :meth:`WorkerRegistry.frame` (and ``tm.workers()``).
WORKER_COLUMNS: Final = (
    "worker",
    "group",
    "app",
    "host",
    "pid",
    "task",
    "last_seen",
    "alive",
)


def is_alive(last_seen: datetime, now: datetime) -> bool:
    """The one rule of liveness: heard from within :data:`ALIVE_WITHIN_S`."""
    return (now - last_seen).total_seconds() < ALIVE_WITHIN_S


class WorkerRegistry:
    """The last heartbeat of every worker an engine carries heartbeats for."""

    def __init__(self, heartbeats: Callable[[], AsyncIterator[list[WorkerStatus]]]):
        self._heartbeats = heartbeats
        self._heard: dict[str, tuple[WorkerStatus, datetime]] = {}

    async def watch(self) -> None:
        """Record heartbeats until cancelled."""
        async for statuses in self._heartbeats():
            now = utcnow()
            for status in statuses:
                if status.stopping:
                    self._heard.pop(status.worker_id, None)
                else:
                    self._heard[status.worker_id] = (status, now)

    def alive_by_group(self) -> dict[str | None, int] | None:
        """Live workers per group (no I/O); None when none was ever heard from."""
        heard = list(self._heard.values())
        if not heard:
            return None
        now, counts = utcnow(), Counter[str | None]()
        for status, seen in heard:
            if is_alive(seen, now):
                counts[status.group] += 1
        return dict(counts)

    def frame(self) -> pd.DataFrame:
        """One row per worker heard from, with :data:`WORKER_COLUMNS` (no I/O)."""
        now = utcnow()
        rows = [
            {
                "worker": s.worker_id,
                "group": s.group,
                "app": s.app,
                "host": s.host,
                "pid": s.pid,
                "task": s.task_id,
                "last_seen": seen,
                "alive": is_alive(seen, now),
            }
            for s, seen in list(self._heard.values())
        ]
        return pd.DataFrame(rows, columns=list(WORKER_COLUMNS))
