"""RabbitMQ test fixtures shared by ``tests/brokers`` and ``tests/interop``.

What a test gets:

- ``rabbitmq`` (session): the broker's URLs, after a probe. A test marked
  ``@pytest.mark.rabbitmq`` skips, with the reason, when no broker answers, and fails
  instead when ``ICIJ_NB_REQUIRE_RABBITMQ=1``. The conftests apply this gate to every
  test carrying the marker (:func:`rabbitmq_gate`).
- ``vhost``: a fresh vhost for one test, deleted at teardown, as a :class:`Vhost`
  (URLs plus management-API views: ``queues()``, ``bindings()``, ...).
- ``make_vhost``: the factory behind ``vhost``, for a test that needs several.

The URLs come from ``ICIJ_NB_TEST_AMQP_URL`` (default
``amqp://guest:guest@127.0.0.1:5672/``) and ``ICIJ_NB_TEST_AMQP_MANAGEMENT_URL``
(default ``http://guest:guest@127.0.0.1:15672``). The management API is reached with
``urllib`` so that fixtures stay synchronous and work in sync and async tests alike.

How the conftests share this module: pytest's default ``prepend`` import mode puts
the directory of every conftest without ``__init__.py`` on ``sys.path``, and
``tests/conftest.py`` therefore makes ``tests/`` importable as a top-level
directory: conftests write ``from rabbit import ...`` and re-export the fixtures.

Management-API caveat: message and consumer counts in ``/api/queues`` are refreshed
on the broker's statistics interval (5 s by default), so poll them with
``vhost.wait_until(..., timeout_s=15)`` and expect them to lag. Queue existence,
arguments, bindings and policies are immediate; ``await vhost.message_count(q)``
asks the broker itself (a passive declare) and is exact.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pytest

from icij_nb.testing import wait_until, wait_until_async

T = TypeVar("T")

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_MANAGEMENT_URL = "http://guest:guest@127.0.0.1:15672"
PROBE_TIMEOUT_S = 2.0
HTTP_TIMEOUT_S = 10.0
# Vhosts made by these fixtures start with this, so leftovers are easy to find.
VHOST_PREFIX = "icij_nb-test-"

# Proxies are for the outside world; the broker is local or on the test network.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class RabbitMQ:
    """The broker under test: where it is, with credentials."""

    amqp_url: str
    management_url: str

    @property
    def host(self) -> str:
        return urlsplit(self.amqp_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.amqp_url).port or 5672

    @property
    def user(self) -> str:
        return unquote(urlsplit(self.amqp_url).username or "guest")

    @property
    def password(self) -> str:
        return unquote(urlsplit(self.amqp_url).password or "guest")

    @property
    def management_port(self) -> int:
        return urlsplit(self.management_url).port or 15672

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the management API; return the decoded JSON (None when empty).

        Raises urllib.error.HTTPError for an error status (404 included).
        """
        return _http(self.management_url, method, path, body)


def rabbitmq_from_env() -> RabbitMQ:
    return RabbitMQ(
        amqp_url=os.environ.get("ICIJ_NB_TEST_AMQP_URL", DEFAULT_AMQP_URL),
        management_url=os.environ.get(
            "ICIJ_NB_TEST_AMQP_MANAGEMENT_URL", DEFAULT_MANAGEMENT_URL
        ).rstrip("/"),
    )


