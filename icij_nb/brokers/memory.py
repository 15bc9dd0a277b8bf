"""The in-process broker: the embedded default, for in-kernel pools.

Queues are deques on the runtime loop, one per group, with the same contract as the
AMQP broker: at-least-once delivery, unsettled deliveries go back to their queue when
their consumer stops, per-group caps, cancel and shutdown broadcasts to every worker.
A cancel of a task that is still queued removes it from its queue, so it never starts.

All methods run on the runtime loop; nothing here is thread-safe by itself.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from icij_nb.app import App
from icij_nb.brokers.base import Broker, Delivery, EventBatch
from icij_nb.errors import ManagerClosed, TaskQueueFull
from icij_nb.model import (
    CancelEvent,
    ManagerEvent,
    Task,
    WorkerBroadcast,
    WorkerStatus,
    utcnow,
)

#: tasks queued per loop turn by a big publish
_TASKS_PER_TURN = 2_000


@dataclass(slots=True)
class _Entry:
    task: Task
    redelivered: bool = False
    dropped: bool = False
    published_at: datetime = field(default_factory=utcnow)


@dataclass(slots=True)
class _Queue:
    """A deque with waiting consumers; dropped entries are skipped when popped."""

    cap: int | None
    entries: deque[_Entry] = field(default_factory=deque)
    by_id: dict[str, _Entry] = field(default_factory=dict)
    waiters: deque[asyncio.Future[_Entry]] = field(default_factory=deque)
    size: int = 0

    def put(self, entry: _Entry, *, front: bool = False) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(entry)
                return
        self.by_id[entry.task.id] = entry
        self.size += 1
        if front:
            self.entries.appendleft(entry)
        else:
            self.entries.append(entry)

    def pop_nowait(self) -> _Entry | None:
        while self.entries:
            entry = self.entries.popleft()
            if entry.dropped:
                continue
            self.size -= 1
            self.by_id.pop(entry.task.id, None)
            return entry
        return None

    async def pop(self) -> _Entry:
        entry = self.pop_nowait()
        if entry is not None:
            return entry
        waiter: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed an entry just as we were cancelled: give it back.
                self.put(waiter.result(), front=True)
            raise

    def drop(self, task_id: str) -> bool:
        entry = self.by_id.pop(task_id, None)
        if entry is None:
            return False
        entry.dropped = True
        self.size -= 1
        return True


class _MemoryDelivery:
    __slots__ = ("_entry", "_queue", "_settled", "_unsettled")

    def __init__(
        self, entry: _Entry, queue: _Queue, unsettled: set[_MemoryDelivery]
    ) -> None:
        self._entry, self._queue, self._unsettled = entry, queue, unsettled
        self._settled = False
        unsettled.add(self)

    @property
    def task(self) -> Task:
        return self._entry.task

    @property
    def redelivered(self) -> bool:
        return self._entry.redelivered

    @property
    def published_at(self) -> datetime:
        return self._entry.published_at

    def _settle(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        self._unsettled.discard(self)
        return True

    async def ack(self) -> None:
        self._settle()

    async def nack(self, *, requeue: bool) -> None:
        if self._settle() and requeue:
            self.requeue()

    def requeue(self) -> None:
        entry = self._entry
        self._queue.put(
            _Entry(entry.task, redelivered=True, published_at=entry.published_at),
            front=True,
        )


class MemoryBroker(Broker):
    """Queues in this process: for in-kernel pools, tests and the quickstart.

    Args:
        app: the app whose groups get queues (and caps).
    """

    kind = "memory"
    durable = False

    def __init__(self, app: App) -> None:
        self._app = app
        self._queues: dict[str | None, _Queue] = {}
        self._events: deque[ManagerEvent] = deque()
        self._events_ready = asyncio.Event()
        self._subscribers: set[asyncio.Queue[WorkerBroadcast]] = set()
        self._watchers: set[asyncio.Queue[list[WorkerStatus]]] = set()
        self._confirmed: asyncio.Future[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        queued = sum(q.size for q in self._queues.values())
        return f"<MemoryBroker queues={len(self._queues)} queued={queued}>"

    def _queue(self, group: str | None) -> _Queue:
        queue = self._queues.get(group)
        if queue is None:
            spec = self._app.group(group)
            queue = _Queue(cap=spec.max_task_queue_size if spec else None)
            self._queues[group] = queue
        return queue

    async def close(self) -> None:
        self._closed = True
        self._events_ready.set()

    async def publish_tasks(self, tasks: Sequence[Task]) -> None:
        if self._closed:
            msg = "the memory broker is closed; connect() a new manager"
            raise ManagerClosed(msg)
        for index, task in enumerate(tasks):
            queue = self._queue(task.group)
            if queue.cap is not None and queue.size >= queue.cap:
                msg = (
                    f"the queue of group {task.group!r} is full ({queue.cap} tasks, "
                    "its max_task_queue_size); wait for workers to take some, start "
                    "a pool for it, or raise the cap"
                )
                not_queued = tuple(t.id for t in tasks[index:])
                raise TaskQueueFull(msg, group=task.group or "", not_queued=not_queued)
            queue.put(_Entry(task.message()))
            if index % _TASKS_PER_TURN == _TASKS_PER_TURN - 1:
                await asyncio.sleep(0)  # a big map must not hold the loop

    async def broadcast(self, event: WorkerBroadcast) -> None:
        # Dropped from its queue, a cancelled task reaches no worker: telling them
        # would only leave a stale cancel that kills a later retry of it.
        if (
            isinstance(event, CancelEvent)
            and not event.requeue
            and any(q.drop(event.task_id) for q in self._queues.values())
        ):
            return
        for subscriber in self._subscribers:
            subscriber.put_nowait(event)

    async def manager_events(self) -> AsyncIterator[EventBatch]:
        while True:
            if not self._events:
                if self._closed:
                    return
                self._events_ready.clear()
                await self._events_ready.wait()
                continue
            batch = list(self._events)
            self._events.clear()
            yield EventBatch(batch)

    def publish_event_nowait(self, event: ManagerEvent) -> None:
        """Publish without awaiting (the memory broker never blocks)."""
        self._events.append(event)
        self._events_ready.set()

    async def publish_event(self, event: ManagerEvent) -> None:
        self.publish_event_nowait(event)

    async def publish_event_soon(self, event: ManagerEvent) -> asyncio.Future[None]:
        self.publish_event_nowait(event)
        if self._confirmed is None:  # in-process: nothing to confirm, ever
            self._confirmed = asyncio.get_running_loop().create_future()
            self._confirmed.set_result(None)
        return self._confirmed

    @asynccontextmanager
    async def deliveries(
        self, group: str | None, *, worker_id: str
    ) -> AsyncIterator[AsyncIterator[Delivery]]:
        queue = self._queue(group)
        unsettled: set[_MemoryDelivery] = set()

        async def consume() -> AsyncIterator[Delivery]:
            while True:
                # Most deliveries are waiting already: no coroutine for those.
                entry = queue.pop_nowait() or await queue.pop()
                yield _MemoryDelivery(entry, queue, unsettled)

        try:
            yield consume()
        finally:
            # The consumer stopped: what it took and did not settle goes back.
            for delivery in list(unsettled):
                if delivery._settle():
                    delivery.requeue()

    @asynccontextmanager
    async def broadcasts(
        self, *, worker_id: str
    ) -> AsyncIterator[AsyncIterator[WorkerBroadcast]]:
        inbox: asyncio.Queue[WorkerBroadcast] = asyncio.Queue()
        self._subscribers.add(inbox)

        async def receive() -> AsyncIterator[WorkerBroadcast]:
            while True:
                yield await inbox.get()

        try:
            yield receive()
        finally:
            self._subscribers.discard(inbox)

    async def publish_heartbeat(self, statuses: Sequence[WorkerStatus]) -> None:
        for inbox in self._watchers:
            inbox.put_nowait(list(statuses))

    async def heartbeats(self) -> AsyncIterator[list[WorkerStatus]]:
        inbox: asyncio.Queue[list[WorkerStatus]] = asyncio.Queue()
        self._watchers.add(inbox)
        try:
            while True:
                yield await inbox.get()
        finally:
            self._watchers.discard(inbox)
