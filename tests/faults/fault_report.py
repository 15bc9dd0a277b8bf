"""The scenario table of docs/reliability.md, from the figures of a real run.

The fault suite writes what each scenario measured to ``build/fault-figures.json``
(``tests/faults/conftest.py``). This script renders the table and, with ``--write``,
puts it in docs/reliability.md between its ``fault-figures`` markers::

    .venv/bin/python -m pytest tests/faults -p no:cacheprovider
    .venv/bin/python tests/faults/fault_report.py --write

The descriptions below are the single list of scenarios: ``test_fault_report.py``
checks that the suite records no scenario missing from it and that the page shows
every one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FIGURES = REPO / "build" / "fault-figures.json"
PAGE = REPO / "docs" / "reliability.md"
START = "<!-- fault-figures:start (tests/faults/fault_report.py --write) -->"
END = "<!-- fault-figures:end -->"

#: scenario id -> (what happens, what it proves)
SCENARIOS: dict[str, tuple[str, str]] = {
    "1a-kill9-process-pool": (
        "`kill -9` of a process-pool worker in the middle of a task",
        "RabbitMQ gives the task to another worker and it completes; the store "
        "counts the lost attempt (`attempts` 2, a `WorkerLost` record); the pool "
        "replaces the dead process",
    ),
    "1b-kill9-cli-pool": (
        "`kill -9` of a worker of `icij-nb workers start -n 2` in the middle of a task",
        "the same for a CLI pool: redelivered, completed once, lost attempt "
        "recorded, dead process replaced",
    ),
    "2-sigterm-cli-pool": (
        "SIGTERM to a CLI pool running two tasks, ten more queued",
        "the task that can finish within the grace period finishes; the other is "
        "requeued and completes on the next pool; the pool exits with status 0",
    ),
    "3-broker-restart": (
        "RabbitMQ stopped and started again in the middle of 1,000 tasks",
        "the manager and the worker processes reconnect by themselves; events "
        "caught by the outage are sent again; every task ends DONE once",
    ),
    "4-kernel-killed-new-manager": (
        "the kernel killed (SIGKILL) mid-run while a CLI pool works on",
        "a new manager on the same store and vhost adopts the tasks, applies the "
        "events that waited in `MANAGER_EVENT`; `tm.result(task_id)` works for "
        "each; `tm.frame()` shows the true states",
    ),
    "4b-kernel-killed-right-after-submit": (
        "the kernel killed the instant `tm.map()` returns",
        "a task is in the store once `submit`/`map` returns: the next manager "
        "knows every task and refuses none of their events",
    ),
    "5-kernel-killed-with-process-pool": (
        "the kernel killed with a process pool running",
        "no worker process outlives it (read from `/proc`); the tasks it held "
        "go back to their queue and a new manager finishes them",
    ),
    "6-poison-task": (
        "a task that kills its worker every time (`os._exit`), among 20 good ones",
        "RabbitMQ gives up after its delivery limit; the task shows ERROR with a "
        "`DeadLettered` record saying why; the good tasks complete; the pool "
        "stays whole",
    ),
    "7-burst-100k-slow-consumer": (
        "100,000 in-kernel tasks queued at once for one worker",
        "memory stays bounded: resident memory grows by less than 3 KB per task, "
        "at the peak and at the end; all complete",
    ),
    "8a-hostile-manager-events": (
        "hypothesis-made hostile bodies published to a running manager's events",
        "none crashes it; each refused body is dead-lettered and logged exactly "
        "once; valid events for finished tasks change nothing",
    ),
    "8b-hostile-task-messages": (
        "hypothesis-made hostile bodies published to a running worker's queue",
        "none crashes it; each body that does not parse is dead-lettered and "
        "logged exactly once; the rest run or fail as unknown tasks",
    ),
    "9a-pickle-payloads": (
        "pickle payloads sent to a manager and to a worker process",
        "nothing is unpickled: every payload is dead-lettered",
    ),
    "9b-password-never-shown": (
        "a full run (manager, process and CLI pools, board, errors, a saved "
        "notebook) with a distinctive RabbitMQ password",
        "the password is in no repr, log, error, board, notebook or store file",
    ),
    "9c-refusals": (
        "a wrong password, no access to the vhost, no configure / write / read "
        "permission",
        "each is one clear error naming the vhost (and the permission), with no "
        "connection left retrying",
    ),
    # Three-node cluster (tests/faults/test_fault_cluster_scenarios.py): 1,000
    # tasks, a manager on node 0, two `icij-nb workers start` pools on nodes 1, 2.
    "10a-cluster-kill-managers-node": (
        "cluster: `kill -9` of the node the manager is connected to, mid-run",
        "the manager moves to another node, declares its consumers there, and "
        "every task ends DONE once; events caught by the drop are sent again",
    ),
    "10b-cluster-kill-pools-node": (
        "cluster: `kill -9` of the node a pool is connected to, mid-run",
        "the pool moves to another node; the tasks it held are redelivered "
        "(quorum queues) and complete once",
    ),
    "10c-cluster-rolling-restart": (
        "cluster: the three nodes restarted one at a time during the run",
        "every client moves away from each node in turn; nothing lost or stuck",
    ),
    "10d-cluster-node-partitioned-30s": (
        "cluster: one node cut off from its peers for 30 s (its Erlang "
        "distribution links closed, a wrong cookie for its peers; its AMQP port "
        "open) while tasks are submitted",
        "the majority goes on; the cut node pauses itself (pause_minority) and "
        "drops its clients, whose connections move to another node; healed, it "
        "rejoins; every task ends DONE once",
    ),
    "10e-cluster-down-20s-outbox": (
        "cluster: all three nodes killed (`kill -9`) for 20 s while the notebook "
        "submits",
        "submits return handles (tasks CREATED, waiting in the outbox of the "
        "store) and are published when the cluster is back; none lost",
    ),
    "10f-cluster-minority-alive": (
        "cluster: two nodes killed (a minority left) for 15 s while the notebook "
        "submits",
        "quorum queues take no writes: unconfirmed submits wait in the outbox "
        "(bounded) and are published once a majority is back; none lost",
    ),
}

LABELS = {
    "submitted": "submitted",
    "done": "done",
    "error": "error (with reason)",
    "lost": "**lost**",
    "duplicates": "**duplicates**",
    "wrong_results": "wrong results",
    "left_in_queues": "left in queues",
    "reruns": "re-runs",
    "worker_lost_records": "WorkerLost records",
    "respawned": "processes replaced",
    "rss_before_mb": "RSS before (MB)",
    "rss_peak_mb": "RSS peak (MB)",
    "rss_growth_peak_bytes_per_task": "**RSS growth at the peak, bytes/task**",
    "rss_growth_end_bytes_per_task": "**RSS growth at the end, bytes/task**",
    "bound_bytes_per_task": "bound, bytes/task",
    "seconds": "seconds (not a target)",
    "stuck": "**stuck**",
    "redelivered": "redelivered (ran twice)",
    "slowest_submit_s": "slowest submit (s)",
}
HIDDEN = {"cancelled"}


def figures_text(values: dict[str, Any]) -> str:
    parts = []
    for key, value in values.items():
        if key in HIDDEN:
            continue
        label = LABELS.get(key, key.replace("_", " "))
        parts.append(
            f"{label} {value:,}" if isinstance(value, int) else f"{label} {value}"
        )
    return " · ".join(parts)


def render(data: dict[str, Any]) -> str:
    scenarios = data.get("scenarios", {})
    rows = [
        "| # | Scenario | What it proves | Figures of the last run |",
        "|---|---|---|---|",
    ]
    for key, (what, proves) in SCENARIOS.items():
        number = key.split("-", 1)[0]
        shown = figures_text(scenarios[key]) if key in scenarios else "not run"
        rows.append(f"| {number} | {what} | {proves} | {shown} |")
    machine = data.get("machine", {})
    rows.append("")
    rows.append(
        f"Last run: {data.get('written_at', '?')}, {machine.get('cpus', '?')} CPUs, "
        f"Python {machine.get('python', '?')}, RabbitMQ node (and, for 10, "
        "three-node cluster) of the suite's own."
    )
    return "\n".join(rows)


def write_page(table: str) -> None:
    text = PAGE.read_text()
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"{PAGE} lacks the markers {START!r} and {END!r}")
    PAGE.write_text(f"{head}{START}\n{table}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update the page")
    args = parser.parse_args(argv)
    data = json.loads(FIGURES.read_text())
    unknown = sorted(set(data.get("scenarios", {})) - set(SCENARIOS))
    if unknown:
        raise SystemExit(
            f"scenarios without a description in fault_report.py: {unknown}"
        )
    table = render(data)
    if args.write:
        write_page(table)
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
