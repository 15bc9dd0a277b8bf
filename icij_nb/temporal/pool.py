"""Temporal worker pools: icij_nb tasks served on their group's task queue.

:class:`TemporalPool` is what ``Engine.pool(app, PoolOptions(...))`` returns for a
``temporal://`` URL:

- in the kernel (the default), one Temporal worker on the runtime loop runs up to
  ``workers`` tasks at once (sync ones in threads);
- with ``processes=True``, ``workers`` processes forked from the kernel (tasks
  defined in cells run there as they are), each running :func:`serve` with
  ``concurrency`` tasks at once; a process that dies is replaced, and Temporal gives
  its task to another worker once its heartbeat times out.

Each worker registers, on the task queue of its group (Datashare's GROUP rule), a
workflow type per task of the group and their activities
(:mod:`~icij_nb.temporal.workflows`). A slot is reserved before a poll, so a task
terminated while it waited never runs. Stopping a pool hands running tasks back
to Temporal (retried elsewhere), or lets them finish first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import warnings
from datetime import timedelta
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

from icij_nb.app import App
from icij_nb.errors import ConfigError
from icij_nb.temporal.contract import TemporalUrl, task_queue
from icij_nb.temporal.namespace import connect_client
from icij_nb.temporal.workflows import TaskRunner
from icij_nb.threads import DaemonExecutor

if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.worker import Worker

    from icij_nb.engine import PoolOptions
    from icij_nb.runtime import Runtime

logger = logging.getLogger(__name__)


def build_worker(
    app: App,
    client: Client,
    *,
    group: str | None,
    concurrency: int,
    runner: TaskRunner,
    identity: str,
) -> Worker:
    """A Temporal worker for the tasks of ``group`` on its task queue.

    Raises:
        ConfigError: the app has no task in that group.
    """
    from temporalio.worker import (
        PollerBehaviorSimpleMaximum,
        UnsandboxedWorkflowRunner,
        Worker,
    )

    specs = [spec for spec in app if spec.group_name == group]
    if not specs:
        msg = (
            f"app {app.name!r} has no task in group {group!r}: nothing for a Temporal "
            f"worker to serve on task queue {task_queue(group)!r}"
        )
        raise ConfigError(msg)
    return Worker(
        client,
        task_queue=task_queue(group),
        workflows=runner.workflows(specs),
        activities=runner.activities(specs),
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_concurrent_activities=concurrency,
        # One activity poller: several spread over the queue's partitions, and a
        # task that lands on a partition nobody polls waits to be forwarded
        # (measured: p50 of a one-activity task 150 ms with 5 pollers, 103 with 1).
        activity_task_poller_behavior=PollerBehaviorSimpleMaximum(1),
        # No workflow cache: a task's workflow is tiny and replays in a moment, and
        # cached workflow instances, evicted when pools stop, were seen to crash
        # the garbage collector of the process that ran many pools (CPython 3.11).
        max_cached_workflows=0,
        identity=identity,
        graceful_shutdown_timeout=timedelta(0),
    )


def _identity(app: App, group: str | None, index: int) -> str:
    """A worker id in icij-worker's shape: ``<app>-worker-<host>-<pid>-<index>``."""
    return f"{app.name}-worker-{socket.gethostname()}-{os.getpid()}-{group}-{index}"


