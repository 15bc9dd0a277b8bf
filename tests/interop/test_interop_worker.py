"""icij-worker 0.20.2's own task manager drives an icij_nb pool.

Our pool is what a Datashare user would run: ``icij-nb workers start
tests/interop/nb_app.py:app [-g grp] --broker URL`` as a subprocess, in the test's
vhost. icij's ``AMQPTaskManager`` runs in the icij virtualenv (the ``icij_manager``
fixture, ``icij_manager_driver.py``) with ``icij_app.py`` as its registry, so it
sends what it would send to its own workers: icij's retry counts (``max_retries=3``
is three attempts, docs/protocol.md §3.3), no ``maxRetries`` for bare tasks. The driver
fails the test when the icij TM's event loop dies (docs/protocol.md §6 #6): every event
our worker sends must parse and apply in icij's models.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from peers import stop
from rabbit import Vhost

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(300)]

INTEROP_DIR = Path(__file__).resolve().parent
REPO = INTEROP_DIR.parents[1]
NB_APP = f"{INTEROP_DIR / 'nb_app.py'}:app"
START_TIMEOUT_S = 60.0
LOG_TAIL_CHARS = 4000
SPY_QUEUE = "interop-spy-manager-events"


@dataclass
class NbPool:
    """A running ``icij-nb workers start`` command."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    group: str | None

    @property
    def queue(self) -> str:
        return "TASK" if self.group is None else f"TASK.{self.group}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except FileNotFoundError:
            return "(no log)"

    def wait_ready(self, vhost: Vhost) -> None:
        """Wait until the pool consumes its task queue and its worker-event queue."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"icij-nb pool exited with status {self.proc.returncode} before "
                    f"consuming {self.queue}; log {self.log_path}:\n{self.log()}"
                )
            queues = [c["queue"]["name"] for c in vhost.consumers()]
            return self.queue in queues and any(
                q.startswith("WORKER_EVENT-") for q in queues
            )

        vhost.wait_until(ready, START_TIMEOUT_S, what=f"icij-nb on {self.queue}")


def _icij_nb_command() -> list[str]:
    script = Path(sys.executable).with_name("icij-nb")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "icij_nb.cli"]


@pytest.fixture
def nb_pool(vhost: Vhost, tmp_path: Path) -> Iterator[Callable[..., NbPool]]:
    """``nb_pool(group=None)``: ``icij-nb workers start`` serving ``vhost``, ready
    when returned, stopped (SIGTERM, then SIGKILL) at teardown.
    """
    pools: list[NbPool] = []

    def start(group: str | None = None) -> NbPool:
        cmd = [*_icij_nb_command(), "workers", "start", NB_APP]
        cmd += ["--broker", vhost.amqp_url, "--management-url", vhost.management_url]
        if group is not None:
            cmd += ["-g", group]
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ICIJ_NB_AMQP", "ICIJ_APP_", "ICIJ_WORKER_"))
        }
        env |= {"ICIJ_NB_INTEROP_STATE_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
        log_path = tmp_path / f"icij-nb-pool-{len(pools)}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )
        pool = NbPool(proc, log_path, group)
        pools.append(pool)
        pool.wait_ready(vhost)
        return pool

    yield start
    for pool in reversed(pools):
        stop(pool.proc)


# A spy: a queue of ours bound where workers publish events, read after the run.


async def _declare_spy(vhost: Vhost) -> None:
    connection = await aio_pika.connect(vhost.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(SPY_QUEUE, durable=False)
        await queue.bind("exchangeManagerEvents", "routingKeyManagerEvents")


async def _drain_spy(vhost: Vhost) -> list[dict[str, Any]]:
    bodies = []
    connection = await aio_pika.connect(vhost.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(SPY_QUEUE, passive=True)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            bodies.append(json.loads(message.body))
    return bodies


@contextlib.contextmanager
def spy_on_events(vhost: Vhost) -> Iterator[list[dict[str, Any]]]:
    """Collect, in order, every event workers publish while the block runs."""
    asyncio.run(_declare_spy(vhost))
    events: list[dict[str, Any]] = []
    yield events
    events.extend(asyncio.run(_drain_spy(vhost)))


# Scenarios


def test_hello_and_a_none_result_end_done(nb_pool, icij_manager):
    nb_pool()

    run = icij_manager(
        [
            {"name": "hello", "args": {"greeted": "world"}},
            # icij's own worker leaves "value" out of a None result and its TM dies
            # on that (docs/protocol.md §6 #1); ours always sends it. icij_app.py has no
            # such task: the driver registers a stub name for the TM.
            {"name": "returns_nothing", "args": {}},
        ]
    )

    hello, nothing = run.tasks
    assert (hello["state"], hello["result"], hello["errors"]) == (
        "DONE",
        "hello world",
        [],
    )
    assert hello["progress"] == 1.0
    assert (nothing["state"], nothing["has_result"], nothing["result"]) == (
        "DONE",
        True,
        None,
    )


def test_camel_case_args_reach_snake_case_parameters(nb_pool, icij_manager):
    # icij's worker snake-cases every argument name before the call (docs/protocol.md
    # §5.1): Datashare's Java side sends camelCase names.
    nb_pool()

    run = icij_manager([{"name": "with_progress", "args": {"nSteps": 3}}])

    [task] = run.tasks
    assert (task["state"], task["result"], task["errors"]) == ("DONE", 3, [])


def test_flaky_tasks_retry_until_the_icij_manager_stops(nb_pool, icij_manager):
    nb_pool()

    # icij_app.py registers flaky with max_retries=3: three attempts in all.
    run = icij_manager(
        [
            {"name": "flaky", "args": {"fail_times": 1, "key": "once"}},
            {"name": "flaky", "args": {"fail_times": 2, "key": "twice"}},
            {"name": "flaky", "args": {"fail_times": 3, "key": "always"}},
        ]
    )

    once, twice, always = run.tasks
    assert (once["state"], once["result"]) == ("DONE", "succeeded after 1 failures")
    assert [(e["name"], e["message"], e["cause"]) for e in once["errors"]] == [
        ("Flaky", "attempt 1 failed", "'root cause'")
    ]
    assert [e["retries_left"] for e in once["errors"]] == [2]
    assert (twice["state"], twice["result"]) == ("DONE", "succeeded after 2 failures")
    assert [e["retries_left"] for e in twice["errors"]] == [2, 1]
    assert always["state"] == "ERROR"
    assert [e["retries_left"] for e in always["errors"]] == [2, 1, 0]
    assert [e["message"] for e in always["errors"]] == [
        "attempt 1 failed",
        "attempt 2 failed",
        "attempt 3 failed",
    ]
    assert always["retries_left"] == 0


def test_progress_reaches_the_icij_manager(nb_pool, icij_manager, vhost):
    nb_pool()

    with spy_on_events(vhost) as events:
        run = icij_manager([{"name": "with_progress", "args": {"n_steps": 4}}])

    [task] = run.tasks
    assert (task["state"], task["result"], task["progress"]) == ("DONE", 4, 1.0)
    mine = [e for e in events if e.get("taskId") == task["id"]]
    kinds = [e["@type"] for e in mine]
    # One result, and nothing after it: a progress event that trails the result
    # would say RUNNING about a finished task to any observer.
    assert kinds.count("ResultEvent") == 1
    assert kinds[-1] == "ResultEvent", kinds
    progress = [e["progress"] for e in mine if e["@type"] == "ProgressEvent"]
    # The start (0.0), then the task's reports, coalesced: at least its first one.
    assert progress[0] == 0.0
    assert 0.25 in progress
    assert all(0.0 <= p <= 1.0 for p in progress)
    assert progress == sorted(progress)
    assert not any("maxRetries" in e for e in mine)  # it kills icij's TM


def test_cancel_of_a_running_task_ends_cancelled(nb_pool, icij_manager):
    nb_pool()

    run = icij_manager(
        [
            {"name": "sleepy", "args": {"duration": 120}, "cancel_when": "running"},
            # Queued behind it on our only worker: runs once the cancel settled it.
            {"name": "hello", "args": {"greeted": "next"}},
        ]
    )

    sleepy, hello = run.tasks
    assert sleepy["state"] == "CANCELLED"
    assert sleepy["completed_at"] is not None
    assert sleepy["errors"] == []
    assert (hello["state"], hello["result"]) == ("DONE", "hello next")


def test_grouped_pool_runs_a_grouped_task(nb_pool, icij_manager, vhost):
    pool = nb_pool(group="grp")

    run = icij_manager([{"name": "grouped_hello", "args": {"greeted": "grp"}}])

    [task] = run.tasks
    assert (task["state"], task["result"]) == ("DONE", "hello grp")
    assert pool.queue == "TASK.grp"
    assert vhost.consumer_count("TASK") == 0
