"""AMQP benchmark: icij_nb on RabbitMQ against the raw aio-pika limit and icij-worker.

Run from the repository root, with a RabbitMQ on 127.0.0.1 (AMQP :5672, management
API :15672, guest/guest):

    .venv/bin/python benchmarks/amqp.py [--tasks 2000] [--repeats 3] [--json out.json]

Every run gets a fresh vhost, created and deleted through the management API. One
repeat measures, for P = 1 then P = 2 worker processes, back to back so that a slow
spell of the machine hits all three:

- raw limit: plain aio-pika request/reply. A requester publishes persistent requests
  with publisher confirms (500 in flight, as icij_nb publishes) to a quorum queue
  declared like icij's ``TASK.<group>`` (same exchange, arguments and policy); P
  replier processes (prefetch 1) publish a persistent, confirmed reply to a classic
  durable queue declared like ``MANAGER_EVENT``, then ack the request. Bodies are
  icij_nb's own JSON for a task and a result, encoded once.
- icij_nb: ``nb.connect(app, broker=<vhost url>, store=<SQLite file>)``, a no-op
  async task in group "bench", ``tm.start_pool("bench", workers=P,
  processes=True)``, then, timed, ``tm.gather(tm.map("noop", [{}] * tasks))``.
- icij-worker 0.20.2, in its own virtualenv (``scripts/icij_worker_venv.sh``): the
  same no-op task, a pool ``python -m icij_worker workers start ... -n P -g bench``,
  and a real ``AMQPTaskManager`` (FS storage) that saves and enqueues each task, as
  Datashare does, until every result is saved.

With P = 1 each also measures sequential round trips, one task at a time: the raw
request/reply, ``tm.submit("noop").result()``, and icij's save+enqueue until its
manager saved the result. Medians over repeats, with min and max, and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import aiormq.exceptions
from figures import Figure, percentile

import icij_nb as nb
from icij_nb.brokers import wire
from icij_nb.brokers.topology import (
    EXCHANGE_MANAGER_EVENTS,
    EXCHANGE_TASKS,
    MANAGER_EVENT_ARGUMENTS,
    QUEUE_MANAGER_EVENT,
    ROUTING_MANAGER_EVENTS,
    TASK_QUEUE_ARGUMENTS,
    ManagementApi,
    task_group_policy,
    task_queue_name,
)
from icij_nb.model import ResultEvent, Task, TaskState

HOST = "127.0.0.1"
AMQP_PORT = 5672
MANAGEMENT_PORT = 15672
USER = PASSWORD = "guest"
MANAGEMENT_URL = f"http://{USER}:{PASSWORD}@{HOST}:{MANAGEMENT_PORT}"
VHOST_PREFIX = "icij_nb-bench-"

GROUP = "bench"
TASK_NAME = "noop"
QUEUE = task_queue_name(GROUP)
PROCESS_COUNTS = (1, 2)
LATENCY_CALLS = 200  # raw and icij_nb
ICIJ_LATENCY_CALLS = 50
WARMUP_TASKS = 100  # per run, before the timed window, not reported
PUBLISH_CHUNK = 500  # raw requester: publishes in flight, as icij_nb's broker
ICIJ_BUDGET_S = 60.0  # an icij throughput run stops submitting after this
RUN_TIMEOUT_S = 120.0  # any single timed batch
START_TIMEOUT_S = 90.0  # pools to consume
STOP_GRACE_S = 5.0

REPO = Path(__file__).resolve().parents[1]
ICIJ_VENV_SCRIPT = REPO / "scripts" / "icij_worker_venv.sh"

# Targets (benchmarks/README.md, "AMQP"): icij_nb at least 10 times icij-worker's
# throughput and at least 70% of the raw aio-pika limit; a sequential p50 of 4 ms.
TARGET_VS_ICIJ = 10.0
TARGET_VS_RAW = 0.70
TARGET_P50_MS = 4.0

_MAIN_PID = os.getpid()


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- cleanup: vhosts and child processes -----------------------------------------------


class Management:
    """The few management-API calls the benchmark needs (urllib, no proxy)."""

    def __init__(self, url: str = MANAGEMENT_URL) -> None:
        self.url = url
        self.base = f"http://{HOST}:{MANAGEMENT_PORT}"
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self._auth = f"Basic {token}"
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.live: set[str] = set()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": self._auth, "Content-Type": "application/json"},
        )
        with self._opener.open(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None

    def overview(self) -> dict[str, Any]:
        return dict(self.call("GET", "/api/overview"))

    def create_vhost(self) -> str:
        name = f"{VHOST_PREFIX}{uuid.uuid4().hex[:10]}"
        self.live.add(name)
        self.call("PUT", f"/api/vhosts/{quote(name, safe='')}", {})
        self.call(
            "PUT",
            f"/api/permissions/{quote(name, safe='')}/{USER}",
            {"configure": ".*", "write": ".*", "read": ".*"},
        )
        return name

    def delete_vhost(self, name: str) -> None:
        with contextlib.suppress(urllib.error.HTTPError):
            self.call("DELETE", f"/api/vhosts/{quote(name, safe='')}")
        self.live.discard(name)

    def delete_all(self) -> None:
        for name in list(self.live):
            with contextlib.suppress(Exception):
                self.delete_vhost(name)


def amqp_url(vhost: str) -> str:
    return f"amqp://{USER}:{PASSWORD}@{HOST}:{AMQP_PORT}/{quote(vhost, safe='')}"


@contextlib.contextmanager
def fresh_vhost(management: Management) -> Iterator[str]:
    name = management.create_vhost()
    try:
        yield name
    finally:
        management.delete_vhost(name)


_CHILDREN: set[subprocess.Popen[bytes]] = set()


def start_child(cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """A child in its own session, so that stopping it reaches its whole group."""
    proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    _CHILDREN.add(proc)
    return proc


def stop_child(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM its process group, SIGKILL it after a grace period; reap it."""
    _CHILDREN.discard(proc)
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # also the group's orphans
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_GRACE_S)


