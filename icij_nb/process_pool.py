"""Worker processes on this machine: :class:`ProcessPool` and :func:`serve`.

:func:`serve` is what one worker process runs: connect to RabbitMQ, run an
:class:`~icij_nb.pools.InKernelPool` of the group on its own loop, and stop gracefully
on SIGTERM/SIGINT (running tasks finish within a grace period, the rest are requeued)
or on a shutdown broadcast. The CLI (``icij-nb workers start``) and
:class:`ProcessPool` both run it.

:class:`ProcessPool` starts those processes from the notebook with ``fork``, so tasks
defined in notebook cells run there as they are: no module to write, and no code ever
travels over the broker (messages stay JSON). No process outlives its kernel:

- ``pool.stop()`` and kernel shutdown (``atexit``) send SIGTERM, then SIGKILL;
- when the kernel is killed, each child sees its parent's pipe close and exits, and on
  Linux the kernel also asks the OS to kill it (``PR_SET_PDEATHSIG``).

A process that dies (killed, crashed, or ``os._exit`` in a task) is replaced by a
watcher thread of the pool, after a pause that grows while replacements keep dying
young (0.1 s, doubling, at most 5 s); the broker redelivers the task it held. A
process that stops cleanly (exit status 0: a shutdown broadcast, a SIGTERM) is not
replaced, and nothing is once the pool is stopping.

A child's stdout, stderr and logs go to ``<log_dir>/<group>-<n>.log``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from multiprocessing.connection import wait as wait_for_sentinels
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Final

from icij_nb.app import App
from icij_nb.brokers.base import Broker
from icij_nb.errors import ConfigError
from icij_nb.pools import InKernelPool

logger = logging.getLogger(__name__)

#: how long running tasks may take to finish after SIGTERM before they are requeued
DEFAULT_GRACE_S: Final = 10.0
_PR_SET_PDEATHSIG: Final = 1
#: the pause before replacing a dead process, doubled while replacements die young
_RESPAWN_MIN_S: Final = 0.1
_RESPAWN_MAX_S: Final = 5.0
#: a process that lived this long died "old": the pause starts over
_STABLE_S: Final = 30.0

BrokerFactory = Callable[[App], Broker]


async def serve(
    app: App,
    broker: Broker,
    *,
    group: str | None,
    workers: int = 1,
    grace_s: float = DEFAULT_GRACE_S,
) -> None:
    """Run ``workers`` workers of ``group`` until a signal or a shutdown broadcast.

    On SIGTERM or SIGINT the workers take no new task; running ones get ``grace_s``
    seconds to finish, then they are requeued. Nothing is lost either way.
    """
    await broker.start()
    pool = InKernelPool(app, broker, group=group, workers=workers, runtime=None)
    await pool.start_async()
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop_requested.set)
    logger.info("serving group %r with %d worker(s)", group, workers)
    waiters = [
        asyncio.ensure_future(stop_requested.wait()),
        asyncio.ensure_future(pool.ended.wait()),
    ]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        if not pool.stopped:
            logger.info("stopping: running tasks get %.0fs to finish", grace_s)
            await pool.stop_async(finish_running=True, timeout_s=grace_s)
        await broker.close()
    logger.info("worker process %d stopped", os.getpid())


class ProcessPool:
    """Worker processes of one group on this machine, started from the notebook.

    Start one with ``tm.start_pool(group, workers=N, processes=True)``; it needs a
    broker other processes can reach (RabbitMQ).
    """

    def __init__(
        self,
        app: App,
        broker_factory: BrokerFactory,
        *,
        group: str | None,
        processes: int,
        workers_per_process: int = 1,
        log_dir: str | os.PathLike[str] | None = ".icij_nb/logs",
        grace_s: float = DEFAULT_GRACE_S,
    ) -> None:
        if processes < 1 or workers_per_process < 1:
            msg = (
                f"a process pool needs processes >= 1 and workers_per_process >= 1, "
                f"got {processes!r} and {workers_per_process!r}"
            )
            raise ConfigError(msg)
        if "fork" not in multiprocessing.get_all_start_methods():
            msg = "process pools need the 'fork' start method (Linux or macOS)"
            raise ConfigError(msg)
        self.app, self.group = app, group
        self.size = processes
        self._factory = broker_factory
        self._workers_per_process = workers_per_process
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._grace_s = grace_s
        self._owner_pid = os.getpid()
        # Per slot (0 .. processes - 1): its process, the write end of the pipe it
        # watches, when it started, and how many of its processes died young.
        self._procs: dict[int, BaseProcess] = {}
        self._pipes: dict[int, int] = {}
        self._born: dict[int, float] = {}
        self._young_deaths: dict[int, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ended = threading.Event()
        self._watcher: threading.Thread | None = None
        self._stopped = False
        #: how many dead processes the pool replaced
        self.restarts = 0

    def __repr__(self) -> str:
        alive = sum(1 for p in list(self._procs.values()) if p.is_alive())
        state = "stopped" if self._stopped else f"alive={alive}"
        return (
            f"<ProcessPool {self.group!r} processes={self.size} {state} "
            f"restarts={self.restarts} pids={self.pids}>"
        )

    def _repr_html_(self) -> str:
        import html

        return f"<code>{html.escape(repr(self))}</code>"

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids, one per slot (replacements included)."""
        procs = [self._procs[i] for i in sorted(self._procs)]
        return [p.pid for p in procs if p.pid is not None]

    @property
    def stopped(self) -> bool:
        """True once the pool was stopped."""
        return self._stopped

    @property
    def log_files(self) -> list[Path]:
        """Where each process writes its output and logs (none: inherited)."""
        paths = (self._log_path(i) for i in range(self.size))
        return [p for p in paths if p is not None]

    def _log_path(self, index: int) -> Path | None:
        if self._log_dir is None:
            return None
        return self._log_dir / f"{self.group or 'default'}-{index}.log"

    def start(self) -> None:
        """Fork the worker processes (call from a regular thread, not the loop)."""
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
        for index in range(self.size):
            self._spawn(index)
        self._watcher = threading.Thread(
            target=self._watch, name="icij_nb-pool-watch", daemon=True
        )
        self._watcher.start()
        _LIVE.add(self)

    async def start_async(self) -> None:
        """Awaitable twin of :meth:`start` (forks from a thread, not the loop)."""
        await asyncio.to_thread(self.start)

    def _spawn(self, index: int) -> None:
        old = self._pipes.pop(index, None)
        if old is not None:  # closed before the fork: no child may close a reused fd
            with contextlib.suppress(OSError):
                os.close(old)
        read_end, write_end = os.pipe()
        proc = multiprocessing.get_context("fork").Process(
            target=_child_main,
            args=(self, index, read_end, write_end),
            name=f"icij_nb-{self.group or 'default'}-{index}",
            daemon=True,
        )
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a threaded process. The child
            # touches none of the parent's threads or locks: it closes what it
            # inherited, starts its own loop, and talks to RabbitMQ only.
            warnings.filterwarnings(
                "ignore", message=".*fork.*", category=DeprecationWarning
            )
            proc.start()
        os.close(read_end)
        self._procs[index] = proc
        # The child watches the read end: when this process dies, the write end
        # closes with it and the child stops.
        self._pipes[index] = write_end
        self._born[index] = time.monotonic()

    def _watch(self) -> None:
        """Replace processes that die, until the pool stops or all ended cleanly."""
        ended_cleanly: set[int] = set()
        try:
            while not self._stopped:
                sentinels = []
                for index, proc in list(self._procs.items()):
                    if index in ended_cleanly:
                        continue
                    if proc.is_alive():
                        sentinels.append(proc.sentinel)
                    elif not self._replace(index):
                        ended_cleanly.add(index)
                if len(ended_cleanly) == self.size:
                    break  # every process chose to stop (a shutdown broadcast)
                wait_for_sentinels(sentinels, timeout=1.0)
        except Exception:
            logger.exception("pool %r: the process watcher failed", self.group)
        finally:
            self._ended.set()

    def _replace(self, index: int) -> bool:
        """Replace the dead process of ``index``; False if it stopped cleanly."""
        proc = self._procs[index]
        proc.join(0)
        code = proc.exitcode
        if code == 0 or self._stopped:
            return False
        lived = time.monotonic() - self._born[index]
        young = self._young_deaths.get(index, 0) + 1 if lived < _STABLE_S else 1
        self._young_deaths[index] = young
        pause = min(_RESPAWN_MIN_S * 2 ** (young - 1), _RESPAWN_MAX_S)
        how = (
            f"signal {signal.Signals(-code).name}"
            if code is not None and code < 0
            else f"status {code}"
        )
        logger.warning(
            "worker process %s of group %r ended with %s; restarting it in %.1fs",
            proc.pid,
            self.group,
            how,
            pause,
        )
        if self._wake.wait(pause):  # the pool is stopping
            return True
        with self._lock:
            if not self.stopped:  # stop() may have come during the pause
                self._spawn(index)
                self.restarts += 1
        return True

    def wait(self) -> None:
        """Block until every process has ended (a shutdown broadcast, a signal)."""
        while not self._ended.wait(0.5):  # a timeout: signal handlers run meanwhile
            pass

    def stop(self, *, timeout_s: float | None = None) -> None:
        """SIGTERM every process, wait for the grace period, then SIGKILL.

        Running tasks finish within the grace period or are requeued. Safe to call
        twice.
        """
        with self._lock:  # no replacement starts after this
            if self._stopped:
                return
            self._stopped = True
            self._wake.set()
            procs = list(self._procs.values())
        _LIVE.discard(self)
        wait_s = timeout_s if timeout_s is not None else self._grace_s + 5.0
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.join(wait_s)
            if proc.is_alive():
                logger.warning(
                    "worker process %s ignored SIGTERM; killing it", proc.pid
                )
                proc.kill()
                proc.join(5.0)
        for fd in self._pipes.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._pipes.clear()
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(5.0)
        self._ended.set()

    async def stop_async(
        self, *, finish_running: bool = True, timeout_s: float | None = None
    ) -> None:
        """Awaitable twin of :meth:`stop`.

        Processes always get their grace period to finish running tasks (SIGTERM
        first); ``finish_running`` is accepted for the pool protocol.
        """
        await asyncio.to_thread(self.stop, timeout_s=timeout_s)


