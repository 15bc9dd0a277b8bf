"""Worker: takes deliveries of one group, runs the task function, reports events.

One :class:`Worker` is one consumer slot. For each delivery it:

1. skips the task if a cancel for it was heard (it never starts);
2. reports ``ProgressEvent(0.0)``, which the manager reads as RUNNING, once the task
   has run for ``running_grace_s`` (0.1 s) or reports progress: a task that ends
   sooner is reported by its outcome alone, which takes it from QUEUED to DONE
   (or ERROR) under the state rules;
3. calls the function with the task's args (async functions on the loop, sync ones in
   the pool's thread executor, never on the loop), under the task's timeout;
4. reports the result, or an error record with ``attempts_left`` (retryable only when
   the exception is listed in ``recover_from`` and attempts remain), or a cancel;
5. settles the delivery: ack, or nack with requeue when the task goes back.

Progress reports are coalesced: at most one every ``progress_interval_s`` per task, the
latest value wins, so a chatty task cannot flood the manager. A :class:`CancelRegistry`
shared by the workers of a pool hears broadcasts and cancels running tasks.

A sync function cannot be interrupted: on cancel or timeout the worker reports at once
and moves on, the thread finishes in the background and its result is dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Final

from icij_nb.app import App, TaskSpec
from icij_nb.brokers.base import Broker, Delivery
from icij_nb.calls import call_task, keyword_args
from icij_nb.capture import TaskCapture, capturing, ensure_installed
from icij_nb.context import running_task
from icij_nb.errors import InvalidProgress, InvalidResult, UnknownTask
from icij_nb.jsonvalues import json_problem
from icij_nb.model import (
    CancelEvent,
    CancelledEvent,
    ErrorEvent,
    ErrorRecord,
    ManagerEvent,
    ProgressEvent,
    ResultEvent,
    ShutdownEvent,
    Task,
    WorkerBroadcast,
    utcnow,
)
from icij_nb.output import OutputChunk

logger = logging.getLogger(__name__)
#: where a worker that echoes output (a worker process) writes it: its log file
output_logger = logging.getLogger("icij_nb.output")
_RUNS = itertools.count(1)

#: a task still running after this long is reported RUNNING (most short tasks end
#: sooner: their outcome alone is reported, one event instead of two); the board
#: refreshes a few times a second, so a shorter RUNNING would rarely be seen
RUNNING_GRACE_S: Final = 0.1


def make_worker_id(app: App, index: int) -> str:
    """An id in icij-worker's shape: ``<app>-worker-<host>-<pid>-<index>``."""
    return f"{app.name}-worker-{socket.gethostname()}-{os.getpid()}-{index}"


@dataclass(slots=True)
class _Run:
    """A task a worker is running, and why it was stopped, if it was."""

    task_id: str
    owner: asyncio.Task[Any]
    capture: TaskCapture
    cancel: CancelEvent | None = None


@dataclass
class CancelRegistry:
    """Cancels heard by a pool: stops running tasks, remembers queued ones.

    Remembered cancels are bounded (oldest forgotten first) and consumed when the
    task they name is skipped.
    """

    limit: int = 100_000
    running: dict[str, _Run] = field(default_factory=dict)
    heard: OrderedDict[str, CancelEvent] = field(default_factory=OrderedDict)
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)

    def hear(self, event: WorkerBroadcast) -> None:
        if isinstance(event, ShutdownEvent):
            self.shutdown.set()
            return
        run = self.running.get(event.task_id)
        if run is not None:
            run.cancel = event
            run.owner.cancel()
            return
        if event.requeue:  # a queued task asked back to its queue just stays there
            return
        self.heard[event.task_id] = event
        if len(self.heard) > self.limit:
            self.heard.popitem(last=False)

    def take(self, task_id: str) -> CancelEvent | None:
        return self.heard.pop(task_id, None)