def _stop_children() -> None:
    if os.getpid() == _MAIN_PID:
        for proc in list(_CHILDREN):
            stop_child(proc)


def _on_sigterm(signum: int, frame: Any) -> None:
    if os.getpid() != _MAIN_PID:  # a forked icij_nb worker, before its own handler
        os._exit(128 + signum)
    raise KeyboardInterrupt


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return "(no log)"


async def wait_consumers(
    url: str,
    queue: str,
    count: int,
    *,
    timeout_s: float = START_TIMEOUT_S,
    alive: Callable[[], None] | None = None,
) -> None:
    """Wait until ``queue`` exists and has ``count`` consumers (exact, not stats)."""
    connection = await aio_pika.connect(url, timeout=5)
    try:
        deadline = time.monotonic() + timeout_s
        seen = -1
        while time.monotonic() < deadline:
            if alive is not None:
                alive()
            channel = await connection.channel()
            try:
                declared = await channel.declare_queue(queue, passive=True)
                seen = declared.declaration_result.consumer_count or 0
            except aiormq.exceptions.ChannelNotFoundEntity:
                seen = -1  # not declared yet; the failed declare closed the channel
            else:
                await channel.close()
            if seen >= count:
                return
            await asyncio.sleep(0.1)
        msg = f"{queue}: {count} consumer(s) expected, saw {seen} in {timeout_s}s"
        raise TimeoutError(msg)
    finally:
        await connection.close()


# -- (a) raw limit: aio-pika request/reply ---------------------------------------------


def sample_bodies() -> tuple[bytes, bytes]:
    """icij_nb's JSON for a no-op task and its result: realistic body sizes."""
    task = Task(
        id=f"{TASK_NAME}-{uuid.uuid4().hex}",
        name=TASK_NAME,
        group=GROUP,
        args={},
        state=TaskState.QUEUED,
        max_attempts=4,
        attempts_left=4,
    )
    result = ResultEvent(task.id, 0, worker_id="amqp-bench-worker-host-1-1")
    return wire.encode_task(task), wire.encode_event(result)


async def raw_declare(url: str, vhost: str) -> None:
    """The topology of the raw run: icij's task and event queues, nothing else."""
    connection = await aio_pika.connect(url, timeout=5)
    try:
        channel = await connection.channel()
        direct = aio_pika.ExchangeType.DIRECT
        tasks_x = await channel.declare_exchange(EXCHANGE_TASKS, direct, durable=True)
        queue = await channel.declare_queue(
            QUEUE, durable=True, arguments=TASK_QUEUE_ARGUMENTS
        )
        await queue.bind(tasks_x, GROUP)
        events_x = await channel.declare_exchange(
            EXCHANGE_MANAGER_EVENTS, direct, durable=True
        )
        events = await channel.declare_queue(
            QUEUE_MANAGER_EVENT, durable=True, arguments=MANAGER_EVENT_ARGUMENTS
        )
        await events.bind(events_x, ROUTING_MANAGER_EVENTS)
    finally:
        await connection.close()
    await ManagementApi(MANAGEMENT_URL, vhost).put_policy(
        f"task-group-policy-{QUEUE}", task_group_policy(GROUP, None)
    )


