"""The outbox: submits no broker node takes wait in the store, and go out later.

A durable engine (as RabbitMQ's) whose broker can be switched off stands in for a
cluster that does not answer: :class:`SwitchableEngine` is the in-process broker's
engine, marked durable, whose ``submit`` raises ``BrokerUnavailable`` while it is
down. Workers, the ledger, the SQLite store and the outbox are the real ones. The
cluster scenarios (tests/faults/test_fault_cluster_scenarios.py) do the same on
three real RabbitMQ nodes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from outbox_app import SwitchableEngine, ran, start

import icij_nb as nb
from icij_nb.errors import BrokerUnavailable
from icij_nb.frames import WAITING_FOR_BROKER
from icij_nb.testing import wait_until

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def managers(tmp_path: Path) -> Iterator[list[nb.TaskManager]]:
    made: list[nb.TaskManager] = []
    yield made
    for tm in made:
        tm.close(timeout_s=30)


def manager(
    made: list[nb.TaskManager], store: Path, *, down: bool
) -> tuple[nb.TaskManager, SwitchableEngine]:
    tm, engine = start(str(store), down=down)
    made.append(tm)
    return tm, engine


def test_a_submit_no_node_takes_returns_at_once_waits_and_goes_out_in_order(
    managers, tmp_path
):
    ran.clear()
    tm, engine = manager(managers, tmp_path / "tasks.sqlite3", down=True)
    first = tm.map("square", [{"x": x} for x in range(20)])
    second = tm.submit("square", {"x": 20})  # behind the first, in the outbox

    ids = [h.id for h in [*first, second]]
    assert tm.counts[nb.TaskState.CREATED] == 21
    assert tm.waiting_for_broker == 21
    assert all(tm.waits_for_broker(i) for i in ids)
    frame = tm.frame()
    assert len(frame) == 21
    assert (frame["state"] == "CREATED").all()
    assert (frame["error"] == WAITING_FOR_BROKER).all()
    assert "waiting_for_broker=21" in repr(tm)

    tm.start_pool("cpu", workers=1)
    engine.down = False
    assert tm.gather(ids, timeout_s=30) == [x * x for x in range(21)]
    assert engine.published == ids  # the order of the submits
    assert ran == list(range(21))  # one worker: the order they ran in
    assert tm.waiting_for_broker == 0
    assert not tm.waits_for_broker(ids[0])
    assert tm.frame()["error"].isna().all()


def test_the_board_says_how_many_wait_for_the_broker(managers, tmp_path):
    pytest.importorskip("ipywidgets")
    tm, engine = manager(managers, tmp_path / "tasks.sqlite3", down=True)
    tm.map("square", [{"x": x} for x in range(3)])
    board = tm.board()
    try:
        wait_until(
            lambda: "3 waiting for the broker" in board.counts_html.value,
            timeout_s=5,
            what="the board's header",
        )
        text = board._repr_mimebundle_()["text/plain"]
        assert "(3 waiting for the broker)" in text
        assert (board.frame["error"] == WAITING_FOR_BROKER).all()
        engine.down = False
        tm.start_pool("cpu", workers=1)
        wait_until(
            lambda: "waiting for the broker" not in board.counts_html.value,
            timeout_s=10,
            what="the board to stop saying so",
        )
    finally:
        board.close()


def test_past_the_bound_a_submit_raises_and_records_nothing(
    managers, tmp_path, monkeypatch
):
    monkeypatch.setenv("ICIJ_NB_OUTBOX_LIMIT", "5")
    tm, _ = manager(managers, tmp_path / "tasks.sqlite3", down=True)
    kept = tm.map("square", [{"x": x} for x in range(4)])

    with pytest.raises(BrokerUnavailable, match=r"outbox's bound \(5") as caught:
        tm.map("square", [{"x": x} for x in range(2)])

    assert len(caught.value.not_queued) == 2
    assert "ICIJ_NB_OUTBOX_LIMIT" in str(caught.value)
    assert tm.waiting_for_broker == 4
    frame = tm.frame()
    assert sorted(frame["id"]) == sorted(h.id for h in kept)
    assert not set(caught.value.not_queued) & set(frame["id"])


def test_a_task_waiting_past_the_timeout_ends_in_error_and_can_be_retried(
    managers, tmp_path, monkeypatch
):
    monkeypatch.setenv("ICIJ_NB_OUTBOX_TIMEOUT_S", "0.5")
    tm, engine = manager(managers, tmp_path / "tasks.sqlite3", down=True)
    handle = tm.submit("square", {"x": 7})

    with pytest.raises(nb.TaskFailed) as caught:
        handle.result(timeout_s=10)

    error = caught.value.error
    assert error.name == "BrokerUnavailable"
    assert "ICIJ_NB_OUTBOX_TIMEOUT_S" in error.message
    assert "tm.retry" in error.message
    assert tm.get(handle.id).state is nb.TaskState.ERROR
    assert tm.waiting_for_broker == 0

    engine.down = False
    tm.start_pool("cpu", workers=1)
    assert tm.retry(handle.id).result(timeout_s=10) == 49


CHILD = """
import os, sys
from outbox_app import start
tm, _ = start(sys.argv[1], down=True)
handles = tm.map("square", [{"x": x} for x in range(10)])
print(" ".join(h.id for h in handles), flush=True)
os.kill(os.getpid(), 9)  # recorded in the outbox, never published
"""


def test_a_manager_killed_before_publishing_leaves_its_tasks_to_the_next(
    managers, tmp_path
):
    store = tmp_path / "tasks.sqlite3"
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(store)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": path},
        check=False,
    )
    assert child.returncode == -9, child.stderr
    ids = child.stdout.split()
    assert len(ids) == 10

    ran.clear()
    tm, engine = manager(managers, store, down=False)
    tm.start_pool("cpu", workers=1)

    assert tm.gather(ids, timeout_s=30) == [x * x for x in range(10)]
    assert engine.published == ids  # in the order they were recorded
    assert ran == list(range(10))
    assert tm.waiting_for_broker == 0
