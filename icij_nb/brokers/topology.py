"""icij-worker's AMQP topology: names, exact queue arguments, policies, URLs.

Everything a peer must agree on byte for byte (docs/protocol.md §1): the exchanges,
queues, their arguments and routing keys, and the management-API policies icij-worker
PUTs (:class:`ManagementApi`). No aio_pika here: ``brokers/amqp_topology.py`` declares
what this module names.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aiohttp

from icij_nb.errors import BrokerError, BrokerUnavailable, ConfigError

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
#: icij_nb's own fanout for the output of running tasks; icij-worker never sees it.
EXCHANGE_OUTPUT: Final = "exchangeIcijNbOutput"
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

#: the password of a URL's userinfo (``scheme://user:PASSWORD@``)
_PASSWORD: Final = re.compile(r"(://[^:/@;]*:)[^@;]*@")


def task_queue_name(group: str | None) -> str:
    """``TASK`` for the ungrouped queue, ``TASK.<group>`` for a group."""
    return QUEUE_TASK if group is None else f"{QUEUE_TASK}.{group}"


def task_routing_key(group: str | None) -> str:
    """The routing key of a group's tasks on ``exchangeMainTasks``."""
    return ROUTING_TASKS if group is None else group


def node_urls(url: str | Sequence[str]) -> list[str]:
    """One URL per RabbitMQ node of a broker given as one node or several.

    The forms (docs/rabbitmq.md#a-cluster-several-nodes): one URL; URLs separated
    by ``;`` (Celery's and kombu's failover form); a list of URLs; or one URL with
    a comma-separated host list (``amqp://u:p@h1:5672,h2:5673/vhost``), whose
    user, password, vhost and query apply to every host.

    Raises:
        ConfigError: no URL at all, or nodes naming different vhosts.
    """
    given = [url] if isinstance(url, str) else list(url)
    urls = [u.strip() for text in given for u in text.split(";") if u.strip()]
    nodes = [node for u in urls for node in _expand_hosts(u)]
    if not nodes:
        msg = f"no broker URL in {mask_url(';'.join(given))!r}"
        raise ConfigError(msg)
    vhosts = {vhost_of(n) for n in nodes}
    if len(vhosts) > 1:
        msg = (
            f"the nodes of {mask_url(';'.join(nodes))!r} name different vhosts "
            f"({', '.join(sorted(vhosts))}): the nodes of one broker share one vhost"
        )
        raise ConfigError(msg)
    return nodes


def join_urls(url: str | Sequence[str]) -> str:
    """The one-string form of a broker's nodes: their URLs joined by ``;``."""
    nodes = node_urls(url)
    return nodes[0] if len(nodes) == 1 else ";".join(nodes)