async def replier_main(url: str, prefetch: int = 1) -> None:
    """One replier process: confirmed persistent reply, then the ack.

    With ``prefetch`` 1 a replier handles one request at a time (the raw limit of
    this script); with more, aio-pika runs its callbacks concurrently, so replies
    and their confirms are pipelined (the raw pipelined limit of race.py).

    Stops on SIGTERM or when its stdin closes (the benchmark ended or died).
    """
    _, reply = sample_bodies()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stdin = sys.stdin.fileno()

    def on_stdin() -> None:
        if not os.read(stdin, 4096):
            loop.remove_reader(stdin)
            stop.set()

    loop.add_reader(stdin, on_stdin)
    connection = await aio_pika.connect(url, timeout=5)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=prefetch)
        events_x = await channel.get_exchange(EXCHANGE_MANAGER_EVENTS, ensure=False)
        queue = await channel.get_queue(QUEUE, ensure=False)

        async def on_request(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await events_x.publish(
                aio_pika.Message(
                    reply,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    correlation_id=message.correlation_id,
                ),
                ROUTING_MANAGER_EVENTS,
            )
            await message.ack()

        await queue.consume(on_request)
        await stop.wait()
    finally:
        await connection.close()


async def raw_measure(url: str, n_tasks: int, latency_calls: int) -> dict[str, Any]:
    body, _ = sample_bodies()
    loop = asyncio.get_running_loop()
    connection = await aio_pika.connect(url, timeout=5)
    try:
        publisher = await connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=2_000)
        tasks_x = await publisher.get_exchange(EXCHANGE_TASKS, ensure=False)
        replies = await consumer.get_queue(QUEUE_MANAGER_EVENT, ensure=False)
        waiting: dict[str, asyncio.Future[None]] = {}

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            future = waiting.pop(message.correlation_id or "", None)
            if future is not None and not future.done():
                future.set_result(None)

        await replies.consume(on_reply)

        async def publish(correlation_id: str) -> None:
            message = aio_pika.Message(
                body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                correlation_id=correlation_id,
            )
            await tasks_x.publish(message, GROUP, mandatory=True)

        def expect(correlation_id: str) -> asyncio.Future[None]:
            future: asyncio.Future[None] = loop.create_future()
            waiting[correlation_id] = future
            return future

        async def batch(n: int) -> float:
            start = time.perf_counter()
            ids = [uuid.uuid4().hex for _ in range(n)]
            futures = [expect(i) for i in ids]
            for first in range(0, n, PUBLISH_CHUNK):
                chunk = ids[first : first + PUBLISH_CHUNK]
                await asyncio.gather(*(publish(i) for i in chunk))
            async with asyncio.timeout(RUN_TIMEOUT_S):
                await asyncio.gather(*futures)
            return time.perf_counter() - start

        await batch(WARMUP_TASKS)
        gc.collect()
        cpu_start = time.process_time()
        elapsed = await batch(n_tasks)
        cpu = time.process_time() - cpu_start
        samples = []
        for _ in range(latency_calls):
            start = time.perf_counter()
            correlation_id = uuid.uuid4().hex
            future = expect(correlation_id)
            await publish(correlation_id)
            async with asyncio.timeout(30):
                await future
            samples.append(time.perf_counter() - start)
        return {
            "tps": n_tasks / elapsed,
            "requester_cpu_us": cpu / n_tasks * 1e6,
            "latency_s": samples,
        }
    finally:
        await connection.close()


def raw_run(
    management: Management,
    processes: int,
    n_tasks: int,
    latency: int,
    tmp: Path,
    *,
    prefetch: int = 1,
) -> dict[str, Any]:
    with fresh_vhost(management) as vhost:
        url = amqp_url(vhost)
        asyncio.run(raw_declare(url, vhost))
        logs = [tmp / f"raw-replier-{vhost}-{i}.log" for i in range(processes)]
        repliers = []
        try:
            for path in logs:
                with path.open("wb") as out:
                    repliers.append(
                        start_child(
                            [
                                sys.executable,
                                __file__,
                                "--replier",
                                url,
                                "--replier-prefetch",
                                str(prefetch),
                            ],
                            stdin=subprocess.PIPE,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                        )
                    )

            def alive() -> None:
                for proc, path in zip(repliers, logs, strict=True):
                    if proc.poll() is not None:
                        msg = f"a raw replier exited ({proc.returncode}):\n{tail(path)}"
                        raise RuntimeError(msg)

            asyncio.run(wait_consumers(url, QUEUE, processes, alive=alive))
            return asyncio.run(raw_measure(url, n_tasks, latency))
        finally:
            for proc in repliers:
                stop_child(proc)


