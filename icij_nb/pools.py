"""Worker pools. :class:`InKernelPool` runs workers on the runtime loop, in this kernel.

A pool is N :class:`~icij_nb.worker.Worker` consumers of one group's queue, one
listener of broadcasts (cancel, shutdown) shared through a
:class:`~icij_nb.worker.CancelRegistry`, and a thread executor for sync task
functions. Stopping a pool requeues its running tasks (the default) or lets them
finish first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

from icij_nb.app import App
from icij_nb.brokers.base import Broker
from icij_nb.errors import ConfigError
from icij_nb.model import WorkerStatus
from icij_nb.runtime import Runtime
from icij_nb.threads import DaemonExecutor
from icij_nb.worker import CancelRegistry, Worker, make_worker_id
from icij_nb.worker_registry import WORKER_HEARTBEAT_S

logger = logging.getLogger(__name__)

_POOL_COUNT = 0


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class InKernelPool:
    """Workers of one group running inside this kernel, on the runtime loop.

    Start one with ``tm.start_pool(group, workers=N)``.
    """

    def __init__(
        self,
        app: App,
        broker: Broker,
        *,
        group: str | None,
        workers: int,
        runtime: Runtime | None,
        progress_interval_s: float = 0.2,
        heartbeat_s: float = WORKER_HEARTBEAT_S,
    ) -> None:
        if not _is_count(workers):
            msg = f"a pool needs workers >= 1, got {workers!r}"
            raise ConfigError(msg)
        global _POOL_COUNT
        _POOL_COUNT += 1
        self.group = group
        self.size = workers
        self._runtime = runtime
        self._cancels = CancelRegistry()
        # Sync tasks run here; spare threads take over from ones a cancel abandoned.
        self._executor = DaemonExecutor(workers + 2, name=f"icij_nb-{group or 'pool'}")
        self.workers = [
            Worker(
                app,
                broker,
                group=group,
                worker_id=make_worker_id(app, _POOL_COUNT * 1000 + index),
                cancels=self._cancels,
                executor=self._executor,
                progress_interval_s=progress_interval_s,
            )
            for index in range(workers)
        ]
        self._broker = broker
        self._tasks: list[asyncio.Task[Any]] = []
        self._listener: asyncio.Task[None] | None = None
        self._beat: asyncio.Task[None] | None = None
        self._heartbeat_s = heartbeat_s
        self._stopped = False
        self._stopping: asyncio.Future[None] | None = None
        self.ended = asyncio.Event()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else f"running={self.running}"
        return (
            f"<InKernelPool {self.group!r} workers={self.size} {state} "
            f"done={self.done} failed={self.failed}>"
        )

    def _repr_html_(self) -> str:
        import html

        return f"<code>{html.escape(repr(self))}</code>"

    @property
    def running(self) -> int:
        """Workers running a task now."""
        return sum(1 for w in self.workers if w.current is not None)

    @property
    def done(self) -> int:
        """Tasks this pool finished with a result."""
        return sum(w.done for w in self.workers)

    @property
    def failed(self) -> int:
        """Attempts this pool saw fail."""
        return sum(w.failed for w in self.workers)

    @property
    def stopped(self) -> bool:
        """True once the pool was stopped."""
        return self._stopped

    async def start_async(self) -> None:
        """Start the workers; return once they hear cancels (on the pool's loop)."""
        listening = asyncio.Event()
        self._listener = asyncio.create_task(
            self._listen(listening), name="icij_nb-broadcasts"
        )
        # Wired before start_pool returns: a cancel sent right after is heard.
        ready = asyncio.ensure_future(listening.wait())
        await asyncio.wait([self._listener, ready], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._listener.done():
            self._listener.result()  # the broker refused: raise its error here
        # Cancels sent before the pool listened: their tasks must never start.
        for cancel in await self._broker.cancelled_before(
            worker_id=self.workers[0].worker_id
        ):
            self._cancels.hear(cancel)
        self._beat = asyncio.create_task(self._heartbeat(), name="icij_nb-heartbeat")
        for worker in self.workers:
            task = asyncio.create_task(worker.run(), name=worker.worker_id)
            task.add_done_callback(self._worker_ended)
            self._tasks.append(task)

    def _worker_ended(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("worker %s died", task.get_name(), exc_info=task.exception())

    def statuses(self, *, stopping: bool = False) -> list[WorkerStatus]:
        """What each worker of the pool is doing now, as a heartbeat says it."""
        host, pid = socket.gethostname(), os.getpid()
        return [
            WorkerStatus(
                worker_id=w.worker_id,
                group=self.group,
                app=w.app.name,
                host=host,
                pid=pid,
                task_id=w.current,
                stopping=stopping,
            )
            for w in self.workers
        ]

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self._broker.publish_heartbeat(self.statuses())
            except Exception as exc:
                logger.warning("pool %r: heartbeat not sent: %s", self.group, exc)
            await asyncio.sleep(self._heartbeat_s)

    async def _listen(self, listening: asyncio.Event) -> None:
        worker_id = self.workers[0].worker_id
        async with self._broker.broadcasts(worker_id=worker_id) as events:
            listening.set()
            async for event in events:
                self._cancels.hear(event)
                if self._cancels.shutdown.is_set():
                    logger.info("pool %r: shutdown requested", self.group)
                    # Not awaited here: stopping cancels this very listener.
                    self._stopping = asyncio.ensure_future(
                        self._stop(finish_running=False, timeout_s=None)
                    )
                    return

    def stop(
        self, *, finish_running: bool = False, timeout_s: float | None = 60.0
    ) -> None:
        """Stop the pool; safe to call twice.

        Args:
            finish_running: let running tasks finish first (up to ``timeout_s``);
                by default they are stopped and requeued, so another pool takes them.
            timeout_s: how long to wait for running tasks when finishing them.
        """
        self._require_runtime().run(
            self._stop(finish_running=finish_running, timeout_s=timeout_s)
        )

    async def stop_async(
        self, *, finish_running: bool = False, timeout_s: float | None = 60.0
    ) -> None:
        """Awaitable twin of :meth:`stop`; on the pool's own loop it stops in place."""
        stopping = self._stop(finish_running=finish_running, timeout_s=timeout_s)
        if self._runtime is None:  # a worker process: this is the pool's loop
            await stopping
        else:
            await self._runtime.wrap(stopping)

    async def _stop(self, *, finish_running: bool, timeout_s: float | None) -> None:
        if self._stopped:
            return
        self._stopped = True
        if finish_running:
            for worker in self.workers:
                worker.drain()
            idle = [
                t
                for t, w in zip(self._tasks, self.workers, strict=True)
                if w.current is None
            ]
            for task in idle:
                task.cancel()
            busy = [t for t in self._tasks if t not in idle]
            if busy:
                await asyncio.wait(busy, timeout=timeout_s)
        for running in [*self._tasks, self._listener, self._beat]:
            if running is not None:
                running.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            await asyncio.gather(self._listener, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self._broker.publish_heartbeat(self.statuses(stopping=True))
        self.ended.set()

    def _require_runtime(self) -> Runtime:
        if self._runtime is None:
            msg = (
                "this pool runs on its own loop (a worker process); await stop_async()"
            )
            raise ConfigError(msg)
        return self._runtime
