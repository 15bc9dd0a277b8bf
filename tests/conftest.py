"""Shared fixtures: a fresh app per test and factories of managers that clean up.

- ``make_manager(app, store=...)``: managers on the in-process broker.
- ``amqp_connect(app, **kw)``: ``nb.connect`` on the test's RabbitMQ vhost
  (``store`` defaults to ``":memory:"``). It returns once the manager consumes
  ``MANAGER_EVENT`` (its one consumer per open manager), and closes every manager
  it made at teardown. It needs the ``vhost`` fixture, which the conftests of the
  directories with RabbitMQ tests import from ``tests/rabbit.py`` (``tests/brokers``,
  ``tests/contract``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rabbit import queue_counts

import icij_nb as nb

# A bug must fail a test, never hang the suite: every test gets a deadline unless
# it sets its own with @pytest.mark.timeout.
DEFAULT_TEST_TIMEOUT_S = 120


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TEST_TIMEOUT_S))


@pytest.fixture
def app() -> nb.App:
    return nb.App("testapp")


MakeManager = Callable[..., nb.TaskManager]


@pytest.fixture
def make_manager(tmp_path: Path) -> Iterator[MakeManager]:
    """``make_manager(app, store=":memory:")`` connects a manager; all are closed
    at teardown. ``store="file"`` gives a fresh SQLite file in ``tmp_path``.
    """
    made: list[nb.TaskManager] = []

    def make(app: nb.App, *, store: Any = ":memory:") -> nb.TaskManager:
        if store == "file":
            store = tmp_path / f"store-{len(made)}.sqlite3"
        tm = nb.connect(app, store=store)
        made.append(tm)
        return tm

    yield make
    for tm in reversed(made):
        tm.close(timeout_s=30)


@pytest.fixture
def amqp_connect(vhost: Any) -> Iterator[MakeManager]:
    made: list[nb.TaskManager] = []

    def make(app: nb.App, **kwargs: Any) -> nb.TaskManager:
        kwargs.setdefault("store", ":memory:")
        tm = nb.connect(app, broker=vhost.amqp_url, **kwargs)
        made.append(tm)
        open_managers = sum(not m.closed for m in made)
        # The event consumer starts in the background, right after connect().
        vhost.wait_until(
            lambda: queue_counts(vhost, "MANAGER_EVENT")[1] == open_managers,
            what="the manager to consume MANAGER_EVENT",
        )
        return tm

    yield make
    for tm in reversed(made):
        tm.close(timeout_s=30)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """An event that blocking sync tasks wait on; set at teardown so that no
    thread outlives its test (a stuck executor thread would hang interpreter exit).
    """
    event = threading.Event()
    yield event
    event.set()
