"""Observe-only managers: a notebook watches the vhost of another task manager
(Datashare's, here an ordinary icij_nb manager with its own pool) without taking
its events and without sending anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rabbit import queue_counts

import icij_nb as nb
from icij_nb.testing import wait_until

pytestmark = pytest.mark.rabbitmq

WAIT_S = 30.0


def owner_app() -> nb.App:
    """The watched side's app ("Datashare")."""
    app = nb.App("datashare", groups=(nb.TaskGroup("cpu"),))

    @app.task(group="cpu")
    def index(doc: str, lang: str = "en") -> dict[str, Any]:
        return {"doc": doc, "lang": lang, "words": len(doc.split())}

    @app.task(group="cpu")
    def broken(doc: str) -> None:
        raise RuntimeError(f"cannot read {doc}")

    return app


@pytest.fixture
def managers(vhost) -> Iterator[list[nb.TaskManager]]:
    """Managers a test opens on the vhost; closed at teardown, the last first."""
    made: list[nb.TaskManager] = []
    yield made
    for tm in reversed(made):
        tm.close(timeout_s=30)


def ended(tm: nb.TaskManager, task_id: str) -> bool:
    try:
        return tm.get(task_id).state.is_ready
    except nb.UnknownTask:
        return False


def consumers_of(vhost, queue: str) -> int:
    return queue_counts(vhost, queue)[1]


def test_an_observer_sees_every_task_and_its_end_without_taking_events(vhost, managers):
    # The notebook watches with an app of its own that only names the groups.
    watcher_app = nb.App("notebook", groups=(nb.TaskGroup("cpu"),))
    observer = nb.connect(
        watcher_app, broker=vhost.amqp_url, store=":memory:", observe_only=True
    )
    managers.append(observer)
    owner = nb.connect(owner_app(), broker=vhost.amqp_url, store=":memory:")
    managers.append(owner)
    vhost.wait_until(
        lambda: consumers_of(vhost, "MANAGER_EVENT") == 1,
        what="the owner to consume MANAGER_EVENT",
    )
    owner.start_pool("cpu", workers=2)

    good = owner.map(
        "index", [{"doc": f"doc {i} text", "lang": "fr"} for i in range(4)]
    )
    bad = owner.submit("broken", {"doc": "scan.pdf"})

    # The owner gets every event of its tasks: nothing was taken from it.
    assert good.results(timeout_s=WAIT_S) == [
        {"doc": f"doc {i} text", "lang": "fr", "words": 3} for i in range(4)
    ]
    with pytest.raises(nb.TaskFailed, match=r"cannot read scan\.pdf"):
        bad.result(timeout_s=WAIT_S)

    ids = [h.id for h in good] + [bad.id]
    wait_until(
        lambda: all(ended(observer, i) for i in ids),
        timeout_s=WAIT_S,
        what="the observer to see every task end",
    )
    for i, handle in enumerate(good):
        seen = observer.get(handle.id)
        assert (seen.name, seen.group, seen.args) == (
            "index",
            "cpu",
            {"doc": f"doc {i} text", "lang": "fr"},
        )
        assert seen.state is nb.TaskState.DONE
        assert seen.result == {"doc": f"doc {i} text", "lang": "fr", "words": 3}
        assert seen.worker_id == owner.get(handle).worker_id
    failed = observer.get(bad.id)
    assert (failed.name, failed.group, failed.args) == (
        "broken",
        "cpu",
        {"doc": "scan.pdf"},
    )
    assert failed.state is nb.TaskState.ERROR
    assert [e.name for e in failed.errors] == ["RuntimeError"]
    frame = observer.frame().set_index("id")
    assert sorted(frame.index) == sorted(ids)
    assert frame.loc[bad.id, "state"] == "ERROR"
    # Only the owner consumes MANAGER_EVENT, and nothing was dead-lettered.
    assert consumers_of(vhost, "MANAGER_EVENT") == 1
    assert queue_counts(vhost, "MANAGER_EVENT") == (0, 1)
    assert queue_counts(vhost, "MANAGER_EVENT_DLQ") == (0, 0)

    owner.close()
    assert consumers_of(vhost, "MANAGER_EVENT") == 0
    assert not observer.closed


def test_an_observer_alone_declares_no_protocol_queue_and_consumes_none(
    vhost, managers
):
    observer = nb.connect(
        nb.App("notebook", groups=(nb.TaskGroup("cpu"),)),
        broker=vhost.amqp_url,
        store=":memory:",
        observe_only=True,
    )
    managers.append(observer)

    # Its private queues are exclusive; it leaves the protocol's queues to the owner.
    wait_until(
        lambda: len(vhost.queues()) >= 2,
        timeout_s=WAIT_S,
        what="the observer's private queues",
    )
    assert all(q["exclusive"] for q in vhost.queues())
    assert "MANAGER_EVENT" not in vhost.queue_names()
    assert vhost.policies() == []


def test_an_observer_refuses_to_send_anything(vhost, managers):
    owner = nb.connect(owner_app(), broker=vhost.amqp_url, store=":memory:")
    managers.append(owner)
    queued = owner.submit("index", {"doc": "a b"})  # no pool: it stays queued
    observer = nb.connect(
        owner_app(), broker=vhost.amqp_url, store=":memory:", observe_only=True
    )
    managers.append(observer)

    refusals: list[Callable[[], object]] = [
        lambda: observer.submit("index", {"doc": "x"}),
        lambda: observer.map("index", [{"doc": "x"}]),
        lambda: observer.cancel(queued.id),
        lambda: observer.retry(queued.id),
        lambda: observer.shutdown_workers(),
        lambda: observer.start_pool("cpu"),
    ]
    for refused in refusals:
        with pytest.raises(nb.ObserveOnly, match="only observes"):
            refused()

    # Nothing reached the broker: the one queued task is still alone in its queue.
    assert queue_counts(vhost, "TASK.cpu") == (1, 0)
    assert queued.state is nb.TaskState.QUEUED
