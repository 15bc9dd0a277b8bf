"""The harness checks itself: the real icij task manager drives real icij pools.

Nothing of icij_nb runs here. If these fail, the interop tests that pit icij_nb
against icij-worker cannot be trusted: the peer virtualenv, the fixtures or the
peers' helpers are broken. The topology test is also the reference the AMQP broker
must match (docs/protocol.md §1).
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(300)]

TASK_QUEUE_ARGUMENTS = {
    "x-queue-type": "quorum",
    "x-dead-letter-exchange": "exchangeDLQTasks",
    "x-dead-letter-routing-key": "routingKeyDLQTasks",
}


def test_icij_manager_runs_hello_on_an_icij_pool(icij_pool, icij_manager):
    icij_pool()

    run = icij_manager([{"name": "hello", "args": {"greeted": "world"}}])

    [task] = run.tasks
    assert task["state"] == "DONE"
    assert task["result"] == "hello world"
    assert task["errors"] == []


def test_grouped_icij_pool_runs_grouped_tasks(icij_pool, icij_manager, vhost):
    pool = icij_pool(group="grp")

    run = icij_manager([{"name": "grouped_hello", "args": {"greeted": "grp"}}])

    [task] = run.tasks
    assert (task["state"], task["result"]) == ("DONE", "hello grp")
    assert pool.queue == "TASK.grp"
    assert vhost.consumer_count("TASK") == 0


def test_icij_app_tasks_end_as_documented(icij_pool, icij_manager):
    icij_pool()

    run = icij_manager(
        [
            {"name": "with_progress", "args": {"n_steps": 4}},
            {"name": "flaky", "args": {"fail_times": 1, "key": "once"}},
            {"name": "flaky", "args": {"fail_times": 3, "key": "always"}},
            {"name": "fatal", "args": {}},
            {"name": "returns_none", "args": {}},
            {"name": "sleepy", "args": {"duration": 60}, "cancel_when": "running"},
        ]
    )

    progress, flaky_once, flaky_always, fatal, returns_none, sleepy = run.tasks
    assert (progress["state"], progress["result"]) == ("DONE", 4)
    assert (flaky_once["state"], flaky_once["result"]) == (
        "DONE",
        "succeeded after 1 failures",
    )
    assert [(e["name"], e["cause"]) for e in flaky_once["errors"]] == [
        ("Flaky", "'root cause'")
    ]
    # icij's max_retries=3 means three attempts in all (docs/protocol.md §3.3).
    assert flaky_always["state"] == "ERROR"
    assert [e["retries_left"] for e in flaky_always["errors"]] == [2, 1, 0]
    assert fatal["state"] == "ERROR"
    assert [(e["name"], e["retries_left"]) for e in fatal["errors"]] == [
        ("ValueError", 0)
    ]
    assert (returns_none["state"], returns_none["result"]) == ("DONE", {"none": None})
    assert sleepy["state"] == "CANCELLED"


def test_icij_manager_declares_the_protocol_topology(icij_manager, vhost):
    icij_manager([])

    queues = {q["name"]: q for q in vhost.queues()}
    for name in ("TASK", "TASK.grp"):
        assert queues[name]["type"] == "quorum"
        assert queues[name]["arguments"] == TASK_QUEUE_ARGUMENTS
    assert queues["MANAGER_EVENT"]["type"] == "classic"
    assert queues["MANAGER_EVENT"]["arguments"] == {
        "x-dead-letter-exchange": "exchangeDLQManagerEvents",
        "x-dead-letter-routing-key": "routingKeyDLQManagerEvents",
    }
    for name in ("TASK_DLQ", "MANAGER_EVENT_DLQ", "WORKER_EVENT", "MONITORING"):
        assert (queues[name]["type"], queues[name]["arguments"]) == ("classic", {})
    assert all(q["durable"] and not q["auto_delete"] for q in queues.values())

    exchanges = {x["name"]: x["type"] for x in vhost.exchanges()}
    assert exchanges == {
        "exchangeMainTasks": "direct",
        "exchangeDLQTasks": "direct",
        "exchangeManagerEvents": "direct",
        "exchangeDLQManagerEvents": "direct",
        "exchangeWorkerEvents": "fanout",
        "exchangeMonitoring": "direct",
    }
    bindings = {
        (b["source"], b["routing_key"], b["destination"]) for b in vhost.bindings()
    }
    assert bindings == {
        ("exchangeMainTasks", "routingKeyMainTasks", "TASK"),
        ("exchangeMainTasks", "grp", "TASK.grp"),
        ("exchangeDLQTasks", "routingKeyDLQTasks", "TASK_DLQ"),
        ("exchangeManagerEvents", "routingKeyManagerEvents", "MANAGER_EVENT"),
        (
            "exchangeDLQManagerEvents",
            "routingKeyDLQManagerEvents",
            "MANAGER_EVENT_DLQ",
        ),
        ("exchangeWorkerEvents", "routingKeyWorkerEvents", "WORKER_EVENT"),
        ("exchangeMonitoring", "routingKeyMonitoring", "MONITORING"),
    }

    policies = {p["name"]: p for p in vhost.policies()}
    task_policy = {"overflow": "reject-publish", "delivery-limit": 10}
    assert policies["task-group-policy-TASK"]["pattern"] == "^TASK$"
    assert policies["task-group-policy-TASK"]["definition"] == task_policy
    assert policies["task-group-policy-TASK.grp"]["pattern"] == r"^TASK\.grp$"
    assert policies["task-group-policy-TASK.grp"]["definition"] == task_policy
    assert policies["health-policy-MONITORING"]["definition"] == {
        "message-ttl": 5000,
        "expires": 3600000,
    }
    assert {p["apply-to"] for p in policies.values()} == {"queues"}