def _expand_hosts(url: str) -> list[str]:
    """``amqp://u:p@h1:1,h2:2/v`` -> ``[amqp://u:p@h1:1/v, amqp://u:p@h2:2/v]``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return [url]
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if "," not in hosts:
        return [url]
    prefix = f"{scheme}://{userinfo}{at}"
    return [f"{prefix}{h.strip()}{slash}{tail}" for h in hosts.split(",") if h.strip()]


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for reprs, logs, errors).

    A broker of several nodes (``;``-separated URLs, or a comma-separated host
    list) has every password masked.
    """
    if ";" in url:
        return ";".join(mask_url(part) for part in url.split(";"))
    if "," in url:
        # urlsplit cannot read a host list: mask the userinfo's password as text.
        return _PASSWORD.sub(r"\1***@", url, count=1)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def vhost_of(url: str) -> str:
    """The vhost an AMQP URL names (``/`` when its path is empty).

    For several nodes, the vhost of the first (they share one).
    """
    url = url.split(";", 1)[0]
    path = urlsplit(_expand_hosts(url)[0]).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def management_url_for(url: str) -> str:
    """The management API URL that goes with an AMQP URL: same host and user, :15672.

    For several nodes, one management URL per node, joined by ``;`` (tried in
    order: any node of a cluster serves the whole cluster's API).
    """
    nodes = node_urls(url)
    if len(nodes) > 1:
        return ";".join(management_url_for(node) for node in nodes)
    parts = urlsplit(nodes[0])
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
#: On a cluster, icij-worker's classic queues (``MANAGER_EVENT`` and the dead-letter
#: queues, whose arguments the protocol fixes) are mirrored on every node, so that
#: losing the node that holds them loses no event, and a client that moves to
#: another node can declare them again there. Set only for a broker given as
#: several nodes; quorum task queues replicate by themselves.
_MIRRORED: Final = {"ha-mode": "all", "ha-sync-mode": "automatic"}
CLUSTER_MIRROR_POLICY: Final[dict[str, Any]] = {
    "pattern": r"^(MANAGER_EVENT|MANAGER_EVENT_DLQ|TASK_DLQ|icij_nb\.TASK_DLQ\..*)$",
    "definition": _MIRRORED,
    "apply-to": "queues",
    "priority": 1000,
}
#: ``worker-events-policy`` and mirroring in one (one policy applies per queue):
#: a worker's durable ``WORKER_EVENT-<id>`` queue must survive its node too.
CLUSTER_WORKER_EVENTS_POLICY: Final[dict[str, Any]] = {
    **WORKER_EVENTS_POLICY,
    "definition": {**WORKER_EVENTS_POLICY["definition"], **_MIRRORED},
    "priority": WORKER_EVENTS_POLICY["priority"] + 1,
}
HEALTH_POLICY: Final[dict[str, Any]] = {
    "pattern": "^MONITORING$",
    "definition": {"message-ttl": 5000, "expires": 3600000},
    "apply-to": "queues",
    "priority": 10000,
}


class ManagementApi:
    """The RabbitMQ management HTTP API, for the policies icij-worker sets.

    ``url`` may name several nodes (``;``-separated): each is tried in turn until
    one answers, since any node of a cluster serves the whole cluster's API.
    """

    def __init__(self, url: str, vhost: str) -> None:
        self._nodes = [_api_node(u) for u in url.split(";") if u.strip()]
        self._vhost = vhost
        self.masked_url = mask_url(url)

    async def put_policy(self, name: str, body: dict[str, Any]) -> None:
        """PUT one policy on our vhost; a clear BrokerUnavailable if it fails."""
        path = f"/api/policies/{quote(self._vhost, safe='')}/{quote(name, safe='')}"
        unreachable: BaseException | None = None
        for base, headers in self._nodes:
            try:
                async with (
                    aiohttp.ClientSession(headers=headers) as session,
                    session.put(
                        base + path,
                        json=body,
                        timeout=aiohttp.ClientTimeout(total=10),
                    ) as response,
                ):
                    if response.status in (200, 201, 204):
                        return
                    status, text = response.status, (await response.text())[:200]
                    break
            except (aiohttp.ClientError, TimeoutError) as exc:
                unreachable = exc  # a node down: the next one may answer
        else:
            msg = (
                f"cannot reach RabbitMQ's management API at {self.masked_url} "
                f"({unreachable.__class__.__name__}: {unreachable}). Enable it with "
                "'rabbitmq-plugins enable rabbitmq_management', pass "
                "management_url=..., or set_policies=False to skip policies."
            )
            raise BrokerUnavailable(msg) from unreachable
        msg = (
            f"RabbitMQ's management API at {self.masked_url} refused policy {name!r} "
            f"on vhost {self._vhost!r}: HTTP {status} {text}. Check the "
            "user's tags (it needs 'policymaker' or 'administrator')."
        )
        raise BrokerError(msg)


def _api_node(url: str) -> tuple[str, dict[str, str]]:
    """The base URL of one node's management API, and its auth header."""
    parts = urlsplit(url.strip())
    base = urlunsplit(parts._replace(netloc=_host_port(parts))).rstrip("/")
    # A plain header: aiohttp.BasicAuth is deprecated since aiohttp 3.14.
    credentials = (
        f"{unquote(parts.username or 'guest')}:{unquote(parts.password or 'guest')}"
    )
    token = base64.b64encode(credentials.encode("utf-8")).decode("ascii")
    return base, {"Authorization": f"Basic {token}"}


def _host_port(parts: Any) -> str:
    host = parts.hostname or "127.0.0.1"
    return f"{host}:{parts.port}" if parts.port is not None else host