def _child_main(pool: ProcessPool, index: int, read_end: int, write_end: int) -> None:
    os.close(write_end)
    for fd in pool._pipes.values():  # siblings' pipes, inherited: not ours to hold
        with contextlib.suppress(OSError):
            os.close(fd)
    _die_with_parent(read_end)
    log_path = pool._log_path(index)
    if log_path is not None:
        _redirect_output(log_path)
    app = pool.app
    broker = pool._factory(app)
    asyncio.run(
        serve(
            app,
            broker,
            group=pool.group,
            workers=pool._workers_per_process,
            grace_s=pool._grace_s,
        )
    )


def _die_with_parent(read_end: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    def watch() -> None:
        with contextlib.suppress(OSError):
            os.read(read_end, 1)  # returns b"" when the parent is gone
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="icij_nb-parent-watch", daemon=True).start()


def _redirect_output(path: Path) -> None:
    # The kernel's streams talk to Jupyter over sockets this process must not use.
    log = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    sys.stdout = sys.stderr = log
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(log)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(logging.INFO)


_LIVE: weakref.WeakSet[ProcessPool] = weakref.WeakSet()


@atexit.register
def _stop_live_pools() -> None:
    for pool in list(_LIVE):
        if pool._owner_pid != os.getpid():  # a forked child: not its pool
            continue
        with contextlib.suppress(Exception):
            pool.stop(timeout_s=5.0)