@cache
def probe(broker: RabbitMQ) -> str | None:
    """Return why the broker is unusable, or None when both ports answer."""
    try:
        with socket.create_connection((broker.host, broker.port), PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        return f"no AMQP broker at {broker.host}:{broker.port} ({exc})"
    try:
        _http(broker.management_url, "GET", "/api/overview", timeout_s=PROBE_TIMEOUT_S)
    except (OSError, ValueError) as exc:
        shown = _hide_password(broker.management_url)
        return f"no RabbitMQ management API at {shown} ({exc})"
    return None


def require_rabbitmq(broker: RabbitMQ) -> None:
    """Skip the current test when the broker is unusable (fail if it is required)."""
    reason = probe(broker)
    if reason is None:
        return
    if os.environ.get("ICIJ_NB_REQUIRE_RABBITMQ") == "1":
        pytest.fail(f"{reason}, and ICIJ_NB_REQUIRE_RABBITMQ=1", pytrace=False)
    pytest.skip(
        f"{reason}; start RabbitMQ (scripts/test does) or point "
        "ICIJ_NB_TEST_AMQP_URL and ICIJ_NB_TEST_AMQP_MANAGEMENT_URL at one"
    )


@dataclass
class Vhost:
    """A vhost of the test broker, with read-only views of its state.

    ``name`` is the raw vhost name; ``amqp_url`` has it URL-encoded in the path.
    Every view returns the management API's JSON (lists of dicts).
    """

    broker: RabbitMQ
    name: str
    amqp_url: str = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.broker.amqp_url)
        path = "/" + quote(self.name, safe="")
        self.amqp_url = urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    @property
    def management_url(self) -> str:
        return self.broker.management_url

    @property
    def quoted(self) -> str:
        """The name as it goes in a management-API path."""
        return quote(self.name, safe="")

    def queues(self) -> list[dict[str, Any]]:
        """Every queue: name, type, arguments, messages, messages_unacknowledged,
        consumers, policy, durable... (counts lag: see the module docstring)."""
        queues = self.broker.api("GET", f"/api/queues/{self.quoted}")
        return [_with_queue_defaults(q) for q in queues]

    def queue(self, name: str) -> dict[str, Any] | None:
        """One queue, or None when it does not exist."""
        try:
            q = self.broker.api("GET", f"/api/queues/{self.quoted}/{quote(name, '')}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return _with_queue_defaults(q)

    def queue_names(self) -> set[str]:
        return {q["name"] for q in self.queues()}

    def exchanges(self, *, builtin: bool = False) -> list[dict[str, Any]]:
        """Exchanges (name, type, durable, auto_delete, arguments); the default and
        ``amq.*`` exchanges only with ``builtin=True``."""
        xs = self.broker.api("GET", f"/api/exchanges/{self.quoted}")
        if builtin:
            return list(xs)
        return [x for x in xs if x["name"] and not x["name"].startswith("amq.")]

    def bindings(self) -> list[dict[str, Any]]:
        """Bindings (source, destination, destination_type, routing_key, arguments),
        without the implicit ones from the default exchange."""
        bs = self.broker.api("GET", f"/api/bindings/{self.quoted}")
        return [b for b in bs if b["source"]]

    def policies(self) -> list[dict[str, Any]]:
        """Policies (name, pattern, definition, apply-to, priority)."""
        return list(self.broker.api("GET", f"/api/policies/{self.quoted}"))

    def consumers(self) -> list[dict[str, Any]]:
        """Consumers, each with ``queue.name``; up to date (no statistics lag)."""
        return list(self.broker.api("GET", f"/api/consumers/{self.quoted}"))

    def consumer_count(self, queue: str) -> int:
        return sum(1 for c in self.consumers() if c["queue"]["name"] == queue)

    def connections(self) -> list[dict[str, Any]]:
        return list(self.broker.api("GET", f"/api/vhosts/{self.quoted}/connections"))

    async def message_count(self, queue: str) -> int:
        """Ready messages in ``queue``, asked of the broker (exact, no lag)."""
        import aio_pika  # only the broker tests need it, and they have it

        connection = await aio_pika.connect(self.amqp_url, timeout=HTTP_TIMEOUT_S)
        async with connection:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            count = declared.declaration_result.message_count
            return int(count or 0)

    def wait_until(
        self,
        cond: Callable[[], T],
        timeout_s: float = 15.0,
        *,
        what: str = "condition",
    ) -> T:
        """Poll ``cond`` (typically a view of this vhost) until it is truthy.

        Blocking: in an ``async def`` test use :meth:`wait_until_async`.
        """
        return wait_until(cond, timeout_s=timeout_s, interval_s=0.1, what=what)

    async def wait_until_async(
        self,
        cond: Callable[[], T],
        timeout_s: float = 15.0,
        *,
        what: str = "condition",
    ) -> T:
        """Twin of :meth:`wait_until` for async tests: it lets the loop run (a
        blocking wait would freeze the test's own consumers)."""
        return await wait_until_async(
            cond, timeout_s=timeout_s, interval_s=0.1, what=what
        )

    def __repr__(self) -> str:
        return f"<Vhost {self.name!r} {_hide_password(self.amqp_url)}>"


def create_vhost(broker: RabbitMQ, label: str = "") -> Vhost:
    """Create a fresh vhost that the broker's user can fully use."""
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:40]
    suffix = uuid.uuid4().hex[:8]
    name = f"{VHOST_PREFIX}{slug}-{suffix}" if slug else f"{VHOST_PREFIX}{suffix}"
    vhost = Vhost(broker, name)
    broker.api("PUT", f"/api/vhosts/{vhost.quoted}", {})
    permissions = {"configure": ".*", "write": ".*", "read": ".*"}
    user = quote(broker.user, safe="")
    broker.api("PUT", f"/api/permissions/{vhost.quoted}/{user}", permissions)
    return vhost


