"""Fixtures for the broker tests: a real RabbitMQ and a fresh vhost per test.

``rabbitmq`` (session: the broker's URLs), ``vhost`` (a fresh vhost, deleted at
teardown) and ``make_vhost`` (a factory of them) come from ``tests/rabbit.py``,
which documents them. Tests marked ``rabbitmq`` skip when no broker answers and
fail instead under ``ICIJ_NB_REQUIRE_RABBITMQ=1`` (the autouse ``rabbitmq_gate``).

``amqp_connect(app, **kw)`` is ``nb.connect`` on the test vhost (``store``
defaults to ``":memory:"``): it returns once the manager consumes
``MANAGER_EVENT`` (its one consumer per open manager), and closes every manager
it made at teardown.
"""

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rabbit import make_vhost, queue_counts, rabbitmq, rabbitmq_gate, vhost

import icij_nb as nb

# Re-exported: pytest registers the fixtures it finds in a conftest's namespace.
__all__ = ["amqp_connect", "make_vhost", "rabbitmq", "rabbitmq_gate", "vhost"]


@pytest.fixture
def amqp_connect(vhost: Any) -> Iterator[Callable[..., nb.TaskManager]]:
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
