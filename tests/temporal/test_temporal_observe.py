"""Observe mode on Temporal: a manager that follows a namespace's workflows live."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import icij_nb as nb
from icij_nb.errors import ObserveOnly
from icij_nb.model import TaskState
from icij_nb.testing import wait_until

pytestmark = pytest.mark.temporal


def make_app(group: str) -> nb.App:
    app = nb.App("tobserve")

    @app.task(group=group)
    async def nap(s: float) -> str:
        await asyncio.sleep(s)
        return "rested"

    @app.task(group=group, max_retries=0)
    def boom() -> None:
        raise KeyError("missing")

    return app


def test_an_observer_sees_tasks_another_manager_drives(
    make_tm: Any, group: str
) -> None:
    app = make_app(group)
    driver = make_tm(app)
    observer = make_tm(nb.App("watcher"), observe_only=True)
    driver.start_pool(group)
    napping = driver.submit("nap", {"s": 2})
    failing = driver.submit("boom")

    def seen_running() -> bool:
        task = observer.peek(napping.id)
        return task is not None and task.state is TaskState.RUNNING

    wait_until(seen_running, timeout_s=20, what="the observer to see nap running")
    assert napping.result(timeout_s=30) == "rested"
    wait_until(lambda: observer.get(napping.id).state is TaskState.DONE, timeout_s=20)
    observed = observer.get(napping.id)
    assert observed.result == "rested"
    assert observed.name == "nap"
    assert observed.group == group.lower()
    assert observed.args["s"] == 2
    wait_until(lambda: observer.get(failing.id).state is TaskState.ERROR, timeout_s=20)
    assert observer.get(failing.id).errors[-1].name == "KeyError"


def test_an_observer_cannot_drive(make_tm: Any, group: str) -> None:
    observer = make_tm(make_app(group), observe_only=True)
    with pytest.raises(ObserveOnly):
        observer.submit("nap", {"s": 0})