def delete_vhost(vhost: Vhost) -> None:
    """Delete the vhost (closing its connections); a missing vhost is fine."""
    try:
        vhost.broker.api("DELETE", f"/api/vhosts/{vhost.quoted}")
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise


# Fixtures. The conftests of tests/brokers and tests/interop import them (and the
# gate) so that pytest registers them there.


@pytest.fixture(scope="session")
def rabbitmq() -> RabbitMQ:
    """The test broker; skips (or fails, if required) when it does not answer."""
    broker = rabbitmq_from_env()
    require_rabbitmq(broker)
    return broker


@pytest.fixture
def make_vhost(
    rabbitmq: RabbitMQ, request: pytest.FixtureRequest
) -> Iterator[Callable[[], Vhost]]:
    """``make_vhost()`` creates a fresh vhost; all are deleted at teardown."""
    made: list[Vhost] = []

    def make() -> Vhost:
        made.append(create_vhost(rabbitmq, request.node.name))
        return made[-1]

    yield make
    for vhost in reversed(made):
        delete_vhost(vhost)


@pytest.fixture
def vhost(make_vhost: Callable[[], Vhost]) -> Vhost:
    """A fresh vhost for this test, deleted at teardown."""
    return make_vhost()


@pytest.fixture(autouse=True)
def rabbitmq_gate(request: pytest.FixtureRequest) -> None:
    """Apply the skip-or-fail rule to every test marked ``rabbitmq``."""
    if request.node.get_closest_marker("rabbitmq") is not None:
        require_rabbitmq(rabbitmq_from_env())


# Helpers


def _http(
    base_url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    timeout_s: float = HTTP_TIMEOUT_S,
) -> Any:
    parts = urlsplit(base_url)
    netloc = parts.hostname or "127.0.0.1"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + path, "", ""))
    user = unquote(parts.username or "guest")
    password = unquote(parts.password or "guest")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    with _OPENER.open(request, timeout=timeout_s) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def _with_queue_defaults(queue: dict[str, Any]) -> dict[str, Any]:
    # A queue's counters are absent until its first statistics tick.
    for key in ("messages", "messages_ready", "messages_unacknowledged", "consumers"):
        queue.setdefault(key, 0)
    return queue


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


# -- asking the broker itself ----------------------------------------------------


def on_broker(vhost: Any, fn: Callable[[Any], Any]) -> Any:
    """Run ``fn(channel)`` on a fresh aio-pika connection to the vhost.

    Blocking, callable from sync and async tests alike (it runs on a thread of its
    own with its own loop).
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import aio_pika

    async def run() -> Any:
        connection = await aio_pika.connect(vhost.amqp_url, timeout=10)
        async with connection:
            return await fn(await connection.channel())

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, run()).result(timeout=30)


def queue_counts(vhost: Any, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue``, exact (unlike the management API);
    (0, 0) when the queue does not exist."""
    import aiormq.exceptions

    async def ask(channel: Any) -> tuple[int, int]:
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return 0, 0
        result = declared.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)

    result: tuple[int, int] = on_broker(vhost, ask)
    return result
