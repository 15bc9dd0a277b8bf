"""PendingChanges: the task changes a board has received but not applied yet.

The manager calls a board's listener on the runtime thread with snapshots of the
tasks that changed. Applying each at once would render once per event, so the
listener only files them here (the latest snapshot of a task replaces the one
before), and a timer on the runtime loop asks the board to refresh at most once
every ``refresh_s``. A burst (a map of 100,000 tasks) is applied over several
refreshes of :data:`CHANGES_PER_REFRESH` each, oldest first, so the runtime loop
is never held for long.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Final

from icij_nb.model import Task

logger = logging.getLogger(__name__)

#: task changes a timed refresh applies at most
CHANGES_PER_REFRESH: Final = 2_000


class PendingChanges:
    """Filed task changes and the timer that has the board apply them.

    Changes filed before :meth:`start` (while the board loads its first frame)
    wait without a timer; the board applies them once loaded.

    Args:
        refresh_s: the least time between two timed refreshes.
        refresh: the board's refresh, called on the runtime thread with the most
            changes it may apply.
    """

    def __init__(self, refresh_s: float, refresh: Callable[[int], None]) -> None:
        self._refresh_s = refresh_s
        self._refresh = refresh
        self._tasks: dict[str, Task] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_refresh = float("-inf")
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Schedule refreshes on ``loop`` from now on (the first load is done)."""
        self._loop = loop

    def add(self, tasks: list[Task]) -> None:
        """File changed tasks and schedule a refresh if none is due."""
        if self._closed:
            return
        pending = self._tasks
        for task in tasks:
            pending[task.id] = task
        loop = self._loop
        if self._timer is None and loop is not None:
            delay = max(0.0, self._last_refresh + self._refresh_s - loop.time())
            self._timer = loop.call_later(delay, self._on_timer)

    def take(self, limit: int | None = None) -> list[Task]:
        """Remove and return the filed changes, the oldest ``limit`` of them."""
        pending = self._tasks
        if limit is None or len(pending) <= limit:
            self._tasks = {}
            return list(pending.values())
        return [pending.pop(k) for k in list(itertools.islice(pending, limit))]

    def refreshed(self, now: float) -> None:
        """Note a refresh at loop time ``now``: the next timed one waits refresh_s."""
        self._last_refresh = now
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Cancel the timer, drop the filed changes and ignore later ones."""
        self._closed = True
        self._tasks = {}
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        try:
            self._refresh(CHANGES_PER_REFRESH)
        except Exception:
            logger.exception("task board refresh failed")
        if self._tasks and self._loop is not None:  # close() empties it
            self._timer = self._loop.call_later(0, self._on_timer)  # the rest
