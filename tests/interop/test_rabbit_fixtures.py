"""The RabbitMQ fixtures of ``tests/rabbit.py`` show the broker's real state."""

from __future__ import annotations

import aio_pika
import pytest
from rabbit import create_vhost, delete_vhost

pytestmark = pytest.mark.rabbitmq


async def test_vhost_views_show_what_a_client_declared(vhost):
    connection = await aio_pika.connect(vhost.amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange("x", aio_pika.ExchangeType.FANOUT)
        queue = await channel.declare_queue(
            "q", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, routing_key="k")
        for i in range(3):
            await exchange.publish(aio_pika.Message(str(i).encode()), routing_key="k")

        assert await vhost.message_count("q") == 3
        q = vhost.queue("q")
        assert (q["type"], q["arguments"]) == ("quorum", {"x-queue-type": "quorum"})
        assert vhost.queue("absent") is None
        assert vhost.queue_names() == {"q"}
        assert [(x["name"], x["type"]) for x in vhost.exchanges()] == [("x", "fanout")]
        bindings = vhost.bindings()
        assert [
            (b["source"], b["routing_key"], b["destination"]) for b in bindings
        ] == [("x", "k", "q")]

        async def ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()

        await queue.consume(ack)
        await vhost.wait_until_async(
            lambda: vhost.consumer_count("q") == 1, what="a consumer"
        )
        # Counters in /api/queues lag by the statistics interval; they do arrive.
        await vhost.wait_until_async(
            lambda: vhost.queue("q")["messages"] == 0, 30, what="q to drain"
        )
        assert await vhost.message_count("q") == 0


def test_vhosts_are_fresh_and_deleted(rabbitmq, vhost):
    other = create_vhost(rabbitmq, "other")
    names = {v["name"] for v in rabbitmq.api("GET", "/api/vhosts")}
    assert {vhost.name, other.name} <= names
    assert vhost.queues() == other.queues() == []

    delete_vhost(other)
    delete_vhost(other)  # a missing vhost is fine

    names = {v["name"] for v in rabbitmq.api("GET", "/api/vhosts")}
    assert other.name not in names
    assert vhost.name in names
