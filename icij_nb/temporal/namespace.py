"""The namespace and search attributes Datashare's Temporal contract needs.

:func:`connect_client` connects to a namespace and checks it is ready.

Datashare (``TaskManagerTemporal.setupNamespace``) creates the namespace and three
search attributes, ``UserId`` (Keyword), ``Progress`` and ``MaxProgress`` (Double),
then waits until they are listed. :func:`ensure_namespace` does the same;
:func:`check_namespace` only checks, and says which command fixes what is missing.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from icij_nb.errors import BrokerError, BrokerUnavailable
from icij_nb.temporal.contract import DEFAULT_NAMESPACE, TemporalUrl

if TYPE_CHECKING:
    from temporalio.client import Client

#: the search attributes of the contract, by name: their Temporal type
SEARCH_ATTRIBUTES: Final = {
    "UserId": "Keyword",
    "Progress": "Double",
    "MaxProgress": "Double",
}
#: Datashare's retention of closed workflows
RETENTION: Final = timedelta(days=365)


class NamespaceMissing(BrokerError):
    """The namespace does not exist, or lacks the contract's search attributes."""


def create_commands(namespace: str, missing: list[str] | None = None) -> str:
    """The ``temporal`` CLI commands that create the namespace or attributes."""
    lines = (
        []
        if missing
        else [f"temporal operator namespace create -n {namespace} --retention 365d"]
    )
    for name in missing or list(SEARCH_ATTRIBUTES):
        lines.append(
            f"temporal operator search-attribute create -n {namespace} "
            f"--name {name} --type {SEARCH_ATTRIBUTES[name]}"
        )
    return "; ".join(lines)


async def check_namespace(client: Client, namespace: str) -> None:
    """Raise :class:`NamespaceMissing` unless the namespace is ready for tasks.

    Raises:
        NamespaceMissing: the namespace is unknown, or a search attribute is
            missing or of another type; the message names the commands to run.
    """
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.service import RPCError, RPCStatusCode

    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace)
        )
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:
            raise
        msg = (
            f"the Temporal namespace {namespace!r} does not exist on "
            f"{client.service_client.config.target_host}; create it with: "
            f"{create_commands(namespace)} (or ensure_namespace() in "
            "icij_nb.temporal.namespace)"
        )
        raise NamespaceMissing(msg) from None
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = [
        name
        for name, kind in SEARCH_ATTRIBUTES.items()
        if _type_name(listed.custom_attributes.get(name)) != kind
    ]
    if missing:
        msg = (
            f"the Temporal namespace {namespace!r} lacks the search attributes "
            f"{missing!r} that Datashare's tasks carry; create them with: "
            f"{create_commands(namespace, missing)}"
        )
        raise NamespaceMissing(msg)


def _type_name(value: int | None) -> str | None:
    from temporalio.api.enums.v1 import IndexedValueType

    if value is None:
        return None
    names: dict[int, str] = {
        IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD: "Keyword",
        IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE: "Double",
    }
    return names.get(value, str(value))


async def ensure_namespace(
    client: Client, namespace: str = DEFAULT_NAMESPACE, *, timeout_s: float = 30.0
) -> None:
    """Create the namespace and search attributes if missing, and wait for them.

    What Datashare's ``setupNamespace`` does, for a fresh server.
    """
    from google.protobuf.duration_pb2 import Duration
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
    from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
    from temporalio.service import RPCError, RPCStatusCode

    retention = Duration()
    retention.FromTimedelta(RETENTION)
    try:
        await client.workflow_service.register_namespace(
            RegisterNamespaceRequest(
                namespace=namespace, workflow_execution_retention_period=retention
            )
        )
    except RPCError as exc:
        if exc.status is not RPCStatusCode.ALREADY_EXISTS:
            raise
    types = {
        "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    }
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await check_namespace(client, namespace)
            return
        except (NamespaceMissing, RPCError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                msg = f"Temporal namespace {namespace!r} not ready: {exc}"
                raise NamespaceMissing(msg) from exc
        for name, kind in SEARCH_ATTRIBUTES.items():
            try:
                await client.operator_service.add_search_attributes(
                    AddSearchAttributesRequest(
                        namespace=namespace, search_attributes={name: types[kind]}
                    )
                )
            except RPCError as exc:  # already there, or the namespace cache lags
                if exc.status not in (
                    RPCStatusCode.ALREADY_EXISTS,
                    RPCStatusCode.NOT_FOUND,
                    RPCStatusCode.INVALID_ARGUMENT,
                ):
                    raise
        await asyncio.sleep(0.2)


async def connect_client(url: TemporalUrl) -> Client:
    """A client of the URL's namespace, checked ready for Datashare's tasks.

    Raises:
        BrokerUnavailable: no Temporal server answers at the URL's address.
        NamespaceMissing: the namespace or its search attributes are missing.
    """
    from temporalio.client import Client

    try:
        client = await Client.connect(url.address, namespace=url.namespace)
    except RuntimeError as exc:
        msg = (
            f"no Temporal server answers at {url.address} ({exc}); start one "
            "(python -m icij_nb.temporal.server, or Datashare's) or fix the URL"
        )
        raise BrokerUnavailable(msg) from None
    await check_namespace(client, url.namespace)
    return client
