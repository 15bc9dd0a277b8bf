"""End-to-end tasks/s on a three-node RabbitMQ cluster against one node, same sitting.

Run from the repository root (needs rabbitmq-server and Erlang, as the fault suite):

    .venv/bin/python benchmarks/cluster.py [--tasks 2000]

It starts a private three-node cluster (``tests/faults/cluster.py``), then times
``tm.gather(tm.map("square", ...))`` for a manager and a process pool of two on
one node's URL, then on the three nodes' URL (the cluster's mirroring policies
on), each on a fresh vhost, and stops the cluster. The single-node run uses the
same cluster's node 0: quorum queues still replicate to three nodes there, so the
difference is the client side (failover connection, mirrored event queue).
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
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="icijbench-"))
    cluster = RabbitCluster(base)
    try:
        cluster.start()
        for label, nodes in (("one node", 1), ("three nodes", 3)):
            vhost = cluster.make_vhost(f"bench-{nodes}")
            url = ";".join(cluster.url_from(vhost, 0).split(";")[:nodes])
            mgmt = ";".join(cluster.management_url(0).split(";")[:nodes])
            work = base / f"w{nodes}"
            work.mkdir()
            os.chdir(work)
            rate = measure(url, mgmt, args.tasks, work)
            print(f"{label}: {rate:,.0f} tasks/s ({args.tasks} tasks)", flush=True)
    finally:
        os.chdir(REPO)
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