class _Progress:
    """The ``progress`` callback a task receives; coalesces what it sends."""

    __slots__ = ("_handle", "_interval", "_last", "_loop", "_pending", "_send")

    def __init__(
        self, send: Callable[[float], None], interval_s: float, loop: Any
    ) -> None:
        self._send, self._interval, self._loop = send, interval_s, loop
        self._last = float("-inf")
        self._pending: float | None = None
        self._handle: asyncio.TimerHandle | None = None

    @staticmethod
    def check(value: object) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0.0 <= value <= 1.0
        ):
            msg = (
                f"progress must be a number in [0, 1], got {value!r}; for counts, "
                "report done / total"
            )
            raise InvalidProgress(msg)
        return float(value)

    def update(self, value: float) -> None:
        now = self._loop.time()
        if now - self._last >= self._interval:
            self._emit(value, now)
            return
        self._pending = value
        if self._handle is None:
            delay = self._interval - (now - self._last)
            self._handle = self._loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._handle = None
        if self._pending is not None:
            self._emit(self._pending, self._loop.time())

    def _emit(self, value: float, now: float) -> None:
        self._pending, self._last = None, now
        self._send(value)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    async def report_async(self, value: float) -> None:
        self.update(self.check(value))

    def report_from_thread(self, value: float) -> None:
        self._loop.call_soon_threadsafe(self.update, self.check(value))


