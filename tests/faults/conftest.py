"""Fixtures of the fault suite: a private RabbitMQ node, fresh vhosts, figures.

- ``private_rabbit`` (session): a RabbitMQ node of our own (``faultkit.PrivateRabbit``)
  on free ports of 127.0.0.1, started once, stopped at the end. Scenarios restart
  it at will: the system broker on 5672, which other suites use at the same time, is
  never touched. Without ``rabbitmq-server`` the tests skip, and fail instead when
  ``ICIJ_NB_REQUIRE_RABBITMQ=1``.
- ``vhost``: a fresh vhost of the private node per test (a ``rabbit.Vhost``).
- ``rabbit_cluster`` (session): three clustered nodes of our own
  (``cluster.RabbitCluster``), for the scenarios marked ``cluster``; started on
  first use, stopped at the end. ``cluster_vhost``: a fresh vhost of it.
- ``raw``: a ``faultkit.RawAmqp`` on that vhost (publish raw bodies, exact counts).
- ``figures`` (session): ``figures.record(scenario, **values)``; written to
  ``build/fault-figures.json`` at the end of the session, merged with the
  scenarios of earlier runs. ``tests/faults/fault_report.py`` turns it into the table
  of docs/reliability.md.
- ``scratch``: the test's ``tmp_path`` as working directory (process pools log to
  ``./.icij_nb/logs``).
- ``managers``: ``managers(app, store=..., **connect_kwargs)`` connects to the vhost;
  closed at teardown. ``cli_pool(*args)``: an ``icij-nb workers start`` of the
  fault app on the vhost; killed at teardown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import RabbitCluster
from faultkit import (
    REPO,
    CliPool,
    Figures,
    PrivateRabbit,
    RawAmqp,
    kill_all,
    rabbit_available,
)
from rabbit import Vhost, delete_vhost

import icij_nb as nb


@pytest.fixture(scope="session")
def private_rabbit() -> Iterator[PrivateRabbit]:
    reason = rabbit_available()
    if reason is not None:
        if os.environ.get("ICIJ_NB_REQUIRE_RABBITMQ") == "1":
            pytest.fail(f"{reason}, and ICIJ_NB_REQUIRE_RABBITMQ=1", pytrace=False)
        pytest.skip(reason)
    # Short: Erlang's node names and sockets live under this path.
    base = Path(tempfile.mkdtemp(prefix="icijfault-"))
    node = PrivateRabbit(base)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    reason = rabbit_available()
    if reason is not None:
        if os.environ.get("ICIJ_NB_REQUIRE_RABBITMQ") == "1":
            pytest.fail(f"{reason}, and ICIJ_NB_REQUIRE_RABBITMQ=1", pytrace=False)
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="icijclu-"))
    cluster = RabbitCluster(base)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def cluster_vhost(
    rabbit_cluster: RabbitCluster, request: pytest.FixtureRequest
) -> Iterator[Vhost]:
    down = [i for i, node in enumerate(rabbit_cluster.nodes) if not node.running]
    rabbit_cluster.start_nodes(*down)  # a scenario that failed midway left them
    made = rabbit_cluster.make_vhost(request.node.name)
    yield made
    with contextlib.suppress(Exception):
        delete_vhost(made)


@pytest.fixture
def vhost(
    private_rabbit: PrivateRabbit, request: pytest.FixtureRequest
) -> Iterator[Vhost]:
    made = private_rabbit.make_vhost(request.node.name)
    yield made
    with contextlib.suppress(Exception):
        delete_vhost(made)


@pytest.fixture
def raw(vhost: Vhost) -> Iterator[RawAmqp]:
    client = RawAmqp(vhost.amqp_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    recorded = Figures(REPO / "build" / "fault-figures.json")
    yield recorded
    recorded.write()


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def managers(vhost: Vhost) -> Iterator[Callable[..., nb.TaskManager]]:
    made: list[nb.TaskManager] = []
    pids: list[int] = []

    def make(app: nb.App, *, store: Any = ":memory:", **kwargs: Any) -> nb.TaskManager:
        kwargs.setdefault("management_url", vhost.management_url)
        tm = nb.connect(app, broker=vhost.amqp_url, store=store, **kwargs)
        made.append(tm)
        return tm

    yield make
    for tm in reversed(made):
        for pool in tm.pools:
            pids.extend(getattr(pool, "pids", []))
        with contextlib.suppress(Exception):
            tm.close(timeout_s=60)
    kill_all(pids)  # a failed test must leave no worker process behind


@pytest.fixture
def cli_pool(vhost: Vhost, tmp_path: Path) -> Iterator[Callable[..., CliPool]]:
    started: list[CliPool] = []
    env = dict(os.environ)
    env.pop("ICIJ_NB_AMQP_MANAGEMENT_URL", None)

    def start(*args: str, url: str | None = None, management_url: str = "") -> CliPool:
        extra = ["--broker", url or vhost.amqp_url]
        extra += ["--management-url", management_url or vhost.management_url]
        pool = CliPool(
            [*args, *extra], tmp_path / f"cli-pool-{len(started)}.log", env=env
        )
        started.append(pool)
        return pool

    yield start
    for pool in started:
        pids = pool.pids
        pool.kill()
        kill_all(pids)
