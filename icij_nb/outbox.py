"""Outbox: tasks submitted while no broker node answers, published once one does.

With a durable engine (RabbitMQ), a submit whose publish cannot go out (the
connection is down, or the publish is not confirmed within
:data:`PUBLISH_TIMEOUT_S`: a cluster that lost its majority, a frozen node) does not
fail: :meth:`Outbox.hold` writes the tasks to the store, marked as waiting
(``Store.outbox_add``), before ``submit`` returns their handles. They stay CREATED
in the ledger, marked "waiting for the broker" (``Ledger.hold``: the board and
``tm.waiting_for_broker`` show it), and :meth:`Outbox.run` publishes them, in
order, once the broker answers, then records them QUEUED and unmarks them. A
manager that dies meanwhile leaves them marked in the store: the next manager that
opens it claims them (``Store.recover``) and :meth:`Outbox.reload` queues them
again.

Bounds: at most :data:`OUTBOX_LIMIT` tasks wait (``$ICIJ_NB_OUTBOX_LIMIT``); past
it a submit raises :class:`~icij_nb.errors.BrokerUnavailable` naming the tasks not
recorded. A task that waited :data:`OUTBOX_TIMEOUT_S` (``$ICIJ_NB_OUTBOX_TIMEOUT_S``)
ends in ERROR with a ``BrokerUnavailable`` record; ``tm.retry(task_id)`` queues it
again. A task published just as the connection dropped may be published twice: the
ledger keeps one result (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Sequence
from typing import Final

from icij_nb.engine import Engine
from icij_nb.errors import BrokerError, BrokerUnavailable, TaskQueueFull
from icij_nb.ledger import Ledger
from icij_nb.model import Task, TaskState
from icij_nb.store import Store
from icij_nb.submission import Prepared

logger = logging.getLogger(__name__)

#: tasks that may wait for the broker at once (``$ICIJ_NB_OUTBOX_LIMIT`` when a
#: manager starts, else this)
OUTBOX_LIMIT: Final = 100_000
#: the longest a task waits for the broker before it ends in ERROR
#: (``$ICIJ_NB_OUTBOX_TIMEOUT_S`` when a manager starts, else this)
OUTBOX_TIMEOUT_S: Final = 3600.0
#: a publish not confirmed within this is taken as "the broker does not answer"
PUBLISH_TIMEOUT_S: Final = 5.0
#: tasks published per attempt, each attempt bounded by PUBLISH_TIMEOUT_S
PUBLISH_SLICE: Final = 1_000
#: the pause between two attempts while the broker does not answer
RETRY_INTERVAL_S: Final = 1.0


def broker_down(exc: BaseException) -> bool:
    """True for the errors that send a submit to the outbox."""
    return isinstance(exc, BrokerUnavailable | TimeoutError)


class Outbox:
    """The tasks of one manager that wait for the broker.

    Args:
        engine: publishes them (its ``submit``).
        store: keeps them marked until published.
        ledger: their records (CREATED while they wait).
        limit: how many may wait at once (default: ``$ICIJ_NB_OUTBOX_LIMIT``, else
            :data:`OUTBOX_LIMIT`).
        timeout_s: how long one may wait (default: ``$ICIJ_NB_OUTBOX_TIMEOUT_S``,
            else :data:`OUTBOX_TIMEOUT_S`).
    """

    def __init__(
        self,
        engine: Engine,
        store: Store,
        ledger: Ledger,
        *,
        limit: int | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self._engine, self._store, self._ledger = engine, store, ledger
        env = os.environ
        if limit is None:
            limit = int(env.get("ICIJ_NB_OUTBOX_LIMIT", OUTBOX_LIMIT))
        if timeout_s is None:
            timeout_s = float(env.get("ICIJ_NB_OUTBOX_TIMEOUT_S", OUTBOX_TIMEOUT_S))
        self.limit, self.timeout_s = limit, timeout_s
        #: task id -> (task, loop time it was recorded), in submission order
        self._waiting: dict[str, tuple[Task, float]] = {}
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._waiting)

    async def hold(self, prepared: Sequence[Prepared], cause: BaseException) -> None:
        """Record tasks in the store as waiting for the broker, durably.

        Raises:
            BrokerUnavailable: the outbox is full; the tasks were not recorded.
        """
        if len(self._waiting) + len(prepared) > self.limit:
            ids = tuple(t.id for t, _ in prepared)
            msg = (
                f"the broker does not answer ({cause}) and {len(self._waiting)} "
                f"task(s) already wait for it, the outbox's bound ({self.limit}, "
                f"$ICIJ_NB_OUTBOX_LIMIT): {len(ids)} task(s) were not recorded. "
                "Submit them again once the broker answers."
            )
            raise BrokerUnavailable(msg, not_queued=ids) from cause
        if not self._waiting:
            logger.warning(
                "the broker does not answer (%s); tasks wait in the outbox and are "
                "published once it does",
                cause,
            )
        await self._store.outbox_add(prepared)
        now = asyncio.get_running_loop().time()
        for task, _ in prepared:
            self._waiting[task.id] = (task, now)
        self._ledger.hold(t for t, _ in prepared)
        self._wake.set()

    async def reload(self) -> None:
        """Take over the marked tasks this manager claimed from a gone one."""
        now = asyncio.get_running_loop().time()
        for stored in await self._store.outbox():
            task = self._ledger.get(stored.id)
            if task is not None and task.state is TaskState.CREATED:
                self._waiting[task.id] = (task, now)
        self._ledger.hold(t for t, _ in self._waiting.values())
        if self._waiting:
            logger.warning(
                "%d task(s) of a gone manager wait to be published", len(self)
            )
            self._wake.set()

    async def run(self) -> None:
        """Publish waiting tasks whenever there are some, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RETRY_INTERVAL_S)
            self._wake.clear()
            if self._waiting:
                await self._drain()

    async def _drain(self) -> None:
        self._expire()
        while self._waiting:
            tasks = self._take_slice()
            if not tasks:
                continue
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                    await self._engine.submit(tasks)
            except (BrokerUnavailable, TimeoutError, TaskQueueFull) as exc:
                self._published(tasks, not_queued=getattr(exc, "not_queued", None))
                return  # the rest waits for the next attempt
            except BrokerError as exc:
                # Refused for good (no queue bound for its group, say).
                self._ledger.fail(tasks, exc)
                self._release(tasks)
                return
            self._published(tasks, not_queued=())
        await self._store.flush()

    def _take_slice(self) -> list[Task]:
        """The next tasks to publish; those a worker answered already are released."""
        tasks: list[Task] = []
        settled: list[Task] = []
        for task, _ in self._waiting.values():
            if len(tasks) == PUBLISH_SLICE:
                break
            (tasks if task.state is TaskState.CREATED else settled).append(task)
        self._release(settled)
        return tasks

    def _published(
        self, tasks: list[Task], *, not_queued: Sequence[str] | None
    ) -> None:
        if not_queued is None:
            return  # timed out: unknown, all are published again later
        left = set(not_queued)
        done = [t for t in tasks if t.id not in left]
        self._ledger.queued([(t, json.dumps(t.args)) for t in done])
        self._release(done)
        if done:
            logger.info("%d task(s) of the outbox published", len(done))

    def _release(self, tasks: Sequence[Task]) -> None:
        for task in tasks:
            self._waiting.pop(task.id, None)
        self._ledger.release(t.id for t in tasks)
        self._store.outbox_remove(t.id for t in tasks)

    def _expire(self) -> None:
        deadline = asyncio.get_running_loop().time() - self.timeout_s
        old = [t for t, at in self._waiting.values() if at < deadline]
        if not old:
            return
        msg = (
            f"not published: no broker node answered within {self.timeout_s:g} s "
            "($ICIJ_NB_OUTBOX_TIMEOUT_S). tm.retry(task_id) queues it again."
        )
        self._ledger.fail(old, BrokerUnavailable(msg))
        self._release(old)
