"""Fixtures for the broker tests: a real RabbitMQ and a fresh vhost per test.

``rabbitmq`` (session: the broker's URLs), ``vhost`` (a fresh vhost, deleted at
teardown) and ``make_vhost`` (a factory of them) come from ``tests/rabbit.py``,
which documents them. Tests marked ``rabbitmq`` skip when no broker answers and
fail instead under ``ICIJ_NB_REQUIRE_RABBITMQ=1`` (the autouse ``rabbitmq_gate``).

``amqp_connect(app, **kw)`` (``nb.connect`` on the test vhost) lives in
``tests/conftest.py``, because the backend contract suite (``tests/contract``)
uses it too.
"""

from rabbit import make_vhost, rabbitmq, rabbitmq_gate, vhost

# Re-exported: pytest registers the fixtures it finds in a conftest's namespace.
__all__ = ["make_vhost", "rabbitmq", "rabbitmq_gate", "vhost"]
