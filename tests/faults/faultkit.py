"""Helpers of the fault suite: a private RabbitMQ node, processes, raw AMQP, audits.

- :class:`PrivateRabbit`: a RabbitMQ node of our own (its own ports, data and log
  directories, Erlang cookie and node name), which the restart scenarios may stop
  and start without touching the system broker other suites use.
- processes are read from ``/proc`` (a zombie counts as gone: it runs nothing).
- :class:`RawAmqp`: one AMQP connection on a thread of its own, to publish bodies as
  they are and to count or take messages, exactly (passive declares, no statistics
  lag), from blocking tests.
- :func:`audit`: the end state of a run, from the store and the broker: what the
  scenario table in docs/reliability.md reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import aiormq
from rabbit import RabbitMQ, Vhost

import icij_nb as nb
from icij_nb.testing import children_of, wait_until
from icij_nb.testing import process_alive as alive

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
APP_SPEC = f"{HERE / 'fault_app.py'}:app"
CLI = [sys.executable, "-m", "icij_nb.cli"]
WAIT_S = 60.0
RABBIT_BIN = Path(os.environ.get("ICIJ_NB_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
NODE_START_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the private RabbitMQ node ------------------------------------------------------


class PrivateRabbit:
    """A RabbitMQ node of this test session, on free ports of 127.0.0.1.

    Everything it writes lives under ``base``: data (mnesia), logs, config, and a
    HOME holding the Erlang cookie that both the node and ``rabbitmqctl`` read.
    """

    def __init__(
        self,
        base: Path,
        *,
        cookie: str | None = None,
        extra_config: str = "",
        erl_flags: str = "",
    ) -> None:
        self.base = base
        self.cookie = cookie or uuid.uuid4().hex
        self.extra_config = extra_config
        #: Erlang flags of the node and of its ``rabbitmqctl`` (``ERL_FLAGS``)
        self.erl_flags = erl_flags
        self.name = f"icijfault{uuid.uuid4().hex[:6]}@localhost"
        self.amqp_port, self.management_port, self.dist_port = (
            free_port(),
            free_port(),
            free_port(),
        )
        self.broker = RabbitMQ(
            amqp_url=f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/",
            management_url=f"http://guest:guest@127.0.0.1:{self.management_port}",
        )
        self._server: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._write_config()

    def _write_config(self) -> None:
        home = self.base / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.amqp_port}\n"
            f"management.tcp.port = {self.management_port}\n"
            "management.tcp.ip = 127.0.0.1\n"
            "loopback_users = none\n"
            # Statistics every second: management views lag less.
            "collect_statistics_interval = 1000\n" + self.extra_config
        )
        (self.base / "enabled_plugins").write_text("[rabbitmq_management].\n")
        # Our own env file: the system's would give the node the system's name.
        (self.base / "rabbitmq-env.conf").write_text("ERL_EPMD_ADDRESS=127.0.0.1\n")

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update(
            HOME=str(self.base / "home"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.base / "node.pid"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_FLAGS=f"-kernel inet_dist_use_interface {{127,0,0,1}} {self.erl_flags}",
        )
        return env

    def start(self) -> None:
        """Start the node and wait until AMQP and the management API answer."""
        self.launch()
        self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until AMQP and the management API answer (after :meth:`launch`)."""
        wait_until(self._ready, timeout_s=NODE_START_S, interval_s=0.2, what="the node")

    @property
    def running(self) -> bool:
        """True between :meth:`launch` and :meth:`stop` or :meth:`kill`."""
        return self._server is not None

    def kill(self) -> None:
        """``kill -9`` the node and every process of its group (no clean stop)."""
        server, self._server = self._server, None
        if server is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)

    def suspend(self) -> None:
        """Freeze the node (SIGSTOP to its process group): a partition, seen
        from its peers and clients, that heals with :meth:`resume`."""
        assert self._server is not None
        os.killpg(self._server.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._server is not None
        os.killpg(self._server.pid, signal.SIGCONT)

    def launch(self) -> None:
        """Start the node's server, without waiting for it."""
        log = (self.base / "server.out").open("ab")
        self._server = subprocess.Popen(
            [str(RABBIT_BIN / "rabbitmq-server")],
            env=self.env,
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def _ready(self) -> bool:
        if self._server is not None and self._server.poll() is not None:
            tail = (self.base / "server.out").read_text(errors="replace")[-3000:]
            raise AssertionError(f"rabbitmq-server exited: {tail}")
        try:
            with socket.create_connection(("127.0.0.1", self.amqp_port), 1.0):
                pass
            overview = self.broker.api("GET", "/api/overview")
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return bool(overview and overview.get("node") == self.name)

    def ctl(self, *args: str, timeout_s: float = 90.0) -> str:
        done = subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-n", self.name, *args],
            env=self.env,
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"rabbitmqctl {' '.join(args)}: {done.returncode}\n"
                f"{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def stop(self) -> None:
        """Stop the node gracefully (killed if it does not stop in time)."""
        server, self._server = self._server, None
        if server is None:
            return
        try:
            self.ctl("stop", timeout_s=60)
            server.wait(timeout=60)
        except (AssertionError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)

    def restart(self) -> None:
        """Stop the node and start it again (its durable queues keep their data)."""
        self.stop()
        self.restarts += 1
        self.start()

    def make_vhost(self, label: str) -> Vhost:
        from rabbit import create_vhost

        return create_vhost(self.broker, label)

    def create_user(self, user: str, password: str, tags: str) -> None:
        from urllib.parse import quote

        self.broker.api(
            "PUT", f"/api/users/{quote(user)}", {"password": password, "tags": tags}
        )

    def grant(self, vhost: Vhost, user: str, **perms: str) -> None:
        from urllib.parse import quote

        body = {"configure": ".*", "write": ".*", "read": ".*", **perms}
        self.broker.api("PUT", f"/api/permissions/{vhost.quoted}/{quote(user)}", body)


def rabbit_available() -> str | None:
    """Why a private node cannot be started here, or None."""
    if not (RABBIT_BIN / "rabbitmq-server").exists():
        return (
            f"no rabbitmq-server in {RABBIT_BIN} (set ICIJ_NB_RABBITMQ_BIN to the "
            "directory of rabbitmq-server and rabbitmqctl)"
        )
    if shutil.which("erl") is None:
        return "no Erlang runtime (erl) on PATH"
    return None


# -- processes, from /proc ------------------------------------------------------------


def processes_with(marker: str) -> set[int]:
    """Live processes whose command line or environment mentions ``marker``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                data = (entry / part).read_bytes()
            except OSError:
                continue
            if marker.encode() in data and alive(int(entry.name)):
                found.add(int(entry.name))
                break
    return found


def kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def pid_of_worker(worker_id: str | None) -> int:
    """The process id in a worker id (``<app>-worker-<host>-<pid>-<index>``)."""
    assert worker_id is not None
    return int(worker_id.rsplit("-", 2)[1])


# -- executions noted by the tasks -----------------------------------------------------


def executions(log: Path) -> list[tuple[str, str, int]]:
    """``(start|end, key, pid)`` per line the fault app's tasks wrote, in order."""
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        what, key, pid = line.split()
        found.append((what, key, int(pid)))
    return found


def starts(log: Path) -> Counter[str]:
    """How many times each task key started."""
    return Counter(key for what, key, _ in executions(log) if what == "start")


# -- a CLI pool ------------------------------------------------------------------------


class CliPool:
    """``icij-nb workers start`` in its own process group, its output in a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.log_path = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*CLI, "workers", "start", APP_SPEC, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
                cwd=log.parent,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def pids(self) -> set[int]:
        """The CLI's process and its worker processes (for -n > 1)."""
        return {self.proc.pid} | children_of(self.proc.pid)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)


# -- raw AMQP, from blocking tests -----------------------------------------------------


class RawAmqp:
    """One AMQP connection to a vhost, on a loop thread of its own."""

    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="raw-amqp", daemon=True
        )
        self._thread.start()
        self._url = url
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel_: aio_pika.abc.AbstractChannel | None = None

    async def _channel(self) -> aio_pika.abc.AbstractChannel:
        """The channel, on a new connection after a broker restart."""
        if self._connection is None or self._connection.is_closed:
            self._connection = await aio_pika.connect(self._url, timeout=10)
            self._channel_ = None
        if self._channel_ is None or self._channel_.is_closed:
            self._channel_ = await self._connection.channel()
        return self._channel_

    def _run(self, coro: Coroutine[Any, Any, T], timeout_s: float = WAIT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def publish(self, exchange: str, routing_key: str, body: bytes) -> None:
        async def publish() -> None:
            channel = await self._channel()
            target = await channel.get_exchange(exchange, ensure=False)
            await target.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key,
                mandatory=False,
            )

        self._run(publish())

    def count(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of ``queue``, exact; (0, 0) if absent."""

        async def ask() -> tuple[int, int]:
            await self._channel()
            assert self._connection is not None
            channel = await self._connection.channel()
            try:
                declared = await channel.declare_queue(queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return 0, 0
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()
            result = declared.declaration_result
            return int(result.message_count or 0), int(result.consumer_count or 0)

        return self._run(ask())

    def ready(self, queue: str) -> int:
        return self.count(queue)[0]

    def take(self, queue: str) -> list[bytes]:
        """Every ready message body of ``queue``, removed from it."""

        async def drain() -> list[bytes]:
            q = await (await self._channel()).declare_queue(queue, passive=True)
            bodies = []
            while (message := await q.get(no_ack=True, fail=False)) is not None:
                bodies.append(message.body)
            return bodies

        return self._run(drain())

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._run(self._connection.close(), timeout_s=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


# -- audits and figures ----------------------------------------------------------------

#: queues a run must leave empty once every consumer is gone
WORK_QUEUES = ("TASK", "TASK.cpu", "MANAGER_EVENT")


def drain(raw: RawAmqp, queue: str = "TASK.cpu") -> None:
    """Wait until the pools took every message of ``queue``, copies included.

    A redelivered copy of a task that another worker finished may still wait
    there when the task is DONE: it runs again (a re-run), and its result is
    ignored. Stop the pools after this, letting running tasks finish.
    """
    wait_until(
        lambda: raw.ready(queue) == 0,
        timeout_s=WAIT_S,
        interval_s=0.05,
        what=f"the pools to take every message of {queue}",
    )


@dataclass
class Audit:
    """The end state of a run, read from the store and the broker."""

    submitted: int
    done: int
    error: int
    cancelled: int
    unfinished: int
    missing: int
    duplicates: int
    wrong_results: int
    left_in_queues: dict[str, int] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        """Tasks not in a ready state, or not in the store at all."""
        return self.unfinished + self.missing

    def figures(self) -> dict[str, int]:
        return {
            "submitted": self.submitted,
            "done": self.done,
            "error": self.error,
            "cancelled": self.cancelled,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "wrong_results": self.wrong_results,
            "left_in_queues": sum(self.left_in_queues.values()),
        }


def audit(
    frame: Any,
    expected: dict[str, Any],
    raw: RawAmqp | None = None,
    queues: Iterable[str] = WORK_QUEUES,
) -> Audit:
    """Compare the store's frame with the expected ``{task_id: result}``.

    ``duplicates`` counts store rows beyond one per task id; ``wrong_results``
    DONE tasks whose result is not the expected one. With ``raw``, the ready
    messages left in ``queues`` (call it once no consumer holds anything: what a
    consumer held unacked is back in its queue by then).
    """
    rows = frame[frame["id"].isin(list(expected))]
    ids = Counter(rows["id"])
    states = dict(zip(rows["id"], rows["state"].astype(str), strict=True))
    results = dict(zip(rows["id"], rows["result"], strict=True))
    done = [i for i in expected if states.get(i) == "DONE"]
    left = {q: raw.ready(q) for q in queues} if raw is not None else {}
    return Audit(
        submitted=len(expected),
        done=len(done),
        error=sum(1 for s in states.values() if s == "ERROR"),
        cancelled=sum(1 for s in states.values() if s == "CANCELLED"),
        unfinished=sum(
            1 for s in states.values() if s not in ("DONE", "ERROR", "CANCELLED")
        ),
        missing=sum(1 for i in expected if i not in states),
        duplicates=sum(n - 1 for n in ids.values()),
        wrong_results=sum(1 for i in done if results[i] != expected[i]),
        left_in_queues=left,
    )


@dataclass
class Figures:
    """What each scenario measured, written to ``build/fault-figures.json``."""

    path: Path
    scenarios: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, scenario: str, **values: Any) -> None:
        self.scenarios.setdefault(scenario, {}).update(values)

    def write(self) -> None:
        if not self.scenarios:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            old = json.loads(self.path.read_text())
        except (OSError, ValueError):
            old = {}
        merged = dict(old.get("scenarios", {}))
        merged.update(self.scenarios)
        data = {
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "scenarios": dict(sorted(merged.items())),
        }
        self.path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def connect(app: nb.App, url: str, store: Any, **kwargs: Any) -> nb.TaskManager:
    return nb.connect(app, broker=url, store=store, **kwargs)
