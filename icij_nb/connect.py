"""``connect()``: build a TaskManager from an app, a broker choice and a store choice.

The embedded default needs no server: an in-process broker and a SQLite store beside
the notebook (``.icij_nb/<app>.sqlite3``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from icij_nb.app import App
from icij_nb.brokers.base import Broker
from icij_nb.brokers.memory import MemoryBroker
from icij_nb.engine import Engine
from icij_nb.errors import ConfigError, MissingDependency
from icij_nb.manager import TaskManager
from icij_nb.runtime import get_runtime
from icij_nb.store import MEMORY, SqliteStore, Store, default_store_path


def connect(
    app: App,
    *,
    broker: Broker | str | Sequence[str] = "memory",
    store: Store | str | os.PathLike[str] | None = None,
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
            Broker instance. A RabbitMQ cluster is several nodes: URLs joined by
            ``;`` (Celery's form), a list of URLs, or one URL with a host list
            (``amqp://u:p@h1:5672,h2:5673/vhost``).
        store: a SQLite file path (or ``sqlite:///relative/path``,
            ``sqlite:////absolute/path``), ``":memory:"`` for no file, a store
            instance (``nb.TaskStore(path)``), or None for
            ``$ICIJ_NB_STORE_DIR/<app>.sqlite3`` (default dir ``./.icij_nb``).
        management_url: RabbitMQ's management API, when it is not at the broker's
            host on port 15672 with the same credentials.
        observe_only: with RabbitMQ, watch a vhost that another task manager
            (Datashare's) owns, without taking its events; with Temporal, follow
            the namespace's workflows without starting any.

    Returns:
        A started :class:`~icij_nb.manager.TaskManager`. Tasks left unfinished in the
        store by a kernel that died are settled first (see Store.recover).

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
    app: App,
    broker: Broker | str | Sequence[str],
    *,
    management_url: str | None,
    observe_only: bool,
) -> Broker:
    if isinstance(broker, Broker):
        return broker
    if not isinstance(broker, str):
        nodes = list(broker)
        if not nodes or not all(isinstance(n, str) for n in nodes):
            msg = (
                f"a broker given as a list needs amqp:// URLs, got {len(nodes)} item(s)"
            )
            raise ConfigError(msg)
        broker = ";".join(nodes)
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
        for node in [] if url is None else url.split(";"):
            if not node.strip().startswith(("amqp://", "amqps://")):
                msg = f"unknown broker URL {mask_url(node)!r}: use amqp:// or amqps://"
                raise ConfigError(msg)
        return AmqpBroker(
            app, url, management_url=management_url, observe_only=observe_only
        )
    msg = (
        f"unknown broker {broker!r}: pass 'memory' (in this process), an amqp:// "
        "URL, or a Broker instance"
    )
    raise ConfigError(msg)


#: ``scheme://`` at the start of a store string: a URL, not a file path
_URL: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SQLITE_URL: Final = "sqlite://"
_STORE_FORMS: Final = (
    "a SQLite file path, 'sqlite:///relative/path' or 'sqlite:////absolute/path', "
    "':memory:' (no file), or a store instance such as nb.TaskStore(path)"
)


def _store(app: App, store: Store | str | os.PathLike[str] | None) -> Store:
    if store is None:
        return SqliteStore(default_store_path(app.name))
    given: object = store
    if isinstance(given, str):
        return SqliteStore(_sqlite_path(given))
    if isinstance(given, os.PathLike):
        # A Path is a path even when its text looks like a URL.
        return SqliteStore(Path(os.fspath(given)))
    if isinstance(given, Store):
        return given
    msg = f"store must be {_STORE_FORMS}; got {given!r}"
    raise ConfigError(msg)


def _sqlite_path(text: str) -> str | Path:
    """The SQLite path a store string names.

    Raises:
        ConfigError: a URL of another scheme, or a ``sqlite://`` URL with a host.
    """
    if text == MEMORY:
        return MEMORY
    scheme = _URL.match(text)
    if scheme is None:
        return Path(text)
    if not text.startswith(_SQLITE_URL):
        # Only the scheme is shown: the rest may hold a password.
        msg = f"unsupported store URL {scheme.group()}...: a store is {_STORE_FORMS}"
        raise ConfigError(msg)
    # sqlite:///<path> as SQLAlchemy reads it: three slashes, then the path
    # (a fourth slash makes it absolute); sqlite:// alone is in memory.
    rest = text[len(_SQLITE_URL) :]
    if rest in ("", "/", f"/{MEMORY}"):
        return MEMORY
    if not rest.startswith("/"):
        msg = (
            "a sqlite:// store URL names no host: write sqlite:///relative/path "
            "or sqlite:////absolute/path"
        )
        raise ConfigError(msg)
    return Path(rest[1:])