async def serve(
    app: App, url: TemporalUrl, *, group: str | None, concurrency: int = 1
) -> None:
    """Serve ``group``'s tasks until SIGTERM or SIGINT (the CLI, worker processes)."""
    client = await connect_client(url)
    executor = DaemonExecutor(concurrency + 2, name=f"icij_nb-{group or 'pool'}")
    runner = TaskRunner(app, executor=executor)
    worker = build_worker(
        app,
        client,
        group=group,
        concurrency=concurrency,
        runner=runner,
        identity=_identity(app, group, 0),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    running = asyncio.create_task(worker.run())
    logger.info("serving group %r on %s (%d at once)", group, url, concurrency)
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([running, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not running.done():
        await worker.shutdown()
    await asyncio.gather(running, return_exceptions=True)
    executor.shutdown(wait=False, cancel_futures=True)


def run_workers(
    app: App,
    url: str,
    *,
    group: str | None,
    processes: int = 1,
    concurrency: int = 1,
) -> int:
    """``icij-nb workers start APP --broker temporal://...``: serve until a signal.

    One process serves in place; more are forked (and replaced when they die).
    Returns the exit status.
    """
    parsed = TemporalUrl.parse(url)
    if processes <= 1:
        asyncio.run(serve(app, parsed, group=group, concurrency=concurrency))
        return 0
    asyncio.run(connect_client(parsed))  # a bad URL fails here, not in children
    children = _Processes(app, parsed, group, processes, concurrency)
    children.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    while not stop.wait(0.5):
        pass
    children.stop()
    return 0


class TemporalPool:
    """Temporal workers of one group, in this kernel or in processes.

    Args:
        app: the tasks it runs.
        url: the Temporal server and namespace.
        options: group, workers, processes, concurrency, progress interval.
        runtime: the loop in-kernel workers run on.
    """

    def __init__(
        self, app: App, url: TemporalUrl, options: PoolOptions, *, runtime: Runtime
    ) -> None:
        concurrency = options.concurrency or app.default_concurrency(options.group)
        if options.workers < 1 or concurrency < 1:
            msg = f"a pool needs workers >= 1 and concurrency >= 1, got {options!r}"
            raise ConfigError(msg)
        self.app, self.url, self.options = app, url, options
        #: with processes, how many tasks each one runs at once
        self.concurrency = concurrency
        self._runtime = runtime
        self._worker: Worker | None = None
        self._running: asyncio.Task[None] | None = None
        self._runner: TaskRunner | None = None
        self._executor: DaemonExecutor | None = None
        self._processes: _Processes | None = None
        self._stopped = False

    def __repr__(self) -> str:
        kind = "processes" if self.options.processes else "workers"
        state = "stopped" if self._stopped else f"running={self.running}"
        return (
            f"<TemporalPool {self.group!r} queue={task_queue(self.group)!r} "
            f"{kind}={self.options.workers} {state}>"
        )

    @property
    def group(self) -> str | None:
        """The group it serves."""
        return self.options.group

    @property
    def stopped(self) -> bool:
        """True once it was stopped."""
        return self._stopped

    @property
    def running(self) -> int:
        """Tasks running in this kernel now (0 for process pools)."""
        return len(self._runner.running) if self._runner is not None else 0

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (process pools)."""
        return self._processes.pids if self._processes is not None else []

    async def start_async(self) -> None:
        """Start the workers; they poll once this returns."""
        if self.options.processes:
            await connect_client(self.url)  # a bad URL fails here, not in children
            self._processes = _Processes(
                self.app,
                self.url,
                self.group,
                self.options.workers,
                self.concurrency,
            )
            await asyncio.to_thread(self._processes.start)
            return
        client = await connect_client(self.url)
        workers = self.options.workers
        self._executor = DaemonExecutor(workers + 2, name=f"icij_nb-{self.group}")
        self._runner = TaskRunner(
            self.app,
            executor=self._executor,
            progress_interval_s=self.options.progress_interval_s,
        )
        self._worker = build_worker(
            self.app,
            client,
            group=self.group,
            concurrency=workers,
            runner=self._runner,
            identity=_identity(self.app, self.group, 0),
        )
        self._running = asyncio.create_task(self._worker.run(), name="temporal-pool")

    async def stop_async(
        self, *, finish_running: bool = False, timeout_s: float | None = 60.0
    ) -> None:
        """Stop the workers; running tasks go back to Temporal unless finished first.

        Safe to call twice.
        """
        if self._stopped:
            return
        self._stopped = True
        if self._processes is not None:
            await asyncio.to_thread(self._processes.stop)
            return
        if finish_running and self._runner is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    while self._runner.running:  # noqa: ASYNC110 - a set the activities change, no event to wait on
                        await asyncio.sleep(0.05)
        if self._worker is not None and self._running is not None:
            if not self._running.done():
                await self._worker.shutdown()
            await asyncio.gather(self._running, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def stop(self, *, finish_running: bool = False) -> None:
        """Blocking twin of :meth:`stop_async`."""
        self._runtime.run(self.stop_async(finish_running=finish_running))


class _Processes:
    """Forked worker processes of a pool, replaced when they die."""

    def __init__(
        self,
        app: App,
        url: TemporalUrl,
        group: str | None,
        processes: int,
        concurrency: int,
    ) -> None:
        self._app, self._url, self._group = app, url, group
        self._size, self._concurrency = processes, concurrency
        self._procs: list[BaseProcess] = []
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def start(self) -> None:
        self._procs = [self._spawn(i) for i in range(self._size)]
        self._watcher = threading.Thread(
            target=self._watch, name="icij_nb-temporal-procs", daemon=True
        )
        self._watcher.start()

    def _spawn(self, index: int) -> BaseProcess:
        proc = multiprocessing.get_context("fork").Process(
            target=_child_main,
            args=(self._app, self._url, self._group, self._concurrency),
            name=f"icij_nb-temporal-{self._group}-{index}",
            daemon=True,
        )
        with warnings.catch_warnings():
            # The child starts its own Temporal runtime and loop: it touches none
            # of the parent's threads.
            warnings.filterwarnings(
                "ignore", message=".*fork.*", category=DeprecationWarning
            )
            proc.start()
        return proc

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            for index, proc in enumerate(self._procs):
                if not proc.is_alive() and not self._stopping.is_set():
                    logger.warning(
                        "temporal worker process %s ended (%s); replacing it",
                        proc.pid,
                        proc.exitcode,
                    )
                    self._procs[index] = self._spawn(index)

    def stop(self) -> None:
        self._stopping.set()
        for proc in self._procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        for proc in self._procs:
            proc.join(15.0)
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)


def _child_main(
    app: App, url: TemporalUrl, group: str | None, concurrency: int
) -> None:
    from temporalio.runtime import Runtime, TelemetryConfig

    # The parent's Temporal runtime does not survive a fork: the child makes its own,
    # and keeps the inherited one referenced, because dropping it would wait for
    # threads that only exist in the parent.
    _INHERITED.append(Runtime.default())
    Runtime.set_default(
        Runtime(telemetry=TelemetryConfig()), error_if_already_set=False
    )
    _die_with_parent()
    asyncio.run(serve(app, url, group=group, concurrency=concurrency))


_INHERITED: list[object] = []


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
