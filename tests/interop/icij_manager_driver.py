"""Drive the real icij-worker ``AMQPTaskManager`` through one scenario; print JSON.

Runs in the icij-worker virtualenv (it imports ``icij_worker``, not ``icij_nb``)::

    python icij_manager_driver.py SCENARIO      # a JSON text or a path to a JSON file
    python icij_manager_driver.py < scenario.json

The broker comes from the environment, with the same variables as an icij worker
pool: ``ICIJ_WORKER_RABBITMQ_HOST``, ``_PORT``, ``_MANAGEMENT_PORT``, ``_USER``,
``_PASSWORD`` and ``_VHOST`` (URL-encoded, as icij pastes it into URLs).

Scenario: a list of task items, or an object::

    {"tasks": [ITEM, ...],
     "app": "icij_app.app",      # dotted path of the TM's AsyncApp; null: empty app
     "db_path": "...",           # FS storage file (default: a temporary file)
     "timeout_s": 60,            # for all tasks to reach a ready state
     "shutdown_workers": false}  # publish a ShutdownEvent at the end

    ITEM = {"name": "hello", "args": {"greeted": "world"},
            "id": "...",              # default "<name>-<uuid4>"
            "group": "grp",           # only for names the app does not register:
            "max_retries": 3,         #   the driver registers a stub (null: bare)
            "cancel_when": "running", # wait for RUNNING (as the TM sees it), then
            "cancel_after_s": 0.5,    #   and/or after this delay, cancel it
            "cancel_requeue": false}

The TM's app must register every submitted name: ``save_task`` takes the task's
group and ``max_retries`` from that registry (docs/protocol.md §5.3). Names that only
the peer pool knows get a stub registration here, so this TM can drive any pool.

Output: one JSON object per line on stdout, one per task in input order::

    {"id", "name", "state", "progress", "retries_left", "max_retries",
     "completed_at", "result": <value or null>, "has_result": bool,
     "errors": [{"name", "message", "cause", "retries_left"}, ...]}

then a last line ``{"summary": {"tm_error": null | "<repr>", "timed_out": bool}}``.
``tm_error`` is set when the TM's event loop died (it dies silently on any bad
event, docs/protocol.md §6 #6). The exit status is 0 unless the driver itself failed
(bad scenario, broker unreachable). icij's logs go to stderr.

The TM is built by hand: ``TaskManager.from_config`` crashes with FS storage
(docs/protocol.md §5.3).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from aiohttp import BasicAuth
from icij_worker import AsyncApp, Task, TaskState
from icij_worker.exceptions import UnknownTask
from icij_worker.task_manager.amqp import AMQPTaskManager
from icij_worker.task_storage.fs import FSKeyValueStorage
from icij_worker.utils.amqp import AMQPManagementClient

READY = {TaskState.DONE, TaskState.ERROR, TaskState.CANCELLED}
POLL_INTERVAL_S = 0.05


class ManagerDied(Exception):
    """The icij TM's event-consuming task ended."""


def read_scenario(argv: list[str]) -> dict[str, Any]:
    raw = argv[1] if len(argv) > 1 else sys.stdin.read()
    if not raw.lstrip().startswith(("[", "{")):
        raw = Path(raw).read_text()
    scenario = json.loads(raw)
    if isinstance(scenario, list):
        scenario = {"tasks": scenario}
    for item in scenario["tasks"]:
        if item.get("cancel_when") not in (None, "running"):
            msg = f"cancel_when must be 'running' or absent, got {item!r}"
            raise ValueError(msg)
    return scenario


def build_app(scenario: dict[str, Any]) -> AsyncApp:
    app_path = scenario.get("app", "icij_app.app")
    app = AsyncApp("interop-driver") if app_path is None else AsyncApp.load(app_path)
    for item in scenario["tasks"]:
        name = item["name"]
        if name in app.registry:
            continue

        def stub(**kwargs: Any) -> None:
            msg = "a stub registered by the driver, for the TM's registry only"
            raise RuntimeError(msg)

        if "max_retries" in item and item["max_retries"] is None:
            stub.__name__ = name
            app.task(stub)
        else:
            retries = item.get("max_retries", 3)
            app.task(name=name, max_retries=retries, group=item.get("group"))(stub)
    return app