class Worker:
    """One consumer of a group's queue.

    Args:
        app: where task functions are looked up.
        broker: where deliveries come from and events go.
        group: the group served (None: the ungrouped queue).
        worker_id: this worker's id, reported with each event.
        cancels: the pool's registry of heard cancels.
        executor: runs sync task functions.
        progress_interval_s: the least time between two progress reports of a task,
            and between two chunks of its output.
        running_grace_s: a task still running after this long is reported RUNNING;
            one that ends sooner is reported by its outcome alone.
        echo_output: also write each task's output lines to the log (a worker
            process's log file), whoever reads the output exchange.
    """

    def __init__(
        self,
        app: App,
        broker: Broker,
        *,
        group: str | None,
        worker_id: str,
        cancels: CancelRegistry,
        executor: Executor,
        progress_interval_s: float = 0.2,
        running_grace_s: float = RUNNING_GRACE_S,
        echo_output: bool = False,
    ) -> None:
        self.app, self.broker, self.group = app, broker, group
        self._running_grace_s = running_grace_s
        self._echo_output = echo_output
        #: per attempt, the last chunk sent in the background (the final one waits)
        self._output_sending: dict[str, asyncio.Future[None]] = {}
        self.worker_id = worker_id
        self._cancels = cancels
        self._executor = executor
        self._progress_interval_s = progress_interval_s
        self.current: str | None = None
        self.done = 0
        self.failed = 0
        self._draining = False

    def __repr__(self) -> str:
        return (
            f"<Worker {self.worker_id!r} group={self.group!r} "
            f"current={self.current!r} done={self.done} failed={self.failed}>"
        )

    @property
    def draining(self) -> bool:
        """True once :meth:`drain` was called."""
        return self._draining

    def drain(self) -> None:
        """Take no new task; the running one finishes."""
        self._draining = True

    async def run(self) -> None:
        """Consume and run tasks until cancelled or drained."""
        logger.info("worker %s serves group %r", self.worker_id, self.group)
        loop = asyncio.get_running_loop()
        turn_started = loop.time()
        async with self.broker.deliveries(self.group, worker_id=self.worker_id) as it:
            async for delivery in it:
                if self._draining:
                    await delivery.nack(requeue=True)
                    return
                await self._handle_or_give_back(delivery)
                if self.draining:
                    return
                if loop.time() - turn_started > _TURN_S:
                    # Tasks that never suspend would otherwise hold the loop for a
                    # whole queue: the manager, the board and cancels get a turn.
                    await asyncio.sleep(0)
                    turn_started = loop.time()

    async def _handle_or_give_back(self, delivery: Delivery) -> None:
        # One delivery that cannot be reported (the broker stayed away) must not
        # stop the worker: the task goes back to its queue and the worker goes on.
        try:
            await self.handle(delivery)
        except Exception:
            logger.exception(
                "worker %s could not finish with task %s; it goes back to its queue",
                self.worker_id,
                delivery.task.id,
            )
            await delivery.nack(requeue=True)

    async def handle(self, delivery: Delivery) -> None:
        """Run one delivery to its end and settle it."""
        task = delivery.task
        heard = self._cancels.take(task.id)
        if heard is not None and not _published_after(delivery, heard):
            # Dated as the cancel it obeys: a manager that retried the task after
            # that cancel knows this message is the old one.
            skipped = CancelledEvent(
                task.id,
                requeue=False,
                created_at=heard.created_at,
                worker_id=self.worker_id,
            )
            await self._send(skipped)
            await delivery.ack()
            return
        try:
            spec = self.app.get(task.name)
        except UnknownTask as exc:
            await self._fail(delivery, ErrorRecord.from_exception(exc), retry=False)
            return
        owner = asyncio.current_task()
        if owner is None:  # pragma: no cover - handle() always runs in a task
            msg = "Worker.handle() must run inside an asyncio task"
            raise RuntimeError(msg)
        ensure_installed()  # a stream replaced since the pool started (pytest does)
        capture = TaskCapture(
            task.id,
            f"{self.worker_id}:{next(_RUNS)}",
            self.worker_id,
            utcnow(),
            send=self._send_output_soon,
            loop=asyncio.get_running_loop(),
            interval_s=self._progress_interval_s,
        )
        run = _Run(task.id, owner, capture)
        self._cancels.running[task.id] = run
        self.current = task.id
        try:
            with running_task(task.id), capturing(capture):
                await self._execute(delivery, spec, run)
        finally:
            self._cancels.running.pop(task.id, None)
            self._output_sending.pop(capture.run, None)
            self.current = None

    async def _execute(self, delivery: Delivery, spec: TaskSpec, run: _Run) -> None:
        task = delivery.task
        # Progress and RUNNING publishes still in flight: the outcome event waits
        # for them, so that nothing about the task arrives after its result.
        in_flight: set[asyncio.Future[None]] = set()
        started = _Started(self, task.id, in_flight)
        # A redelivered task was taken by a worker that died: shown RUNNING at once.
        started.arm(0.0 if delivery.redelivered else self._running_grace_s)
        try:
            await self._run_task(delivery, spec, run, started, in_flight)
        finally:
            started.disarm()

    async def _run_task(
        self,
        delivery: Delivery,
        spec: TaskSpec,
        run: _Run,
        started: _Started,
        in_flight: set[asyncio.Future[None]],
    ) -> None:
        task = delivery.task
        progress = (
            self._progress(task, in_flight, started) if spec.takes_progress else None
        )
        try:
            value = await self._call(spec, task, progress)
        except asyncio.CancelledError:
            _close(progress)
            started.disarm()
            await self._output_done(run)
            if run.cancel is None:  # the worker itself is stopping: give it back
                await self._send(
                    CancelledEvent(task.id, requeue=True, worker_id=self.worker_id)
                )
                await delivery.nack(requeue=True)
                raise
            owner = asyncio.current_task()
            if owner is not None:
                owner.uncancel()
            await _sent(in_flight)
            await self._cancelled(delivery, run.cancel)
            return
        except Exception as exc:
            _close(progress)
            started.disarm()
            await self._output_done(run)
            retry = isinstance(exc, spec.recover_from) and task.attempts_left > 1
            self.failed += 1
            await _sent(in_flight)
            await self._fail(delivery, ErrorRecord.from_exception(exc), retry=retry)
            return
        _close(progress)
        started.disarm()
        await self._output_done(run)
        await _sent(in_flight)
        await self._succeed(delivery, spec, value)

    def _progress(
        self, task: Task, in_flight: set[asyncio.Future[None]], started: _Started
    ) -> _Progress:
        def send_progress(value: float) -> None:
            started.now()  # RUNNING (0.0) goes before the first report
            sent = self.send_nowait(
                ProgressEvent(task.id, value, worker_id=self.worker_id)
            )
            in_flight.add(sent)
            sent.add_done_callback(in_flight.discard)

        return _Progress(
            send_progress, self._progress_interval_s, asyncio.get_running_loop()
        )

    async def _call(
        self, spec: TaskSpec, task: Task, progress: _Progress | None
    ) -> Any:
        return await call_task(
            spec,
            keyword_args(spec, task.args),
            progress=progress,
            executor=self._executor,
            what=f"task {task.name!r} ({task.id})",
        )

    async def _succeed(self, delivery: Delivery, spec: TaskSpec, value: Any) -> None:
        problem = json_problem(value, "the result")
        if problem:
            msg = f"task {spec.name!r} returned a value JSON cannot carry: {problem}"
            self.failed += 1
            await self._fail(
                delivery, ErrorRecord.from_exception(InvalidResult(msg)), retry=False
            )
            return
        self.done += 1
        await self._send(ResultEvent(delivery.task.id, value, worker_id=self.worker_id))
        await delivery.ack()

    async def _fail(
        self, delivery: Delivery, error: ErrorRecord, *, retry: bool
    ) -> None:
        task = delivery.task
        attempts_left = task.attempts_left - 1 if retry else 0
        await self._send(
            ErrorEvent(
                task.id, error, attempts_left=attempts_left, worker_id=self.worker_id
            )
        )
        await delivery.ack()

    async def _cancelled(self, delivery: Delivery, cancel: CancelEvent) -> None:
        await self._send(
            CancelledEvent(
                delivery.task.id, requeue=cancel.requeue, worker_id=self.worker_id
            )
        )
        if cancel.requeue:  # the broker gives it back (late ack)
            await delivery.nack(requeue=True)
        else:
            await delivery.ack()

    def _send_output_soon(self, chunk: OutputChunk) -> None:
        # Called on the loop by a capture's timer, outside any task's context.
        self._echo(chunk)
        sending = asyncio.ensure_future(self.broker.publish_output([chunk]))
        _PENDING.add(sending)
        sending.add_done_callback(_forget_sent)
        self._output_sending[chunk.run] = sending

    async def _output_done(self, run: _Run) -> None:
        """Send the attempt's last output before its outcome (never fails the task)."""
        chunk = run.capture.close()
        earlier = self._output_sending.pop(run.capture.run, None)
        if chunk is None:
            return
        if earlier is not None:
            # Published in the order sent: a background send may not have started.
            await asyncio.wait([earlier])
        self._echo(chunk)
        try:
            await self.broker.publish_output([chunk])
        except Exception as exc:
            logger.warning("output of task %s not sent: %s", run.task_id, exc)

    def _echo(self, chunk: OutputChunk) -> None:
        if self._echo_output:
            for line in chunk.lines:
                output_logger.info("task %s: %s", chunk.task_id, line)

    async def _send(self, event: ManagerEvent) -> None:
        await self.broker.publish_event(event)

    def send_nowait(self, event: ManagerEvent) -> asyncio.Future[None]:
        # Called from loop callbacks (coalesced progress): publish in the background.
        task = asyncio.ensure_future(self._send(event))
        _PENDING.add(task)
        task.add_done_callback(_forget_sent)
        return task