# -- (b) icij_nb -----------------------------------------------------------------------


def make_app() -> nb.App:
    app = nb.App("amqp-bench")

    @app.task(name=TASK_NAME, group=GROUP)
    async def noop() -> int:
        return 0

    return app


def nb_run(
    management: Management,
    app: nb.App,
    processes: int,
    n_tasks: int,
    latency: int,
    tmp: Path,
    *,
    concurrency: int = 1,
) -> dict[str, Any]:
    with fresh_vhost(management) as vhost:
        url = amqp_url(vhost)
        tm = nb.connect(app, broker=url, store=tmp / f"nb-{vhost}.sqlite3")
        try:
            pool = tm.start_pool(
                GROUP, workers=processes, processes=True, concurrency=concurrency
            )

            def alive() -> None:
                if pool.stopped or len(pool.pids) < processes:
                    msg = f"icij_nb pool not running: {pool!r}"
                    raise RuntimeError(msg)

            asyncio.run(wait_consumers(url, QUEUE, processes, alive=alive))
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:  # heartbeats: the pool is visible to the notebook
                frame = tm.workers()
                if int((frame["group"] == GROUP).sum()) >= processes:
                    break
                if time.monotonic() > deadline:
                    msg = f"tm.workers() shows {len(frame)} of {processes} workers"
                    raise TimeoutError(msg)
                time.sleep(0.05)
            warm = tm.gather(
                tm.map(TASK_NAME, [{}] * WARMUP_TASKS), timeout_s=RUN_TIMEOUT_S
            )
            if warm != [0] * WARMUP_TASKS:
                msg = "icij_nb: wrong results from the warm-up"
                raise RuntimeError(msg)
            gc.collect()
            start, cpu_start = time.perf_counter(), time.process_time()
            batch = tm.map(TASK_NAME, [{}] * n_tasks)
            results = tm.gather(batch, timeout_s=RUN_TIMEOUT_S)
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            if results != [0] * n_tasks:
                msg = "icij_nb: wrong results from gather"
                raise RuntimeError(msg)
            samples = []
            for _ in range(latency):
                start = time.perf_counter()
                tm.submit(TASK_NAME, {}).result(timeout_s=30)
                samples.append(time.perf_counter() - start)
            done = tm.counts.get(nb.TaskState.DONE, 0)
            expected = WARMUP_TASKS + n_tasks + latency
            if done != expected:
                msg = f"icij_nb: {done} tasks DONE, expected {expected}"
                raise RuntimeError(msg)
            return {
                "tps": n_tasks / elapsed,
                "manager_cpu_us": cpu / n_tasks * 1e6,
                "latency_s": samples,
            }
        finally:
            tm.close()


# -- (c) icij-worker 0.20.2 in its own virtualenv --------------------------------------

ICIJ_APP_MODULE = "icij_nb_bench_app"
ICIJ_APP_SOURCE = f'''\
"""The no-op task of benchmarks/amqp.py, for icij-worker (written by it)."""

from icij_worker import AsyncApp, TaskGroup

app = AsyncApp("icij_nb_bench")


@app.task(name="{TASK_NAME}", max_retries=3, group=TaskGroup(name="{GROUP}"))
async def noop() -> int:
    return 0  # not None: a None result kills icij's task manager
'''

