"""Cluster faults: 1,000 tasks through a manager and two pools on three RabbitMQ nodes.

The manager connects to node 0 (its URL lists the three nodes, node 0 first); two
``icij-nb workers start`` pools connect to nodes 1 and 2. Each scenario breaks the
cluster mid-run in one way, then audits: every task DONE once in the store (lost and
stuck 0, no duplicate row, the right result), nothing left in the queues, and how
many tasks ran more than once (redelivered: the tasks' own log).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cluster import RabbitCluster
from fault_app import app
from faultkit import CliPool, RawAmqp, audit, drain, starts

import icij_nb as nb
from icij_nb.testing import wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.cluster, pytest.mark.timeout(420)]

TASKS = 1_000


class Run:
    """A manager on node 0, two CLI pools on nodes 1 and 2, and what was submitted."""

    def __init__(self, cluster: RabbitCluster, vhost: Any, scratch: Path) -> None:
        self.cluster, self.log = cluster, scratch / "runs.log"
        self.tm = nb.connect(
            app,
            broker=cluster.url_from(vhost, 0),
            store=scratch / "tasks.sqlite3",
            management_url=cluster.management_url(0),
        )
        env = {k: v for k, v in os.environ.items() if "AMQP" not in k}
        self.pools = [
            CliPool(
                [
                    "-g",
                    "cpu",
                    "-n",
                    "1",
                    "--broker",
                    cluster.url_from(vhost, i),
                    "--management-url",
                    cluster.management_url(i),
                ],
                scratch / f"cli-pool-{i}.log",
                env=env,
            )
            for i in (1, 2)
        ]
        self.url0 = cluster.url_from(vhost, 0).split(";")[0]
        self.raw = RawAmqp(self.url0)
        self.handles: list[nb.TaskHandle] = []
        self.slowest_submit_s = 0.0
        try:
            wait_until(
                lambda: self.raw.count("TASK.cpu")[1] == 2,
                timeout_s=60,
                what="both pools to consume",
            )
        except BaseException:
            self.close()  # no pool may outlive a failed set-up
            raise

    def submit(self, n: int) -> None:
        start = len(self.handles)
        args = [
            {"x": x, "log": str(self.log), "delay_s": 0.01}
            for x in range(start, min(start + n, TASKS))
        ]
        began = time.monotonic()
        self.handles += self.tm.map("square", args)
        self.slowest_submit_s = max(self.slowest_submit_s, time.monotonic() - began)

    def submit_for(self, seconds: float, *, tasks: int | None = None) -> float:
        """Submit ``tasks`` (default: all left), 10 at a time, spread evenly over
        ``seconds``; return after ``seconds`` (the fault lasts that long), with the
        slowest submit of that time."""
        left = TASKS - len(self.handles) if tasks is None else tasks
        batches = max(1, -(-left // 10))
        began, slowest = time.monotonic(), 0.0
        for i in range(batches):
            at = time.monotonic()
            self.submit(10)
            slowest = max(slowest, time.monotonic() - at)
            time.sleep(max(0.0, began + (i + 1) * seconds / batches - time.monotonic()))
        time.sleep(max(0.0, began + seconds - time.monotonic()))
        return slowest

    def wait_done(self, fraction: float) -> None:
        wait_until(
            lambda: self.tm.counts[nb.TaskState.DONE] >= TASKS * fraction,
            timeout_s=120,
            what=f"{fraction:.0%} of the tasks to finish",
        )

    def finish(self, figures: Any, scenario: str, **extra: Any) -> None:
        self.submit(TASKS)  # whatever the fault left unsubmitted
        began = time.monotonic()
        self.tm.gather(self.handles, timeout_s=240)
        wait_until(
            lambda: self.tm.counts[nb.TaskState.DONE] == TASKS,
            timeout_s=30,
            what="the manager's counts to agree",
        )
        # A fresh raw connection: the set-up's one may be on a node killed since.
        self.raw.close()
        self.raw = RawAmqp(self.url0)
        drain(self.raw)
        for pool in self.pools:
            pool.proc.send_signal(signal.SIGTERM)
            pool.proc.wait(timeout=60)
        result = audit(
            self.tm.frame(),
            {h.id: x * x for x, h in enumerate(self.handles)},
            self.raw,
        )
        runs = starts(self.log)
        assert (result.done, result.lost, result.duplicates, result.wrong_results) == (
            TASKS,
            0,
            0,
            0,
        )
        assert set(runs) == {str(x) for x in range(TASKS)}
        figures.record(
            scenario,
            **result.figures(),
            stuck=result.unfinished,
            redelivered=sum(runs.values()) - TASKS,
            slowest_submit_s=round(self.slowest_submit_s, 2),
            seconds_to_finish_after_fault=round(time.monotonic() - began, 1),
            **extra,
        )

    def close(self) -> None:
        self.tm.close(timeout_s=60)
        for pool in self.pools:
            pool.kill()
        self.raw.close()


@pytest.fixture
def run(rabbit_cluster, cluster_vhost, scratch) -> Any:
    made = Run(rabbit_cluster, cluster_vhost, scratch)
    yield made
    made.close()


def _mid_run(run: Run, fault: Callable[[], None]) -> int:
    run.submit(TASKS)
    run.wait_done(0.2)
    done = run.tm.counts[nb.TaskState.DONE]
    fault()
    return done


def test_kill_of_the_managers_node(run, rabbit_cluster, figures):
    def fault() -> None:
        rabbit_cluster.kill(0)
        time.sleep(5)
        rabbit_cluster.start_node(0)

    done = _mid_run(run, fault)
    run.finish(figures, "10a-cluster-kill-managers-node", done_before_fault=done)


def test_kill_of_a_pools_node(run, rabbit_cluster, figures):
    def fault() -> None:
        rabbit_cluster.kill(1)
        time.sleep(5)
        rabbit_cluster.start_node(1)

    done = _mid_run(run, fault)
    run.finish(figures, "10b-cluster-kill-pools-node", done_before_fault=done)


def test_rolling_restart_of_the_three_nodes(run, rabbit_cluster, figures):
    def fault() -> None:
        for index in range(3):
            rabbit_cluster.restart(index)

    done = _mid_run(run, fault)
    run.finish(figures, "10c-cluster-rolling-restart", done_before_fault=done)


def test_one_node_partitioned_30s(run, rabbit_cluster, figures):
    # Node 2's distribution links are cut for 30 s (faults/cluster.py): its
    # peers see it down, it pauses itself (pause_minority) and drops its clients,
    # so its pool moves to another node; healed, it rejoins.
    run.submit(500)
    run.wait_done(0.1)
    began = time.monotonic()
    rabbit_cluster.partition(2)
    try:
        wait_until(
            lambda: rabbit_cluster.running_nodes() == 2,
            timeout_s=25,
            what="the majority to see the cut node as down",
        )
        seen_down_s = time.monotonic() - began
        slowest = run.submit_for(30 - seen_down_s, tasks=300)
    finally:
        rabbit_cluster.heal(2)
    cut_s = time.monotonic() - began
    wait_until(
        lambda: rabbit_cluster.running_nodes() == 3,
        timeout_s=60,
        what="the cut node to rejoin",
    )
    run.finish(
        figures,
        "10d-cluster-node-partitioned-30s",
        partitioned_s=round(cut_s, 1),
        seen_down_after_s=round(seen_down_s, 1),
        slowest_submit_while_cut_s=round(slowest, 2),
        rejoined_after_s=round(time.monotonic() - began - cut_s, 1),
    )


def test_whole_cluster_down_20s_while_submitting(run, rabbit_cluster, figures):
    run.submit(300)
    run.wait_done(0.1)
    began = time.monotonic()
    for index in range(3):
        rabbit_cluster.kill(index)
    slowest = run.submit_for(20)
    waiting = run.tm.counts[nb.TaskState.CREATED]
    rabbit_cluster.start_nodes(0, 1, 2)
    down_s = time.monotonic() - began
    assert waiting > 0
    run.finish(
        figures,
        "10e-cluster-down-20s-outbox",
        down_s=round(down_s, 1),
        waited_in_outbox=waiting,
        slowest_submit_while_down_s=round(slowest, 2),
    )


def test_minority_left_alive(run, rabbit_cluster, figures):
    run.submit(300)
    run.wait_done(0.1)
    began = time.monotonic()
    rabbit_cluster.kill(1)
    rabbit_cluster.kill(2)
    slowest = run.submit_for(15)
    waiting = run.tm.counts[nb.TaskState.CREATED]
    rabbit_cluster.start_nodes(1, 2)
    down_s = time.monotonic() - began
    assert waiting > 0
    run.finish(
        figures,
        "10f-cluster-minority-alive",
        minority_s=round(down_s, 1),
        waited_in_outbox=waiting,
        slowest_submit_while_minority_s=round(slowest, 2),
    )
