"""Bad settings, bad input and faults on Temporal: each one ends in a clear state."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import icij_nb as nb
from icij_nb.errors import BrokerError, BrokerUnavailable, ConfigError
from icij_nb.model import TaskState
from icij_nb.temporal.contract import TemporalUrl
from icij_nb.temporal.server import DevServer, free_port
from icij_nb.testing import wait_until

pytestmark = pytest.mark.temporal


def make_app(group: str) -> nb.App:
    app = nb.App("tfaults")

    @app.task(group=group)
    async def nap(s: float) -> str:
        await asyncio.sleep(s)
        return "rested"

    return app


def test_a_server_that_is_not_there_is_named(temporal_server: Any) -> None:
    url = f"temporal://127.0.0.1:{free_port()}/datashare-default"
    with pytest.raises(BrokerUnavailable, match="no Temporal server answers"):
        nb.connect(make_app("g"), broker=url, store=":memory:")


def test_an_unknown_namespace_names_the_command_that_creates_it(
    temporal_server: Any,
) -> None:
    url = f"temporal://{temporal_server.address}/nowhere-{uuid.uuid4().hex[:6]}"
    with pytest.raises(BrokerError, match="temporal operator namespace create"):
        nb.connect(make_app("g"), broker=url, store=":memory:")


def test_missing_search_attributes_name_the_command_that_creates_them(
    temporal_server: Any,
) -> None:
    from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
    from temporalio.client import Client

    from icij_nb.temporal.namespace import RETENTION

    namespace = f"bare-{uuid.uuid4().hex[:6]}"

    async def register() -> None:
        client = await Client.connect(temporal_server.address)
        await client.workflow_service.register_namespace(
            RegisterNamespaceRequest(
                namespace=namespace, workflow_execution_retention_period=RETENTION
            )
        )

    asyncio.run(register())
    url = f"temporal://{temporal_server.address}/{namespace}"

    def refused() -> str:
        try:
            nb.connect(make_app("g"), broker=url, store=":memory:").close()
        except BrokerError as exc:
            if "search attributes" in str(exc):
                return str(exc)
        return ""  # the namespace cache lags its creation: ask again

    message = wait_until(refused, timeout_s=10, interval_s=0.3)
    assert "temporal operator search-attribute create" in message
    assert "--name Progress --type Double" in message


def test_bad_urls_are_refused() -> None:
    with pytest.raises(ConfigError):
        TemporalUrl.parse("temporal://host:notaport/ns")
    with pytest.raises(ConfigError):
        TemporalUrl.parse("temporal://host:7233/a/b")
    url = TemporalUrl.parse("temporal://rabbit?user=alice")
    assert (url.address, url.namespace, url.user_id) == (
        "rabbit:7233",
        "datashare-default",
        "alice",
    )


def test_a_workflow_type_no_worker_registers_waits_and_says_why(
    make_tm: Any, group: str
) -> None:
    app = make_app(group)

    @app.task(group=group)
    def unserved() -> None:
        return None

    tm = make_tm(app)
    # A pool of another app on the same queue: it does not know "unserved".
    other = make_app(group)
    other_tm = make_tm(other)
    other_tm.start_pool(group)
    handle = tm.submit("unserved")
    reason = wait_until(
        lambda: (
            (tm.engine.waiting_reason(handle.id) or "").startswith(
                "its workflow task failed"
            )
            and tm.engine.waiting_reason(handle.id)
        ),
        timeout_s=30,
        interval_s=0.2,
    )
    assert "no worker there registers workflow type 'unserved'" in reason
    assert handle.state is TaskState.QUEUED
    tm.cancel(handle)
    assert handle.state is TaskState.CANCELLED


def test_retry_is_refused_with_the_reason(make_tm: Any, group: str) -> None:
    tm = make_tm(make_app(group))
    handle = tm.submit("nap", {"s": 0})
    tm.cancel(handle)
    with pytest.raises(BrokerError, match="same id"):
        tm.retry(handle)


@pytest.mark.timeout(180)
def test_a_server_restarted_mid_run_loses_nothing(tmp_path: Any, group: str) -> None:
    server = DevServer(db_filename=tmp_path / "temporal.sqlite")
    server.start()
    try:
        tm = nb.connect(make_app(group), broker=server.url, store=":memory:")
        tm.start_pool(group, workers=4)
        handles = tm.map("nap", [{"s": 3} for _ in range(4)])
        wait_until(
            lambda: all(h.state is TaskState.RUNNING for h in handles), timeout_s=20
        )
        server.kill()
        server.start()
        assert tm.gather(handles, timeout_s=120) == ["rested"] * 4
        tm.close(timeout_s=30)
    finally:
        server.stop()
