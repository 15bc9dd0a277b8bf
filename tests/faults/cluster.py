"""A three-node RabbitMQ cluster of the test session, on free ports of 127.0.0.1.

:class:`RabbitCluster` starts three :class:`faultkit.PrivateRabbit` nodes that share
an Erlang cookie (each has its own node name, ports, data and log directories under
one temporary directory), joins the second and third to the first with
``rabbitmqctl join_cluster``, and stops them all at the end. Scenarios kill
(``kill -9``), stop, start and cut off (:meth:`RabbitCluster.partition`) single
nodes; the machine's own broker on
5672 is never touched. Nothing needs root.

The broker URL a client gets names the three nodes (``;``-separated), so a lost
connection moves to the next node; :meth:`RabbitCluster.url_from` puts a chosen
node first, which is the node a client connects to.
"""

from __future__ import annotations

import contextlib
import urllib.error
import uuid
from pathlib import Path

from faultkit import PrivateRabbit
from rabbit import RabbitMQ, Vhost, create_vhost

from icij_nb.testing import wait_until

#: Partition handling of a 3-node cluster: a minority node pauses itself rather
#: than serve a split brain.
CLUSTER_CONFIG = "cluster_partition_handling = pause_minority\n"
#: Erlang's default net_ticktime (60 s) would take a minute to see a silent peer
#: (frozen, or a link that drops packets) as gone: with 10 s, 10-13 s.
#: ``rabbitmqctl`` gets the same (ERL_FLAGS), or a long command would be dropped.
ERL_FLAGS = "-kernel net_ticktime 10"
NODES = 3


class RabbitCluster:
    """Three clustered RabbitMQ nodes; node 0 is the one the others joined."""

    def __init__(self, base: Path) -> None:
        cookie = uuid.uuid4().hex
        self.nodes = [
            PrivateRabbit(
                base / f"n{i}",
                cookie=cookie,
                extra_config=CLUSTER_CONFIG,
                erl_flags=ERL_FLAGS,
            )
            for i in range(NODES)
        ]

    def start(self) -> None:
        """Start the three nodes at once, then join the others to node 0."""
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_ready()
        first = self.nodes[0].name
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first)
            node.ctl("start_app")
        for node in self.nodes:
            node.wait_ready()
        wait_until(
            lambda: self.running_nodes() == NODES,
            timeout_s=60,
            what="three running nodes",
        )

    def running_nodes(self) -> int:
        """How many nodes the cluster's status counts as running (-1: no answer).

        The management API may not answer while a peer is frozen and not yet
        declared down: that is "no answer", to ask again.
        """
        node = next(n for n in self.nodes if n.running)
        try:
            nodes = node.broker.api("GET", "/api/nodes") or []
        except (OSError, ValueError, urllib.error.URLError):
            return -1
        return sum(1 for n in nodes if n.get("running"))

    def stop(self) -> None:
        """Stop every node (resumed first if suspended); safe to call twice."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                if node.running:
                    node.resume()
        for node in reversed(self.nodes):
            with contextlib.suppress(Exception):
                node.stop()
        for node in self.nodes:
            node.kill()  # whatever did not stop cleanly

    def broker(self, index: int = 0) -> RabbitMQ:
        """Node ``index`` as a broker for the management API."""
        return self.nodes[index].broker

    def make_vhost(self, label: str) -> Vhost:
        """A fresh vhost, created through node 0 (it exists cluster-wide)."""
        return create_vhost(self.nodes[0].broker, label)

    def url_from(self, vhost: Vhost, first: int) -> str:
        """The three nodes' URLs for ``vhost`` joined by ``;``, ``first`` first."""
        order = [*range(first, NODES), *range(first)]
        return ";".join(
            f"amqp://guest:guest@127.0.0.1:{self.nodes[i].amqp_port}/{vhost.quoted}"
            for i in order
        )

    def management_url(self, first: int = 0) -> str:
        """The nodes' management API URLs joined by ``;``, ``first`` first."""
        order = [*range(first, NODES), *range(first)]
        return ";".join(self.nodes[i].broker.management_url for i in order)

    def restart(self, index: int) -> None:
        """Stop node ``index`` cleanly and start it again (it rejoins)."""
        node = self.nodes[index]
        node.stop()
        node.start()

    def partition(self, index: int) -> None:
        """Cut node ``index`` off from its peers; its AMQP port stays open.

        Its Erlang distribution links are closed, and it takes a wrong cookie for
        its peers, so neither side can reconnect (a network partition without
        root). Its peers see it down at once; it sees itself alone, a minority,
        and pauses (pause_minority), closing its client connections.
        ``rabbitmqctl`` still reaches it: the CLI's own cookie is unchanged.
        """
        peers = self._peers(index)
        self.nodes[index].ctl(
            "eval",
            f"[begin erlang:set_cookie(P, 'icij_nb_partitioned'), "
            f"erlang:disconnect_node(P) end || P <- {peers}], ok.",
        )

    def heal(self, index: int) -> None:
        """End :meth:`partition`: the right cookie again, and a ping to each peer."""
        peers, cookie = self._peers(index), self.nodes[index].cookie
        self.nodes[index].ctl(
            "eval",
            f"[begin erlang:set_cookie(P, '{cookie}'), net_adm:ping(P) end "
            f"|| P <- {peers}], ok.",
        )

    def _peers(self, index: int) -> str:
        names = [f"'{n.name}'" for i, n in enumerate(self.nodes) if i != index]
        return f"[{', '.join(names)}]"

    def kill(self, index: int) -> None:
        """``kill -9`` node ``index``."""
        self.nodes[index].kill()

    def start_node(self, index: int) -> None:
        """Start a killed or stopped node again; it rejoins the cluster."""
        self.start_nodes(index)

    def start_nodes(self, *indices: int) -> None:
        """Start nodes at once: after a whole-cluster stop, each waits for peers."""
        for i in indices:
            if not self.nodes[i].running:
                self.nodes[i].launch()
        for i in indices:
            self.nodes[i].wait_ready()