class _Started:
    """The RUNNING report of one task: sent once, after the grace period.

    A task that ends within the grace period is never reported RUNNING: its
    outcome alone takes it from QUEUED to its end under the state rules. A progress
    report sends RUNNING at once, ahead of itself.
    """

    __slots__ = ("_in_flight", "_task_id", "_timer", "_worker", "sent")

    def __init__(
        self, worker: Worker, task_id: str, in_flight: set[asyncio.Future[None]]
    ) -> None:
        self._worker, self._task_id, self._in_flight = worker, task_id, in_flight
        self._timer: asyncio.TimerHandle | None = None
        self.sent = False

    def arm(self, grace_s: float) -> None:
        if grace_s <= 0:
            self.now()
            return
        self._timer = asyncio.get_running_loop().call_later(grace_s, self.now)

    def now(self) -> None:
        self.disarm()
        if self.sent:
            return
        self.sent = True
        worker = self._worker
        sent = worker.send_nowait(
            ProgressEvent(self._task_id, 0.0, worker_id=worker.worker_id)
        )
        self._in_flight.add(sent)
        sent.add_done_callback(self._in_flight.discard)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _published_after(delivery: Delivery, cancel: CancelEvent) -> bool:
    # A task published after its cancel is a retry: it must run. Deliveries that
    # do not say when they were published (icij-worker's) are taken as older.
    published = delivery.published_at
    return published is not None and published > cancel.created_at


def _forget_sent(sent: asyncio.Future[None]) -> None:
    _PENDING.discard(sent)
    if not sent.cancelled() and sent.exception() is not None:
        logger.warning("an event was not confirmed by the broker: %s", sent.exception())


async def _sent(in_flight: set[asyncio.Future[None]]) -> None:
    """Wait until the publishes in ``in_flight`` are done (failed ones are logged)."""
    if in_flight:
        await asyncio.wait(list(in_flight))


def _close(progress: _Progress | None) -> None:
    if progress is not None:
        progress.close()


#: the longest a worker runs tasks back to back before letting the loop breathe
_TURN_S = 0.005

# Keeps fire-and-forget progress publishes referenced until they finish.
_PENDING: set[asyncio.Future[None]] = set()
