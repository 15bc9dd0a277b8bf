"""WorkerRegistry: which workers are alive, per group, from their heartbeats.

Pools send a heartbeat every few seconds (on an exchange icij-worker peers ignore);
the registry keeps the last one of each worker and when it came. A worker that says
it is stopping leaves the table at once; one that goes silent is shown not alive
after three missed heartbeats.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import pandas as pd

from icij_nb.brokers.base import Broker
from icij_nb.model import WorkerStatus, utcnow
from icij_nb.pools import HEARTBEAT_S

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


class WorkerRegistry:
    """The last heartbeat of every worker a broker carries heartbeats for."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.heard: dict[str, tuple[WorkerStatus, datetime]] = {}

    async def watch(self) -> None:
        """Record heartbeats until cancelled."""
        async for statuses in self._broker.heartbeats():
            now = utcnow()
            for status in statuses:
                if status.stopping:
                    self.heard.pop(status.worker_id, None)
                else:
                    self.heard[status.worker_id] = (status, now)

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
                "alive": (now - seen).total_seconds() < 3 * HEARTBEAT_S,
            }
            for s, seen in list(self.heard.values())
        ]
        return pd.DataFrame(rows, columns=list(WORKER_COLUMNS))
