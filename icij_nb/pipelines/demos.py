"""Helpers for the demo notebooks: which broker to use, and a clean stop.

:func:`choose_broker` picks RabbitMQ when one answers, else the embedded broker, so
that a demo runs on a bare machine; :func:`stop_notebook` ends a notebook with one
sentence instead of a traceback (:class:`~icij_nb.errors.NotebookStopped`).
"""

from __future__ import annotations

import os
import socket
from typing import Final
from urllib.parse import urlsplit

from icij_nb.errors import NotebookStopped

_DEFAULT_AMQP_URL: Final = "amqp://guest:guest@127.0.0.1:5672/"
_AMQP_URL_ENV: Final = "ICIJ_NB_AMQP_URL"


def choose_broker(broker: str = "auto", *, timeout_s: float = 1.0) -> str:
    """The broker a notebook connects to: RabbitMQ when one answers, else the embedded.

    Args:
        broker: ``"auto"`` picks ``$ICIJ_NB_AMQP_URL`` (or
            ``amqp://guest:guest@127.0.0.1:5672/``) when a TCP connection to it
            succeeds within ``timeout_s``, and ``"memory"`` otherwise. Any other
            value (``"memory"``, an AMQP URL) is returned unchanged.
        timeout_s: how long to wait for the broker's port.

    Example:
        tm = nb.connect(app, broker=choose_broker("auto"))
    """
    if broker != "auto":
        return broker
    url = os.environ.get(_AMQP_URL_ENV) or _DEFAULT_AMQP_URL
    parts = urlsplit(url)
    try:
        address = (parts.hostname or "127.0.0.1", parts.port or 5672)
        with socket.create_connection(address, timeout=timeout_s):
            return url
    except (OSError, ValueError):
        return "memory"


def stop_notebook(sentence: str) -> None:
    """Stop a notebook here, showing ``sentence`` alone (no traceback).

    Raises:
        NotebookStopped: always. Jupyter stops running the next cells; papermill
            ends the run with a PapermillExecutionError whose traceback is the
            sentence.

    Example:
        try:
            tm = nb.connect(app, broker=broker)
        except nb.BrokerUnavailable as exc:
            stop_notebook(str(exc))
    """
    raise NotebookStopped(sentence)
