"""A broker given as several nodes: URLs, masking, and one URL exactly as before.

The cluster scenarios themselves are in ``test_fault_cluster_scenarios.py``.
"""

from __future__ import annotations

import pytest
from fault_app import app

import icij_nb as nb
from icij_nb.brokers.amqp import AmqpBroker
from icij_nb.brokers.topology import join_urls, mask_url, node_urls, vhost_of
from icij_nb.errors import ConfigError

ONE = "amqp://u:pw@h1:5672/v"


def test_the_three_forms_name_the_same_nodes():
    nodes = ["amqp://u:pw@h1:5672/v", "amqp://u:pw@h2:5673/v", "amqp://u:pw@h3:5674/v"]
    assert node_urls(";".join(nodes)) == nodes
    assert node_urls(nodes) == nodes
    assert node_urls("amqp://u:pw@h1:5672,h2:5673,h3:5674/v") == nodes
    assert vhost_of(";".join(nodes)) == "v"


def test_a_single_url_is_kept_exactly_as_given():
    assert node_urls(ONE) == [ONE]
    assert join_urls(ONE) == ONE
    broker = AmqpBroker(app, ONE, management_url="http://u:pw@h1:15672")
    assert (broker.url, broker.cluster) == (ONE, False)
    assert repr(broker) == "<AmqpBroker amqp://u:***@h1:5672/v not connected>"


def test_every_password_is_masked():
    many = "amqp://u:s3cr3t@h1:1/v;amqp://u:s3cr3t@h2:2/v"
    assert "s3cr3t" not in mask_url(many)
    assert "s3cr3t" not in mask_url("amqp://u:s3cr3t@h1:1,h2:2/v")
    broker = AmqpBroker(app, many.split(";"), management_url="http://u:x@h1:15672")
    assert "s3cr3t" not in repr(broker)
    assert repr(broker).count("u:***@") == 2


def test_nodes_of_different_vhosts_are_refused():
    with pytest.raises(ConfigError, match="different vhosts"):
        node_urls("amqp://u:p@h1/a;amqp://u:p@h2/b")


def test_connect_refuses_a_list_with_a_non_amqp_url():
    with pytest.raises(ConfigError, match="amqp://"):
        nb.connect(app, broker=["amqp://u:p@h1/v", "http://h2/"], store=":memory:")
