"""A broker given as three RabbitMQ nodes: failover of the manager and of its pools.

The session's cluster (``cluster.RabbitCluster``) has three nodes; the manager and
its process pool get the three URLs, node 0 first, so all connect to node 0. Node 0
is killed (``kill -9``) while 1,000 tasks run: every connection moves to another
node, the consumers are declared again there, the events caught by the drop are
sent again, and every task ends DONE once. A single-URL broker on the same cluster
still connects to its one node and says so in its repr.
"""

from __future__ import annotations

import pytest
from fault_app import app
from faultkit import RawAmqp, audit, drain, starts

import icij_nb as nb
from icij_nb.testing import wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.cluster, pytest.mark.timeout(300)]

TASKS = 1_000


def test_broker_url_of_three_nodes_masks_every_password(rabbit_cluster, cluster_vhost):
    url = rabbit_cluster.url_from(cluster_vhost, 0).replace(
        "guest:guest", "guest:s3cr3t"
    )
    broker = nb.AmqpBroker(app, url) if hasattr(nb, "AmqpBroker") else None
    from icij_nb.brokers.amqp import AmqpBroker

    broker = AmqpBroker(app, url)
    assert "s3cr3t" not in repr(broker)
    assert repr(broker).count("guest:***@") == 3


def test_kill_of_the_managers_node_every_task_ends_done_once(
    rabbit_cluster, cluster_vhost, scratch, figures
):
    log = scratch / "runs.log"
    url = rabbit_cluster.url_from(cluster_vhost, 0)
    tm = nb.connect(
        app,
        broker=url,
        store=scratch / "tasks.sqlite3",
        management_url=rabbit_cluster.management_url(0),
    )
    raw = RawAmqp(rabbit_cluster.url_from(cluster_vhost, 1).split(";")[0])
    try:
        pool = tm.start_pool("cpu", workers=2, processes=True)
        batch = tm.map(
            "square",
            [{"x": x, "log": str(log), "delay_s": 0.005} for x in range(TASKS)],
        )
        wait_until(
            lambda: tm.counts[nb.TaskState.DONE] >= TASKS // 5,
            timeout_s=120,
            what="a fifth of the tasks to finish",
        )
        done_before = tm.counts[nb.TaskState.DONE]
        rabbit_cluster.kill(0)
        assert batch.results(timeout_s=180) == [x * x for x in range(TASKS)]
        drain(raw)
        pool.stop()
        frame = tm.frame()
        result = audit(frame, {h.id: x * x for x, h in enumerate(batch)}, raw)
        assert (result.done, result.lost, result.duplicates) == (TASKS, 0, 0)
        runs = starts(log)
        assert set(runs) == {str(x) for x in range(TASKS)}
        figures.record(
            "10a-cluster-kill-managers-node",
            **result.figures(),
            done_before_kill=done_before,
            reruns=sum(runs.values()) - TASKS,
        )
    finally:
        tm.close(timeout_s=60)
        raw.close()
        rabbit_cluster.start_node(0)