# Runs with the icij venv's python; prints one JSON object. The manager is built by
# hand as in tests/interop/icij_manager_driver.py. Completion is observed by wrapping
# the manager's _save_result_event: no polling delay is added to icij's figures.
ICIJ_DRIVER_SOURCE = """\
import asyncio, json, logging, os, sys, tempfile, time, uuid
from pathlib import Path

from aiohttp import BasicAuth
from icij_worker import Task
from icij_worker.task_manager.amqp import AMQPTaskManager
from icij_worker.task_storage.fs import FSKeyValueStorage
from icij_worker.utils.amqp import AMQPManagementClient

from icij_nb_bench_app import app


def build_manager(db_path):
    env = os.environ
    host, port = env["ICIJ_WORKER_RABBITMQ_HOST"], env["ICIJ_WORKER_RABBITMQ_PORT"]
    user = env["ICIJ_WORKER_RABBITMQ_USER"]
    password = env["ICIJ_WORKER_RABBITMQ_PASSWORD"]
    vhost = env["ICIJ_WORKER_RABBITMQ_VHOST"]
    management = AMQPManagementClient(
        f"http://{host}:{env['ICIJ_WORKER_RABBITMQ_MANAGEMENT_PORT']}",
        rabbitmq_vhost=vhost,
        rabbitmq_auth=BasicAuth(user, password),
    )
    return AMQPTaskManager(
        app, FSKeyValueStorage(db_path), management,
        broker_url=f"amqp://{user}:{password}@{host}:{port}/{vhost}",
        connection_timeout_s=5.0,
    )


async def run(config):
    with tempfile.TemporaryDirectory() as tmp:
        tm = build_manager(Path(tmp) / "tasks.db")
        async with tm:
            loop = asyncio.get_running_loop()
            waiting = {}
            saved_result, saved_error = tm._save_result_event, tm._save_error_event

            async def on_result(event):
                await saved_result(event)
                future = waiting.pop(event.task_id, None)
                if future is not None and not future.done():
                    future.set_result(None)

            async def on_error(event):
                await saved_error(event)
                future = waiting.pop(event.task_id, None)
                if future is not None and not future.done():
                    future.set_exception(RuntimeError(f"icij task failed: {event}"))

            tm._save_result_event, tm._save_error_event = on_result, on_error

            async def submit():
                task_id = f"{config['task']}-{uuid.uuid4().hex}"
                future = loop.create_future()
                waiting[task_id] = future
                task = Task.create(task_id=task_id, task_name=config["task"], args={})
                await tm.save_task(task)
                await tm.enqueue(task)
                return future

            async def batch(n, budget_s):
                start = time.perf_counter()
                deadline = start + budget_s
                futures = []
                while len(futures) < n and time.perf_counter() < deadline:
                    futures.append(await submit())
                remaining = max(deadline - time.perf_counter(), 0.001)
                done, pending = await asyncio.wait(futures, timeout=remaining)
                for future in done:
                    future.result()  # raises if a task failed
                elapsed = time.perf_counter() - start
                loop_task = tm._consume_loop
                if loop_task is not None and loop_task.done():
                    raise RuntimeError(f"icij's manager loop died: {loop_task!r}")
                return {"submitted": len(futures), "completed": len(done),
                        "elapsed_s": elapsed}

            await batch(config["warmup"], config["budget_s"])
            out = await batch(config["tasks"], config["budget_s"])
            samples = []
            for _ in range(config["latency"]):
                start = time.perf_counter()
                future = await submit()
                await asyncio.wait_for(future, 30)
                samples.append(time.perf_counter() - start)
            out["latency_s"] = samples
            return out


logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))), flush=True)
"""