def build_manager(app: AsyncApp, db_path: Path) -> AMQPTaskManager:
    env = os.environ
    host = env.get("ICIJ_WORKER_RABBITMQ_HOST", "127.0.0.1")
    port = env.get("ICIJ_WORKER_RABBITMQ_PORT", "5672")
    management_port = env.get("ICIJ_WORKER_RABBITMQ_MANAGEMENT_PORT", "15672")
    user = env.get("ICIJ_WORKER_RABBITMQ_USER", "guest")
    password = env.get("ICIJ_WORKER_RABBITMQ_PASSWORD", "guest")
    vhost = env.get("ICIJ_WORKER_RABBITMQ_VHOST", "%2F")
    management = AMQPManagementClient(
        f"http://{host}:{management_port}",
        rabbitmq_vhost=vhost,
        rabbitmq_auth=BasicAuth(user, password),
    )
    return AMQPTaskManager(
        app,
        FSKeyValueStorage(db_path),
        management,
        broker_url=f"amqp://{user}:{password}@{host}:{port}/{vhost}",
        connection_timeout_s=5.0,
    )


async def wait_for_state(
    tm: AMQPTaskManager, task_id: str, states: set[TaskState]
) -> Task:
    while True:
        # A peer's internals: the only way to see its event loop die.
        loop_task = tm._consume_loop
        if loop_task is not None and loop_task.done():
            raise ManagerDied(task_id)
        task = await tm.get_task(task_id)
        if task.state in states:
            return task
        await asyncio.sleep(POLL_INTERVAL_S)


async def submit(tm: AMQPTaskManager, item: dict[str, Any], task_id: str) -> None:
    task = Task.create(task_id=task_id, task_name=item["name"], args=item["args"])
    await tm.save_task(task)
    await tm.enqueue(task)


async def follow(tm: AMQPTaskManager, item: dict[str, Any], task_id: str) -> None:
    """Cancel the task if the item asks to, then wait until it is ready."""
    cancel_when = item.get("cancel_when")
    cancel_after_s = item.get("cancel_after_s")
    if cancel_when is not None or cancel_after_s is not None:
        if cancel_when == "running":
            await wait_for_state(tm, task_id, {TaskState.RUNNING} | READY)
        if cancel_after_s:
            await asyncio.sleep(cancel_after_s)
        await tm.cancel(task_id, requeue=bool(item.get("cancel_requeue", False)))
    await wait_for_state(tm, task_id, READY)


async def report(tm: AMQPTaskManager, task_id: str) -> dict[str, Any]:
    task = await tm.get_task(task_id)
    out: dict[str, Any] = {
        "id": task.id,
        "name": task.name,
        "state": task.state.value,
        "progress": task.progress,
        "retries_left": task.retries_left,
        "max_retries": task.max_retries,
        "completed_at": task.completed_at.isoformat() if task.completed_at else None,
        "result": None,
        "has_result": False,
    }
    try:
        result = await tm.get_task_result(task_id)
    except UnknownTask:
        pass
    else:
        out["result"] = result.result.value
        out["has_result"] = True
    errors = await tm.get_task_errors(task_id)
    out["errors"] = [
        {
            "name": e.error.name,
            "message": e.error.message,
            "cause": e.error.cause,
            "retries_left": e.retries_left,
        }
        for e in errors
    ]
    return out


async def run(scenario: dict[str, Any]) -> int:
    app = build_app(scenario)
    items = scenario["tasks"]
    ids = [item.get("id") or f"{item['name']}-{uuid.uuid4()}" for item in items]
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(scenario.get("db_path") or Path(tmp) / "tasks.db")
        tm = build_manager(app, db_path)
        async with tm:
            tm_error, timed_out = None, False
            try:
                async with asyncio.timeout(float(scenario.get("timeout_s", 60))):
                    for item, task_id in zip(items, ids, strict=True):
                        await submit(tm, item, task_id)
                    async with asyncio.TaskGroup() as followers:
                        for item, task_id in zip(items, ids, strict=True):
                            followers.create_task(follow(tm, item, task_id))
            except* TimeoutError:
                timed_out = True
            except* ManagerDied:
                loop_task = tm._consume_loop  # see wait_for_state
                tm_error = repr(loop_task.exception()) if loop_task else "?"
            for task_id in ids:
                print(json.dumps(await report(tm, task_id), default=str), flush=True)
            if scenario.get("shutdown_workers"):
                await tm.shutdown_workers()
        summary = {"tm_error": tm_error, "timed_out": timed_out}
        print(json.dumps({"summary": summary}), flush=True)
    return 0


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    return asyncio.run(run(read_scenario(argv)))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
