"""The backend contract: what every backend must do, as one suite run on each.

A *backend* is what ``nb.connect(app, broker=...)`` is given: today the in-process
memory broker and RabbitMQ. Every test of ``tests/contract`` takes the ``backend``
fixture, a :class:`Backend`, and is run once per entry of :data:`BACKENDS`. The
tests drive the public API only (``backend(app)`` gives a started
``nb.TaskManager``; then ``submit``/``map``/``gather``/``wait``/``cancel``/
``retry``/``subscribe``/``start_pool``/``shutdown_workers``, pools and handles), so
that an engine that owns delivery and state itself can run them unchanged.

How a new backend joins (one place: this file):

1. Write ``def _mybackend(request) -> Backend``: it returns a :class:`Backend` whose
   ``connect(app, **kw)`` calls ``nb.connect(app, broker=..., **kw)`` on a fresh,
   isolated place (a vhost, a namespace, a database) made for the test. The
   ``backend`` fixture closes every manager at teardown; whatever else the backend
   made is removed by the fixtures it takes with ``request.getfixturevalue`` (the
   amqp entry takes ``vhost`` and ``amqp_connect``), so only its own tests pay
   for them, or by ``request.addfinalizer``.
2. Say what it can do: ``processes=True`` if ``start_pool(..., processes=True)``
   works on it; ``queued`` if it can count the messages waiting in a group's queue
   (tests then also check the broker is left empty).
3. Add ``pytest.param(_mybackend, id="mybackend", marks=...)`` to :data:`BACKENDS`;
   the marks gate the service it needs (``rabbitmq`` skips, or fails under
   ``ICIJ_NB_REQUIRE_RABBITMQ=1``, when no RabbitMQ answers).

A contract test that a backend fails because of a defect of that backend is marked
in the test, for that backend only, with ``backends.xfail_on``. The
:class:`~backends.Backend` type and the suite's deadline ``WAIT_S`` are in
``backends.py`` (tests import them from there: a conftest is not importable).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backends import Backend
from rabbit import make_vhost, queue_counts, rabbitmq, rabbitmq_gate, vhost

import icij_nb as nb

# Re-exported: pytest registers the fixtures it finds in a conftest's namespace.
__all__ = ["make_vhost", "rabbitmq", "rabbitmq_gate", "vhost"]


def _memory(request: pytest.FixtureRequest) -> Backend:
    def connect(app: nb.App, **kwargs: Any) -> nb.TaskManager:
        return nb.connect(app, broker="memory", **kwargs)

    return Backend("memory", connect)


def _amqp(request: pytest.FixtureRequest) -> Backend:
    test_vhost = request.getfixturevalue("vhost")

    def queued(group: str | None) -> int:
        return queue_counts(test_vhost, "TASK" if group is None else f"TASK.{group}")[0]

    return Backend(
        "amqp",
        request.getfixturevalue("amqp_connect"),
        processes=True,
        queued=queued,
    )


#: every backend the contract runs on
BACKENDS = [
    pytest.param(_memory, id="memory"),
    pytest.param(_amqp, id="amqp", marks=pytest.mark.rabbitmq),
]


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    # Process pools write their logs under ./.icij_nb/logs.
    monkeypatch.chdir(tmp_path)
    made: Backend = request.param(request)
    try:
        yield made
    finally:
        made.close_all()


@pytest.fixture
def app() -> nb.App:
    return nb.App("contract", groups=(nb.TaskGroup("cpu"), nb.TaskGroup("io")))