def icij_python() -> str:
    done = subprocess.run(
        ["bash", str(ICIJ_VENV_SCRIPT)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=900,
        check=False,
    )
    out = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0 or not out:
        err = done.stderr.decode(errors="replace")[-3000:]
        msg = f"{ICIJ_VENV_SCRIPT} failed ({done.returncode}):\n{err}"
        raise RuntimeError(msg)
    return out.splitlines()[-1]


def icij_env(vhost: str, tmp: Path) -> dict[str, str]:
    """As tests/interop/peers.py: no ICIJ_APP_*/ICIJ_WORKER_*/PYTHON* of ours."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ICIJ_APP_", "ICIJ_WORKER_", "PYTHON"))
    }
    env.update(
        {
            "ICIJ_WORKER_TYPE": "amqp",
            "ICIJ_WORKER_RABBITMQ_HOST": HOST,
            "ICIJ_WORKER_RABBITMQ_PORT": str(AMQP_PORT),
            "ICIJ_WORKER_RABBITMQ_MANAGEMENT_PORT": str(MANAGEMENT_PORT),
            "ICIJ_WORKER_RABBITMQ_USER": USER,
            "ICIJ_WORKER_RABBITMQ_PASSWORD": PASSWORD,
            "ICIJ_WORKER_RABBITMQ_VHOST": quote(vhost, safe=""),
            "PYTHONPATH": str(tmp),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def icij_run(
    management: Management,
    python: str,
    processes: int,
    n_tasks: int,
    latency: int,
    tmp: Path,
) -> dict[str, Any]:
    with fresh_vhost(management) as vhost:
        env = icij_env(vhost, tmp)
        log_path = tmp / f"icij-{vhost}.log"
        cmd = [python, "-m", "icij_worker", "workers", "start"]
        cmd += [f"{ICIJ_APP_MODULE}.app", "-n", str(processes), "-g", GROUP]
        with log_path.open("ab") as out:
            pool = start_child(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=tmp,
            )
        try:

            def alive() -> None:
                if pool.poll() is not None:
                    msg = f"icij pool exited ({pool.returncode}):\n{tail(log_path)}"
                    raise RuntimeError(msg)

            asyncio.run(wait_consumers(amqp_url(vhost), QUEUE, processes, alive=alive))
            config = {
                "task": TASK_NAME,
                "tasks": n_tasks,
                "latency": latency,
                "warmup": min(WARMUP_TASKS, 20),
                "budget_s": ICIJ_BUDGET_S,
            }
            with log_path.open("ab") as err:
                driver = start_child(
                    [python, str(tmp / "icij_nb_bench_driver.py"), json.dumps(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env=env,
                    cwd=tmp,
                )
            try:
                stdout, _ = driver.communicate(timeout=2 * ICIJ_BUDGET_S + 90)
            finally:
                stop_child(driver)
            if driver.returncode != 0 or not stdout.strip():
                msg = f"icij driver failed ({driver.returncode}):\n{tail(log_path)}"
                raise RuntimeError(msg)
            out_json: dict[str, Any] = json.loads(stdout.decode().splitlines()[-1])
            out_json["tps"] = out_json["completed"] / out_json["elapsed_s"]
            return out_json
        finally:
            stop_child(pool)


# -- the run ---------------------------------------------------------------------------


def make_figures() -> dict[str, Figure]:
    tps_target = f">= {TARGET_VS_RAW:.0%} of raw, >= {TARGET_VS_ICIJ:g}x icij-worker"
    figures: dict[str, Figure] = {}
    for p in PROCESS_COUNTS:
        figures[f"raw_{p}"] = Figure(f"raw limit, P={p}", "tasks/s")
        figures[f"nb_{p}"] = Figure(f"icij_nb map+gather, P={p}", "tasks/s", tps_target)
        figures[f"icij_{p}"] = Figure(f"icij-worker, P={p}", "tasks/s")
    figures |= {
        "raw_p50": Figure("raw round trip p50", "ms"),
        "raw_p99": Figure("raw round trip p99", "ms"),
        "nb_p50": Figure(
            "icij_nb submit().result() p50", "ms", f"<= {TARGET_P50_MS:g} ms"
        ),
        "nb_p99": Figure("icij_nb submit().result() p99", "ms"),
        "icij_p50": Figure("icij-worker round trip p50", "ms"),
        "icij_p99": Figure("icij-worker round trip p99", "ms"),
    }
    # CPU time of the submitting process over the timed window (its worker
    # processes excluded): steadier than tasks/s on a busy machine.
    for p in PROCESS_COUNTS:
        figures[f"raw_cpu_{p}"] = Figure(f"raw requester CPU, P={p}", "us/task")
        figures[f"nb_cpu_{p}"] = Figure(f"icij_nb manager CPU, P={p}", "us/task")
    return figures


@dataclass
class Results:
    figures: dict[str, Figure]
    icij_tasks: int
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> Figure:
        return self.figures[key]

    def paired_ratio(self, ours: str, base: str) -> float:
        """Median of the per-repeat ratios: each pair ran back to back."""
        pairs = zip(self[ours].values, self[base].values, strict=True)
        return statistics.median(o / b for o, b in pairs)


def run_repeat(
    management: Management,
    app: nb.App,
    python: str | None,
    params: dict[str, Any],
    tmp: Path,
    results: Results,
) -> None:
    figures = results.figures
    n_tasks = params["tasks"]
    for p in PROCESS_COUNTS:
        latency = LATENCY_CALLS if p == 1 else 0
        raw = raw_run(management, p, n_tasks, latency, tmp)
        figures[f"raw_{p}"].values.append(raw["tps"])
        figures[f"raw_cpu_{p}"].values.append(raw["requester_cpu_us"])
        ours = nb_run(management, app, p, n_tasks, latency, tmp)
        figures[f"nb_{p}"].values.append(ours["tps"])
        figures[f"nb_cpu_{p}"].values.append(ours["manager_cpu_us"])
        line = f"  P={p}: raw {raw['tps']:,.0f}, icij_nb {ours['tps']:,.0f}"
        if python is not None:
            icij_latency = ICIJ_LATENCY_CALLS if p == 1 else 0
            theirs = icij_run(
                management, python, p, results.icij_tasks, icij_latency, tmp
            )
            figures[f"icij_{p}"].values.append(theirs["tps"])
            line += f", icij-worker {theirs['tps']:,.0f} tasks/s"
            if theirs["completed"] < results.icij_tasks:
                note = (
                    f"icij-worker P={p} finished {theirs['completed']} of "
                    f"{results.icij_tasks} tasks within {ICIJ_BUDGET_S:g}s "
                    f"(submitted {theirs['submitted']}); tasks/s counts those"
                )
                results.notes.append(note)
                line += f" ({theirs['completed']}/{results.icij_tasks} done)"
            if p == 1:
                samples = theirs["latency_s"]
                figures["icij_p50"].values.append(percentile(samples, 0.5) * 1e3)
                figures["icij_p99"].values.append(percentile(samples, 0.99) * 1e3)
        if p == 1:
            for key, samples in (("raw", raw["latency_s"]), ("nb", ours["latency_s"])):
                figures[f"{key}_p50"].values.append(percentile(samples, 0.5) * 1e3)
                figures[f"{key}_p99"].values.append(percentile(samples, 0.99) * 1e3)
            line += (
                f"; p50 raw {figures['raw_p50'].values[-1]:.2f}, icij_nb "
                f"{figures['nb_p50'].values[-1]:.2f} ms"
            )
            if python is not None:
                line += f", icij-worker {figures['icij_p50'].values[-1]:.2f} ms"
        log(line)


def run(params: dict[str, Any]) -> Results:
    management = Management()
    try:
        management.overview()
    except (OSError, ValueError) as exc:
        msg = (
            f"no RabbitMQ management API at http://{HOST}:{MANAGEMENT_PORT} ({exc}); "
            "start RabbitMQ (scripts/test does) with the management plugin"
        )
        raise SystemExit(msg) from None
    python = None
    if not params["skip_icij"]:
        log("finding icij-worker's virtualenv (scripts/icij_worker_venv.sh)")
        python = icij_python()
    app = make_app()
    results = Results(make_figures(), icij_tasks=params["icij_tasks"])
    cwd = Path.cwd()
    atexit.register(management.delete_all)
    try:
        with tempfile.TemporaryDirectory(prefix="icij_nb-amqp-bench-") as tmp_dir:
            tmp = Path(tmp_dir)
            (tmp / f"{ICIJ_APP_MODULE}.py").write_text(ICIJ_APP_SOURCE)
            (tmp / "icij_nb_bench_driver.py").write_text(ICIJ_DRIVER_SOURCE)
            os.chdir(tmp)  # process pools write .icij_nb/logs in the working dir
            for index in range(params["repeats"]):
                log(f"repeat {index + 1}/{params['repeats']}")
                run_repeat(management, app, python, params, tmp, results)
    finally:
        os.chdir(cwd)
        _stop_children()
        management.delete_all()
    if python is None:
        for p in PROCESS_COUNTS:
            del results.figures[f"icij_{p}"]
        del results.figures["icij_p50"], results.figures["icij_p99"]
    return results


# -- report ----------------------------------------------------------------------------


def _check(value: float, paired: float | None, target: str, met: bool | None) -> Any:
    return {"value": value, "paired": paired, "target": target, "met": met}


def verdicts(results: Results) -> dict[str, dict[str, Any]]:
    """Ratios and target checks on medians (and the median of paired ratios)."""
    checks: dict[str, dict[str, Any]] = {}
    figures = results.figures
    for p in PROCESS_COUNTS:
        if f"icij_{p}" in figures:
            ratio = results[f"nb_{p}"].median / results[f"icij_{p}"].median
            checks[f"icij_nb / icij-worker, P={p}"] = _check(
                ratio,
                results.paired_ratio(f"nb_{p}", f"icij_{p}"),
                f">= {TARGET_VS_ICIJ:g}",
                ratio >= TARGET_VS_ICIJ,
            )
    for p in PROCESS_COUNTS:
        ratio = results[f"nb_{p}"].median / results[f"raw_{p}"].median
        checks[f"icij_nb / raw limit, P={p}"] = _check(
            ratio,
            results.paired_ratio(f"nb_{p}", f"raw_{p}"),
            f">= {TARGET_VS_RAW:.2f}",
            ratio >= TARGET_VS_RAW,
        )
    p50 = results["nb_p50"].median
    checks["icij_nb p50 ms"] = _check(
        p50, None, f"<= {TARGET_P50_MS:g}", p50 <= TARGET_P50_MS
    )
    checks["icij_nb p50 / raw p50"] = _check(
        p50 / results["raw_p50"].median,
        results.paired_ratio("nb_p50", "raw_p50"),
        "(reported)",
        None,
    )
    if "icij_p50" in figures:
        checks["icij-worker p50 / icij_nb p50"] = _check(
            results["icij_p50"].median / p50,
            results.paired_ratio("icij_p50", "nb_p50"),
            "(reported)",
            None,
        )
    return checks


def machine(management_overview: dict[str, Any] | None) -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    overview = management_overview or {}
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "rabbitmq": overview.get("rabbitmq_version"),
        "erlang": overview.get("erlang_version"),
        "aio_pika": aio_pika.__version__,
        "icij_nb": nb.__version__,
    }


def _fmt(value: float, unit: str) -> str:
    if unit == "tasks/s":
        return f"{value:,.0f}"
    return f"{value:.1f}" if unit == "us/task" else f"{value:.2f}"


def report(results: Results, info: dict[str, Any], params: dict[str, Any]) -> str:
    lines = [
        f"icij_nb AMQP benchmark, {info['date']}",
        f"machine: {info['cpu_count']} CPUs ({info['usable_cpus']} usable), load "
        f"{info['load_avg']}, Python {info['python']}, RabbitMQ {info['rabbitmq']}, "
        f"aio-pika {info['aio_pika']}",
        f"tasks per throughput run: {params['tasks']:,} (icij-worker: "
        f"{results.icij_tasks:,}); round trips: {LATENCY_CALLS} (icij-worker: "
        f"{ICIJ_LATENCY_CALLS}), P=1; repeats: {params['repeats']}; a fresh vhost, "
        "pool and manager per run (start-up not timed)",
        "",
        f"{'figure':<34} {'unit':>8} {'median':>10} {'min':>10} {'max':>10}  target",
        "-" * 104,
    ]
    for figure in results.figures.values():
        lines.append(
            f"{figure.label:<34} {figure.unit:>8} "
            f"{_fmt(figure.median, figure.unit):>10} "
            f"{_fmt(min(figure.values), figure.unit):>10} "
            f"{_fmt(max(figure.values), figure.unit):>10}  {figure.target}"
        )
    lines += [
        "",
        f"{'ratio / check (of medians)':<34} {'value':>10} {'paired':>10}  target",
        "-" * 80,
    ]
    for name, verdict in verdicts(results).items():
        met = verdict["met"]
        mark = "" if met is None else ("  MET" if met else "  MISSED")
        paired = verdict["paired"]
        shown_paired = "" if paired is None else f"{paired:.2f}"
        lines.append(
            f"{name:<34} {verdict['value']:>10.2f} {shown_paired:>10}  "
            f"{verdict['target']}{mark}"
        )
    lines += [f"note: {note}" for note in results.notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--icij-tasks",
        type=int,
        default=None,
        help="tasks per icij-worker throughput run (default: --tasks)",
    )
    parser.add_argument(
        "--skip-icij", action="store_true", help="leave icij-worker out (profiling)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--replier", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument(
        "--replier-prefetch", type=int, default=1, help=argparse.SUPPRESS
    )
    options = parser.parse_args(argv)
    if options.replier:
        asyncio.run(replier_main(options.replier, options.replier_prefetch))
        return 0
    icij_tasks = options.icij_tasks or options.tasks
    if min(options.tasks, options.repeats, icij_tasks) < 1:
        parser.error("--tasks, --icij-tasks and --repeats must be >= 1")
    signal.signal(signal.SIGTERM, _on_sigterm)
    atexit.register(_stop_children)
    params = {
        "tasks": options.tasks,
        "icij_tasks": icij_tasks,
        "repeats": options.repeats,
        "skip_icij": options.skip_icij,
        "latency_calls": LATENCY_CALLS,
        "icij_latency_calls": ICIJ_LATENCY_CALLS,
        "warmup_tasks": WARMUP_TASKS,
        "icij_budget_s": ICIJ_BUDGET_S,
    }
    started = time.perf_counter()
    try:
        results = run(params)
    except KeyboardInterrupt:
        log("interrupted: child processes stopped, vhosts deleted")
        return 130
    log(f"benchmark took {time.perf_counter() - started:.1f}s")
    try:
        overview: dict[str, Any] | None = Management().overview()
    except (OSError, ValueError):
        overview = None
    info = machine(overview)
    print(report(results, info, params), flush=True)
    if options.json is not None:
        payload = {
            "machine": info,
            "params": params,
            "figures": {k: f.as_dict() for k, f in results.figures.items()},
            "checks": verdicts(results),
            "notes": results.notes,
        }
        options.json.write_text(json.dumps(payload, indent=2) + "\n")
        log(f"results written to {options.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
