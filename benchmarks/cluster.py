"""End-to-end tasks/s on a three-node RabbitMQ cluster against one node, same sitting.

Run from the repository root (needs rabbitmq-server and Erlang, as the fault suite):

    .venv/bin/python benchmarks/cluster.py [--tasks 2000] [--rounds 2]

It starts a private standalone node and a private three-node cluster
(``tests/faults/faultkit.py``, ``tests/faults/cluster.py``), then times
``tm.gather(tm.map("square", ...))`` for a manager and a process pool of two, each
run on a fresh vhost, in three set-ups taken in turn, ``--rounds`` times:

- ``standalone node``: one RabbitMQ node alone (quorum queues of one replica);
- ``cluster, one URL``: node 0 of the cluster only (quorum queues replicated on
  the three nodes, no failover on the client side);
- ``cluster, three URLs``: the three nodes' URL (failover connection; mirrored
  classic event queues).

Then it stops them all. Rounds alternate so that a busy moment of a shared
machine does not land on one set-up only; it prints each run and the best of each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "faults")]

from cluster import RabbitCluster  # noqa: E402  # tests/faults on sys.path first
from fault_app import app  # noqa: E402
from faultkit import PrivateRabbit  # noqa: E402

import icij_nb as nb  # noqa: E402


def measure(url: str, management_url: str, tasks: int, work: Path) -> float:
    tm = nb.connect(
        app, broker=url, store=work / "t.sqlite3", management_url=management_url
    )
    try:
        tm.start_pool("cpu", workers=2, processes=True)
        tm.gather(tm.map("square", [{"x": x} for x in range(50)]), timeout_s=120)
        began = time.perf_counter()
        tm.gather(tm.map("square", [{"x": x} for x in range(tasks)]), timeout_s=600)
        return tasks / (time.perf_counter() - began)
    finally:
        tm.close(timeout_s=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="icijbench-"))
    single = PrivateRabbit(base / "alone")
    cluster = RabbitCluster(base / "cluster")
    best: dict[str, float] = {}
    try:
        single.start()
        cluster.start()
        for round_ in range(args.rounds):
            for i, (label, url, mgmt) in enumerate(setups(single, cluster, round_)):
                work = base / f"w{round_}-{i}"
                work.mkdir()
                os.chdir(work)
                rate = measure(url, mgmt, args.tasks, work)
                best[label] = max(best.get(label, 0.0), rate)
                print(f"round {round_ + 1} {label}: {rate:,.0f} tasks/s", flush=True)
        for label, rate in best.items():
            print(f"best {label}: {rate:,.0f} tasks/s ({args.tasks} tasks)")
    finally:
        os.chdir(REPO)
        cluster.stop()
        single.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


def setups(
    single: PrivateRabbit, cluster: RabbitCluster, round_: int
) -> list[tuple[str, str, str]]:
    """(label, broker URL, management URL) of each set-up, on fresh vhosts."""
    alone = single.make_vhost(f"bench-alone-{round_}")
    one, three = (cluster.make_vhost(f"bench-{n}-{round_}") for n in (1, 3))
    return [
        ("standalone node", alone.amqp_url, alone.management_url),
        (
            "cluster, one URL",
            cluster.url_from(one, 0).split(";")[0],
            cluster.management_url(0).split(";")[0],
        ),
        ("cluster, three URLs", cluster.url_from(three, 0), cluster.management_url(0)),
    ]


if __name__ == "__main__":
    sys.exit(main())
