"""Interop both ways with the real peers on a real Temporal server.

- icij_nb's manager drives a real ``datashare-python`` worker (its own venv, our
  ``dsp_peer`` app served by ``datashare-python worker start``);
- a client doing what Datashare's Java TaskManagerTemporal does drives an icij_nb
  Temporal pool, and sees what it sees with the datashare-python worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from datashare_java import DatashareJava, JavaTask
from dsp import DSP_GROUP, DspWorker, dsp_python
from temporalio.client import Client

import icij_nb as nb
from icij_nb.errors import TaskFailed
from icij_nb.model import TaskState
from icij_nb.testing import wait_until

pytestmark = [pytest.mark.temporal, pytest.mark.timeout(300)]

DSP_TASKS = ("dsp.add", "dsp.fail", "dsp.steps", "dsp.sleep")
#: a second datashare-python worker, on the queue Datashare routes group "Python" to
SECOND_GROUP = "Python"


@pytest.fixture(scope="module")
def dsp_workers(temporal_server: Any, tmp_path_factory: Any) -> Iterator[None]:
    python = dsp_python()
    logs = tmp_path_factory.mktemp("dsp")
    workers = [
        DspWorker(
            python,
            temporal_server.address,
            temporal_server.namespace,
            queue,
            Path(logs) / f"{queue}.log",
        )
        for queue in (DSP_GROUP, SECOND_GROUP.lower())
    ]
    try:
        for worker in workers:
            worker.wait_polling()
        yield
    finally:
        for worker in workers:
            worker.stop()


def driver_app() -> nb.App:
    """The manager's view of datashare-python's workflows: names and groups only."""
    app = nb.App("dsp-driver")
    for name in DSP_TASKS:
        app.task(name=name, group=DSP_GROUP)(_remote)
    return app


def _remote(**kwargs: Any) -> None:
    msg = "runs on the datashare-python worker"
    raise AssertionError(msg)


def test_icij_nb_drives_a_datashare_python_worker(
    make_tm: Any, dsp_workers: None
) -> None:
    tm = make_tm(driver_app())
    assert tm.submit("dsp.add", {"a": 20, "b": 22}).result(timeout_s=60) == 42
    failing = tm.submit("dsp.fail", {"why": "bad doc"})
    with pytest.raises(TaskFailed) as info:
        failing.result(timeout_s=60)
    assert info.value.error is not None
    assert (info.value.error.name, info.value.error.message) == (
        "ValueError",
        "bad doc",
    )
    stepping = tm.submit("dsp.steps", {"n": 5})
    seen: set[float] = set()
    while not stepping.done():
        seen.add(stepping.progress)
        time.sleep(0.05)
    assert stepping.result(timeout_s=1) == "stepped"
    assert any(0.0 < p < 1.0 for p in seen), seen
    assert tm.get(stepping.id).progress == 1.0


def test_icij_nb_cancels_a_running_datashare_python_task(
    make_tm: Any, dsp_workers: None
) -> None:
    tm = make_tm(driver_app())
    handle = tm.submit("dsp.sleep", {"s": 60})
    wait_until(lambda: handle.state is TaskState.RUNNING, timeout_s=30)
    tm.cancel(handle)
    assert handle.state is TaskState.CANCELLED


def test_a_second_group_reaches_its_own_datashare_python_worker(
    make_tm: Any, dsp_workers: None, temporal_server: Any
) -> None:
    # Datashare's GROUP routing: group "Python" is task queue "python".
    app = nb.App("dsp-second")
    app.task(name="dsp.add", group=SECOND_GROUP)(_remote)
    tm = make_tm(app)
    handle = tm.submit("dsp.add", {"a": 1, "b": 2})
    assert handle.result(timeout_s=60) == 3

    async def queue_of() -> str:
        client = await Client.connect(
            temporal_server.address, namespace=temporal_server.namespace
        )
        return (await client.get_workflow_handle(handle.id).describe()).task_queue

    assert asyncio.run(queue_of()) == "python"


def icij_app(group: str) -> nb.App:
    """The same tasks as dsp_peer's, as icij_nb tasks."""
    app = nb.App("nb-peer")

    @app.task(name="dsp.add", group=group)
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="dsp.fail", group=group, max_retries=0)
    def fail(why: str) -> None:
        raise ValueError(why)

    @app.task(name="dsp.steps", group=group)
    async def steps(n: int, progress: Any) -> str:
        for i in range(n):
            await progress(i / n)
            await asyncio.sleep(0.4)
        return "stepped"

    @app.task(name="dsp.sleep", group=group)
    async def sleep(s: float) -> str:
        await asyncio.sleep(s)
        return "woke"

    return app


async def java_run(client: Client, group: str) -> dict[str, JavaTask | bool | str]:
    java = DatashareJava(client)
    seen: dict[str, JavaTask | bool | str] = {}
    started = await java.start_task("dsp.add", group, {"a": 20, "b": 22})
    seen["started_state"] = started.state
    seen["add"] = await java.wait(started.id)
    seen["fail"] = await java.wait(
        (await java.start_task("dsp.fail", group, {"why": "bad doc"})).id
    )
    seen["steps"] = await java.wait(
        (await java.start_task("dsp.steps", group, {"n": 3})).id
    )
    sleeping = await java.start_task("dsp.sleep", group, {"s": 60})
    await asyncio.sleep(1.0)
    seen["cancelled"] = await java.cancel(sleeping.id)
    seen["sleep"] = await java.parse_task(sleeping.id)
    return seen


def comparable(seen: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in seen.items():
        if isinstance(value, JavaTask):
            out[key] = (value.name, value.state, value.result, value.error)
            if key in ("steps", "sleep"):  # dsp.add reports no progress on dsp
                out[key + ".progress"] = value.progress
        else:
            out[key] = value
    return out


def test_datashare_java_sees_an_icij_nb_pool_as_a_datashare_python_worker(
    make_tm: Any, dsp_workers: None, temporal_server: Any, group: str
) -> None:
    tm = make_tm(icij_app(group))
    tm.start_pool(group, workers=2)

    async def both() -> tuple[dict[str, Any], dict[str, Any]]:
        client = await Client.connect(
            temporal_server.address, namespace=temporal_server.namespace
        )
        return await java_run(client, DSP_GROUP), await java_run(client, group)

    on_dsp, on_icij_nb = asyncio.run(both())
    assert comparable(on_icij_nb) == comparable(on_dsp)
    add = on_icij_nb["add"]
    assert isinstance(add, JavaTask)
    assert (add.state, add.result, add.progress) == ("DONE", 42, 1.0)
    fail = on_icij_nb["fail"]
    assert isinstance(fail, JavaTask)
    assert fail.error is not None
    assert fail.error["cause_type"] == "ValueError"
    assert fail.error["non_retryable"] is True
    assert on_icij_nb["cancelled"] is True
