"""icij-worker's AMQP topology: names, exact queue arguments, policies, URLs.

Everything a peer must agree on byte for byte (docs/protocol.md §1): the exchanges,
queues, their arguments and routing keys, and the management-API policies icij-worker
PUTs (:class:`ManagementApi`). No aio_pika here: ``brokers/amqp_topology.py`` declares
what this module names.
"""

from __future__ import annotations

import base64
import logging
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aiohttp

from icij_nb.errors import BrokerError, BrokerUnavailable

logger = logging.getLogger(__name__)

# -- names and arguments (docs/protocol.md §1.1-§1.4) ----------------------------

EXCHANGE_TASKS: Final = "exchangeMainTasks"
EXCHANGE_DLQ_TASKS: Final = "exchangeDLQTasks"
EXCHANGE_MANAGER_EVENTS: Final = "exchangeManagerEvents"
EXCHANGE_DLQ_MANAGER_EVENTS: Final = "exchangeDLQManagerEvents"
EXCHANGE_WORKER_EVENTS: Final = "exchangeWorkerEvents"
EXCHANGE_MONITORING: Final = "exchangeMonitoring"

#: icij_nb's own fanout for worker heartbeats; icij-worker peers never see it.
EXCHANGE_HEARTBEATS: Final = "exchangeIcijNbWorkers"
#: icij_nb's own log of the cancels of queued tasks, a stream that a pool reads
#: from its start before it takes a task (docs/protocol.md §1.7); icij-worker peers
#: never see it.
QUEUE_CANCELS: Final = "ICIJ_NB_CANCELS"
CANCELS_ARGUMENTS: Final[dict[str, Any]] = {
    "x-queue-type": "stream",
    "x-max-age": "7D",
    "x-max-length-bytes": 50_000_000,
}
#: the header of the marker a pool appends to the cancel log: it has read the log
#: up to its start once it reads its own marker back
LOG_MARK_HEADER: Final = "icijNbMark"

ROUTING_TASKS: Final = "routingKeyMainTasks"
ROUTING_DLQ_TASKS: Final = "routingKeyDLQTasks"
ROUTING_MANAGER_EVENTS: Final = "routingKeyManagerEvents"
ROUTING_DLQ_MANAGER_EVENTS: Final = "routingKeyDLQManagerEvents"
ROUTING_WORKER_EVENTS: Final = "routingKeyWorkerEvents"
ROUTING_MONITORING: Final = "routingKeyMonitoring"

QUEUE_TASK: Final = "TASK"
QUEUE_TASK_DLQ: Final = "TASK_DLQ"
QUEUE_MANAGER_EVENT: Final = "MANAGER_EVENT"
QUEUE_MANAGER_EVENT_DLQ: Final = "MANAGER_EVENT_DLQ"
QUEUE_WORKER_EVENT: Final = "WORKER_EVENT"
QUEUE_MONITORING: Final = "MONITORING"

TASK_QUEUE_ARGUMENTS: Final[dict[str, Any]] = {
    "x-queue-type": "quorum",
    "x-dead-letter-exchange": EXCHANGE_DLQ_TASKS,
    "x-dead-letter-routing-key": ROUTING_DLQ_TASKS,
}
MANAGER_EVENT_ARGUMENTS: Final[dict[str, Any]] = {
    "x-dead-letter-exchange": EXCHANGE_DLQ_MANAGER_EVENTS,
    "x-dead-letter-routing-key": ROUTING_DLQ_MANAGER_EVENTS,
}

WORKER_ID_HEADER: Final = "workerId"
PUBLISHED_AT_HEADER: Final = "publishedAt"
DEFAULT_URL: Final = "amqp://guest:guest@127.0.0.1:5672/"
ENV_URL: Final = "ICIJ_NB_AMQP_URL"
ENV_MANAGEMENT_URL: Final = "ICIJ_NB_AMQP_MANAGEMENT_URL"


