"""``connect()``: build a TaskManager from an app, a broker choice and a store choice.

The embedded default needs no server: an in-process broker and a SQLite store beside
the notebook (``.icij_nb/<app>.sqlite3``).
"""

from __future__ import annotations

import os
from pathlib import Path

from icij_nb.app import App
from icij_nb.brokers.base import Broker
from icij_nb.brokers.memory import MemoryBroker
from icij_nb.engine import Engine
from icij_nb.errors import ConfigError, MissingDependency
from icij_nb.manager import TaskManager
from icij_nb.runtime import get_runtime
from icij_nb.store import MEMORY, TaskStore, default_store_path


def connect(
    app: App,
    *,
    broker: Broker | str = "memory",
    store: TaskStore | str | os.PathLike[str] | None = None,
    management_url: str | None = None,
    observe_only: bool = False,
) -> TaskManager:
    """Start a task manager for ``app``.

    Args:
        app: the tasks it may submit.
        broker: ``"memory"`` (in this process, the default), an AMQP URL
            (``amqp://user:password@host:5672/vhost``), ``"amqp"`` for
            ``$ICIJ_NB_AMQP_URL``, a Temporal URL
            (``temporal://host:7233/namespace``, see docs/temporal.md), or a
            Broker instance.
        store: a SQLite file path, ``":memory:"`` for no file, a TaskStore, or None
            for ``$ICIJ_NB_STORE_DIR/<app>.sqlite3`` (default dir ``./.icij_nb``).
        management_url: RabbitMQ's management API, when it is not at the broker's
            host on port 15672 with the same credentials.
        observe_only: with RabbitMQ, watch a vhost that another task manager
            (Datashare's) owns, without taking its events; with Temporal, follow
            the namespace's workflows without starting any.

    Returns:
        A started :class:`~icij_nb.manager.TaskManager`. Tasks left unfinished in the
        store by a kernel that died are settled first (see TaskStore.recover).

    Example:
        tm = nb.connect(app)
        tm.start_pool("cpu", workers=4)
    """
    given: object = app
    if not isinstance(given, App):
        msg = f"connect() needs an icij_nb.App, got {type(app).__name__}: {app!r}"
        raise ConfigError(msg)
    if isinstance(broker, str) and broker.startswith("temporal"):
        return TaskManager(
            app,
            engine=_temporal(app, broker, observe_only=observe_only),
            store=_store(app, store),
            runtime=get_runtime(),
        ).start()
    return TaskManager(
        app,
        broker=_broker(
            app, broker, management_url=management_url, observe_only=observe_only
        ),
        store=_store(app, store),
        runtime=get_runtime(),
    ).start()


def _temporal(app: App, url: str, *, observe_only: bool) -> Engine:
    try:
        from icij_nb.temporal.engine import TemporalEngine
    except ImportError as exc:
        msg = "the Temporal backend needs temporalio: pip install 'icij_nb[temporal]'"
        raise MissingDependency(msg) from exc
    return TemporalEngine(app, url, observe_only=observe_only)


def _broker(
    app: App, broker: Broker | str, *, management_url: str | None, observe_only: bool
) -> Broker:
    if isinstance(broker, Broker):
        return broker
    if broker == "memory":
        if observe_only:
            msg = "observe_only needs a RabbitMQ broker (an amqp:// URL)"
            raise ConfigError(msg)
        return MemoryBroker(app)
    if broker == "amqp" or broker.startswith("amqp"):
        try:
            from icij_nb.brokers.amqp import AmqpBroker
            from icij_nb.brokers.topology import mask_url
        except ImportError as exc:
            msg = (
                "the RabbitMQ broker needs aio-pika and aiohttp: "
                "pip install 'icij_nb[amqp]'"
            )
            raise MissingDependency(msg) from exc
        url = None if broker == "amqp" else broker
        if url is not None and not url.startswith(("amqp://", "amqps://")):
            msg = f"unknown broker URL {mask_url(url)!r}: use amqp:// or amqps://"
            raise ConfigError(msg)
        return AmqpBroker(
            app, url, management_url=management_url, observe_only=observe_only
        )
    msg = (
        f"unknown broker {broker!r}: pass 'memory' (in this process), an amqp:// "
        "URL, or a Broker instance"
    )
    raise ConfigError(msg)


def _store(app: App, store: TaskStore | str | os.PathLike[str] | None) -> TaskStore:
    if isinstance(store, TaskStore):
        return store
    if store is None:
        return TaskStore(default_store_path(app.name))
    given: object = store
    if isinstance(given, str | os.PathLike):
        text = os.fspath(given)
        return TaskStore(MEMORY if text == MEMORY else Path(text))
    msg = f"store must be a path, ':memory:' or a TaskStore, got {given!r}"
    raise ConfigError(msg)
