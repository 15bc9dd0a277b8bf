"""One robust connection to a RabbitMQ vhost, and what goes wrong with it.

:class:`AmqpConnection` owns the aio-pika robust connection (it reconnects by itself
when RabbitMQ restarts), its publisher channel (publisher confirms, returns raise),
the channels the consumers open, the wait for a lost connection to come back, and
the translation of aiormq's errors into :mod:`icij_nb.errors` sentences that name the
URL with its password masked. :func:`settle` acknowledges or rejects a delivery
that may belong to a channel a reconnection closed.

The topology declared on the publisher channel lives in
:mod:`icij_nb.brokers.amqp_topology`; the two sides of the broker in
:mod:`icij_nb.brokers.amqp_manager` and :mod:`icij_nb.brokers.amqp_worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from icij_nb.brokers.topology import ManagementApi, mask_url, vhost_of
from icij_nb.errors import BrokerError, BrokerUnavailable

logger = logging.getLogger(__name__)

#: what a publish raises when the connection drops under it (the robust connection
#: reconnects by itself meanwhile)
CONNECTION_LOST: Final = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
)


async def settle(operation: Awaitable[Any]) -> None:
    """Await an ack, nack or reject; a channel lost meanwhile is only logged."""
    # After a reconnection the channel that delivered a message is gone and the
    # broker has requeued it already: settling it then is impossible and harmless.
    try:
        await operation
    except (aiormq.exceptions.AMQPError, RuntimeError) as exc:
        logger.warning("could not settle a message (%s); the broker requeues it", exc)


class AmqpConnection:
    """The connection to one vhost, its publisher channel and its management API.

    Args:
        url: ``amqp://user:password@host:port/vhost``.
        management_url: the management API (``http://user:password@host:15672``).
        connection_timeout_s: how long the first connection may take.
    """

    def __init__(
        self, url: str, management_url: str, *, connection_timeout_s: float
    ) -> None:
        self.url = url
        self.vhost = vhost_of(url)
        self.management_url = management_url
        self.management = ManagementApi(management_url, self.vhost)
        self.connection_timeout_s = connection_timeout_s
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractChannel | None = None

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<AmqpConnection {mask_url(self.url)} {state}>"

    @property
    def connected(self) -> bool:
        """True between :meth:`open` and :meth:`close`."""
        return self._connection is not None

    @property
    def publisher(self) -> AbstractChannel:
        """The channel with publisher confirms that declares and publishes."""
        if self._publisher is None:
            msg = "the AMQP broker is not started"
            raise BrokerError(msg)
        return self._publisher

    async def open(self) -> None:
        """Connect and open the publisher channel (nothing if connected already).

        Raises:
            BrokerUnavailable: RabbitMQ cannot be reached, refused the credentials
                or the vhost; the sentence says which.
        """
        if self._connection is not None:
            return
        self._connection = await self._connect()
        try:
            self._publisher = await self.channel(confirms=True)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection and every channel; safe to call twice."""
        connection, self._connection = self._connection, None
        self._publisher = None
        if connection is not None:
            await connection.close()

    async def channel(self, *, confirms: bool, prefetch: int | None = None) -> Any:
        """A new channel on the connection, with ``prefetch`` (default 1)."""
        if self._connection is None:
            msg = "the AMQP broker is not started"
            raise BrokerError(msg)
        channel = await self._connection.channel(
            publisher_confirms=confirms, on_return_raises=confirms
        )
        await channel.set_qos(prefetch_count=prefetch or 1)
        return channel

    async def publish_through_outages(
        self, publish: Callable[[], Awaitable[None]], *, wait_s: float
    ) -> None:
        """Call ``publish`` until it succeeds, waiting for lost connections.

        Only for idempotent messages: one that may have gone out already before
        the connection dropped is sent again.

        Raises:
            BrokerUnavailable: the connection did not come back within ``wait_s``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            try:
                await publish()
                return
            except CONNECTION_LOST as exc:
                await self._wait_reconnected(exc, deadline - loop.time())

    async def _wait_reconnected(self, lost: BaseException, wait_s: float) -> None:
        connection = self._connection
        if connection is None or wait_s <= 0:
            msg = (
                f"lost the connection to {mask_url(self.url)} (vhost {self.vhost!r}) "
                f"and it did not come back: {lost}"
            )
            raise BrokerUnavailable(msg) from lost
        logger.warning(
            "connection to RabbitMQ lost (%s: %s); publishing again once it is back",
            type(lost).__name__,
            lost,
        )
        try:
            async with asyncio.timeout(wait_s):
                await connection.ready()
        except TimeoutError:
            return  # the next publish fails, and the deadline has passed
        await asyncio.sleep(0.1)  # channels are restored right after the connection

    def refused(self, exc: BaseException, permission: str) -> BrokerError:
        """The error for an operation RabbitMQ refused for lack of ``permission``."""
        user = unquote(urlsplit(self.url).username or "guest")
        msg = (
            f"RabbitMQ at {mask_url(self.url)} refused user {user!r} on "
            f"vhost {self.vhost!r}: {exc}. The user lacks the {permission!r} "
            "permission there: grant it (rabbitmqctl set_permissions -p "
            f"{self.vhost} {user} '.*' '.*' '.*') or use another user."
        )
        return BrokerError(msg)

    async def _connect(self) -> AbstractRobustConnection:
        where = f"RabbitMQ at {mask_url(self.url)} (vhost {self.vhost!r})"
        # Built here, not by connect_robust(), so that a failed one can be closed:
        # garbage-collected unclosed, it warns "coroutine ... never awaited".
        connection = aio_pika.RobustConnection(aio_pika.connection.make_url(self.url))
        try:
            try:
                await connection.connect(timeout=self.connection_timeout_s)
            except BaseException:
                with contextlib.suppress(Exception):
                    await connection.close()
                raise
            return connection
        except aiormq.exceptions.ProbableAuthenticationError as exc:
            msg = f"{where} refused the credentials: check user and password ({exc})"
            raise BrokerUnavailable(msg) from exc
        except aiormq.exceptions.ConnectionClosed as exc:
            msg = (
                f"{where} closed the connection: {exc}. Does the vhost exist, and "
                "may this user use it?"
            )
            raise BrokerUnavailable(msg) from exc
        except aiormq.exceptions.InvalidFrameError as exc:
            if "Connection.Close" not in str(exc):
                raise _unreachable(where, exc) from exc
            raise self._vhost_refused(where) from exc
        except (OSError, aiormq.exceptions.AMQPError, TimeoutError) as exc:
            raise _unreachable(where, exc) from exc

    def _vhost_refused(self, where: str) -> BrokerUnavailable:
        # RabbitMQ closes the connection instead of opening the vhost; its
        # reason (NOT_ALLOWED) is lost in aiormq's error.
        user = unquote(urlsplit(self.url).username or "guest")
        msg = (
            f"{where} refused to open vhost {self.vhost!r} for user {user!r}: the "
            "vhost does not exist, or the user has no permissions on it. Check "
            f"with 'rabbitmqctl list_permissions -p {self.vhost}'."
        )
        return BrokerUnavailable(msg)


def _unreachable(where: str, exc: BaseException) -> BrokerUnavailable:
    msg = (
        f"cannot connect to {where}: {exc.__class__.__name__}: {exc}. Is "
        "RabbitMQ running ('rabbitmq-server -detached') and is the URL right?"
    )
    return BrokerUnavailable(msg)