def task_queue_name(group: str | None) -> str:
    """``TASK`` for the ungrouped queue, ``TASK.<group>`` for a group."""
    return QUEUE_TASK if group is None else f"{QUEUE_TASK}.{group}"


def task_routing_key(group: str | None) -> str:
    """The routing key of a group's tasks on ``exchangeMainTasks``."""
    return ROUTING_TASKS if group is None else group


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for reprs, logs, errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def vhost_of(url: str) -> str:
    """The vhost an AMQP URL names (``/`` when its path is empty)."""
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def management_url_for(url: str) -> str:
    """The management API URL that goes with an AMQP URL: same host and user, :15672."""
    parts = urlsplit(url)
    user = parts.username or "guest"
    password = parts.password or "guest"
    host = parts.hostname or "127.0.0.1"
    return f"http://{quote(user)}:{quote(password)}@{host}:15672"


def task_group_policy(group: str | None, max_length: int | None) -> dict[str, Any]:
    """The ``task-group-policy-*`` body icij-worker PUTs (docs/protocol.md §1.5)."""
    name = task_queue_name(group)
    definition: dict[str, Any] = {"overflow": "reject-publish", "delivery-limit": 10}
    if max_length is not None:
        definition["max-length"] = max_length
    return {
        "pattern": f"^{name.replace('.', chr(92) + '.')}$",
        "definition": definition,
        "apply-to": "queues",
        "priority": 1000,
    }


WORKER_EVENTS_POLICY: Final[dict[str, Any]] = {
    "pattern": "WORKER_EVENT-*",
    "definition": {"expires": 600000},
    "apply-to": "queues",
    "priority": 1000,
}
HEALTH_POLICY: Final[dict[str, Any]] = {
    "pattern": "^MONITORING$",
    "definition": {"message-ttl": 5000, "expires": 3600000},
    "apply-to": "queues",
    "priority": 10000,
}


class ManagementApi:
    """The RabbitMQ management HTTP API, for the policies icij-worker sets."""

    def __init__(self, url: str, vhost: str) -> None:
        parts = urlsplit(url)
        self._base = urlunsplit(parts._replace(netloc=_host_port(parts))).rstrip("/")
        # A plain header: aiohttp.BasicAuth is deprecated since aiohttp 3.14.
        credentials = (
            f"{unquote(parts.username or 'guest')}:{unquote(parts.password or 'guest')}"
        )
        token = base64.b64encode(credentials.encode("utf-8")).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}"}
        self._vhost = vhost
        self.masked_url = mask_url(url)

    async def put_policy(self, name: str, body: dict[str, Any]) -> None:
        """PUT one policy on our vhost; a clear BrokerUnavailable if it fails."""
        path = f"/api/policies/{quote(self._vhost, safe='')}/{quote(name, safe='')}"
        try:
            async with (
                aiohttp.ClientSession(headers=self._headers) as session,
                session.put(
                    self._base + path,
                    json=body,
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as response,
            ):
                if response.status in (200, 201, 204):
                    return
                text = (await response.text())[:200]
        except (aiohttp.ClientError, TimeoutError) as exc:
            msg = (
                f"cannot reach RabbitMQ's management API at {self.masked_url} "
                f"({exc.__class__.__name__}: {exc}). Enable it with "
                "'rabbitmq-plugins enable rabbitmq_management', pass "
                "management_url=..., or set_policies=False to skip policies."
            )
            raise BrokerUnavailable(msg) from exc
        msg = (
            f"RabbitMQ's management API at {self.masked_url} refused policy {name!r} "
            f"on vhost {self._vhost!r}: HTTP {response.status} {text}. Check the "
            "user's tags (it needs 'policymaker' or 'administrator')."
        )
        raise BrokerError(msg)


def _host_port(parts: Any) -> str:
    host = parts.hostname or "127.0.0.1"
    return f"{host}:{parts.port}" if parts.port is not None else host
