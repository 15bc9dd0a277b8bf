"""Bad input, end to end: hostile messages on every queue we consume, odd arguments,
odd names, and a store file that is locked or corrupt.

The decoders alone are covered by ``tests/brokers/test_wire.py``, whose hypothesis
strategies this module reuses: here the same bodies (and more) are published to a
running manager (``exchangeManagerEvents``) and a running worker (the task queue).
For each body the test predicts, with the decoders, whether it must be refused, and
checks after each one that refused bodies reached the dead-letter queues exactly
once, were logged once, and that nothing else did. A refused body is followed by
nothing but a sentinel (a body that is surely refused), so that the test knows when
the body before it was handled without sleeping.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import pickle
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from faultkit import REPO, WAIT_S
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import icij_nb as nb
from icij_nb.brokers.wire import decode_event, decode_task, encode_event
from icij_nb.errors import WireError
from icij_nb.testing import wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(300)]

EXAMPLES = 50
SENTINEL = b"\x00sentinel: not a message"
NOW = "2026-01-01T00:00:00+00:00"


def _wire_strategies() -> Any:
    """tests/brokers/test_wire.py, loaded under a name of its own (for its
    strategies: ``json_values``, ``near_messages``, ``mutated_messages``)."""
    name = "_fault_wire_strategies"
    if name in sys.modules:
        return sys.modules[name]
    path = REPO / "tests" / "brokers" / "test_wire.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


WIRE = _wire_strategies()


class Trap:
    """Unpickling this creates ``path``: proof that someone ran pickle.loads."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def as_json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def fixed_hostile(trap: Path) -> list[bytes]:
    """Bodies no generator is likely to make: pickles, bad bytes, bombs."""
    return [
        pickle.dumps(Trap(trap)),
        pickle.dumps({"@type": "Task", "trap": Trap(trap)}, protocol=0),
        b"\xff\xfe\xfa not UTF-8 " + b"\x80" * 20,
        b'{"@type": "ProgressEvent", "taskId": "\xff\xfe", "progress": 0.5}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"@type": "ProgressEvent", "taskId": "x", "progress": '
        + b"[" * 5000
        + b"0"
        + b"]" * 5000
        + b"}",
        as_json({"@type": "Task", "id": "x", "name": "double", "args": nested(300)}),
        as_json({"@type": "ResultEvent", "taskId": 123, "result": {"value": 1}}),
        as_json({"@type": "ErrorEvent", "taskId": "x", "error": "boom"}),
        as_json({"@type": ["Task"], "id": "x"}),
        b'{"@type": "Task", "id": "x", "name": "double", "args": {"n": NaN}}',
        b"null",
        b"",
    ]


def bodies(known_ids: list[str], trap: Path) -> st.SearchStrategy[bytes]:
    # Valid events (any kind, any content) for tasks that are finished already.
    late_events = st.builds(
        lambda event, task_id: encode_event(
            dataclasses.replace(event, task_id=task_id)
        ),
        WIRE.manager_events,
        st.sampled_from(known_ids),
    )
    aimed_events = WIRE.near_messages().flatmap(
        lambda obj: st.sampled_from(known_ids).map(
            lambda task_id: as_json({**obj, "taskId": task_id})
        )
    )
    tasks_we_run = st.builds(
        lambda task_id, args: as_json(
            {
                "id": task_id,
                "name": "double",
                "args": args,
                "createdAt": NOW,
                "@type": "Task",
            }
        ),
        st.text(min_size=1, max_size=20),
        st.dictionaries(st.sampled_from(["n", "m", "nN"]), WIRE.json_values),
    )
    return st.one_of(
        st.binary(max_size=300),
        WIRE.json_values.map(as_json),
        WIRE.near_messages().map(as_json),
        WIRE.mutated_messages(),
        aimed_events,
        late_events,
        tasks_we_run,
        st.sampled_from(fixed_hostile(trap)),
    )


PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def make_app() -> nb.App:
    app = nb.App("hostile", groups=(nb.TaskGroup("cpu"),))

    @app.task(group="cpu")
    def double(n: Any) -> Any:
        return n * 2

    @app.task(group="cpu")
    def echo(value: Any) -> Any:
        return value

    return app


def set_aside(records: list[logging.LogRecord]) -> int:
    return sum(1 for r in records if "set aside" in r.getMessage())


def finished_tasks(tm: nb.TaskManager, n: int) -> list[str]:
    batch = tm.map("double", [{"n": i} for i in range(n)])
    assert batch.results(timeout_s=WAIT_S) == [2 * i for i in range(n)]
    return [h.id for h in batch]


# -- hostile messages ----------------------------------------------------------------


def test_hostile_manager_events_are_each_dead_lettered_once_and_logged(
    managers, raw, scratch, caplog, figures
):
    app, trap = make_app(), scratch / "unpickled"
    tm = managers(app, store=scratch / "tasks.sqlite3")
    pool = tm.start_pool("cpu", workers=1)
    known = finished_tasks(tm, 5)
    before = {i: tm.get(i) for i in known}
    caplog.set_level(logging.WARNING)
    refused: list[bytes] = []
    counts = Counter()

    @PROPERTY
    @given(bodies(known, trap))
    def feed(body: bytes) -> None:
        try:
            applies = decode_event(body).task_id in known
        except WireError:
            applies = False
        raw.publish("exchangeManagerEvents", "routingKeyManagerEvents", body)
        raw.publish("exchangeManagerEvents", "routingKeyManagerEvents", SENTINEL)
        refused.extend([SENTINEL] if applies else [body, SENTINEL])
        counts["applied" if applies else "refused"] += 1
        wait_until(
            lambda: raw.ready("MANAGER_EVENT_DLQ") == len(refused),
            timeout_s=WAIT_S,
            what=f"{len(refused)} bodies in MANAGER_EVENT_DLQ",
        )

    feed()

    # The manager is alive, and the finished tasks it was sent events for are
    # still finished with their results.
    alive = tm.submit("double", {"n": 21}).result(timeout_s=WAIT_S) == 42
    assert alive
    for task_id, task in before.items():
        now = tm.get(task_id)
        assert (now.state, now.result) == (task.state, task.result)
    assert Counter(raw.take("MANAGER_EVENT_DLQ")) == Counter(refused)
    assert raw.count("MANAGER_EVENT") == (0, 1)
    assert set_aside(caplog.records) == len(refused)
    assert not trap.exists()
    assert pool.done == 6
    figures.record(
        "8a-hostile-manager-events",
        bodies=sum(counts.values()),
        dead_lettered_and_logged_once=counts["refused"],
        applied_to_finished_tasks_unchanged=counts["applied"],
        unpickled=int(trap.exists()),
        manager_serves_after=int(alive),
    )


def test_hostile_task_messages_are_each_dead_lettered_once_and_logged(
    managers, raw, scratch, caplog, figures
):
    app, trap = make_app(), scratch / "unpickled"
    tm = managers(app, store=scratch / "tasks.sqlite3")
    pool = tm.start_pool("cpu", workers=1)
    known = finished_tasks(tm, 3)
    caplog.set_level(logging.WARNING)
    refused: list[bytes] = []
    events = Counter()
    # Events the manager dead-letters, taken from MANAGER_EVENT_DLQ as they come: a
    # task that ran ends with one final event, after a RUNNING one only if it ran
    # past the workers' grace period.
    dead_events: list[bytes] = []

    def finals() -> int:
        dead_events.extend(raw.take("MANAGER_EVENT_DLQ"))
        return sum(b'"@type":"ProgressEvent"' not in body for body in dead_events)

    @PROPERTY
    @given(bodies(known, trap))
    def feed(body: bytes) -> None:
        try:
            task = decode_task(body)
        except WireError:
            task = None
        assume(task is None or task.id not in known)
        raw.publish("exchangeMainTasks", "cpu", body)
        raw.publish("exchangeMainTasks", "cpu", SENTINEL)
        if task is None:
            refused.append(body)
        else:  # it runs, or fails as unknown: its events name a task no one knows
            events["ran" if task.name in app else "unknown"] += 1
        refused.append(SENTINEL)
        expected_finals = events["ran"] + events["unknown"]
        wait_until(
            lambda: (
                (raw.ready("TASK_DLQ"), finals()) == (len(refused), expected_finals)
            ),
            timeout_s=WAIT_S,
            what=f"{len(refused)} refused tasks, {expected_finals} final events",
        )

    feed()

    alive = tm.submit("double", {"n": 4}).result(timeout_s=WAIT_S) == 8
    assert alive
    assert Counter(raw.take("TASK_DLQ")) == Counter(refused)
    assert raw.count("TASK.cpu") == (0, 1)
    # Logged once each: the refused task messages by the worker, the events of
    # the strangers' tasks by the manager.
    expected_events = len(dead_events)
    assert set_aside(caplog.records) == len(refused) + expected_events
    assert not trap.exists()
    assert pool.done == 3 + 1 + events["ran"] - pool.failed
    figures.record(
        "8b-hostile-task-messages",
        bodies=len(refused) - EXAMPLES + sum(events.values()),
        dead_lettered_and_logged_once=len(refused) - EXAMPLES,
        ran_or_failed_as_unknown_tasks=sum(events.values()),
        their_events_dead_lettered=expected_events,
        unpickled=int(trap.exists()),
        worker_serves_after=int(alive),
    )


def test_huge_bodies_are_refused_on_both_queues_without_harm(managers, raw, scratch):
    app = make_app()
    tm = managers(app, store=scratch / "tasks.sqlite3")
    tm.start_pool("cpu", workers=1)
    huge = b'{"@type": "Task", "junk": "' + b"x" * 70_000_000 + b'"}'

    raw.publish("exchangeMainTasks", "cpu", huge)
    raw.publish("exchangeManagerEvents", "routingKeyManagerEvents", huge)

    wait_until(
        lambda: (raw.ready("TASK_DLQ"), raw.ready("MANAGER_EVENT_DLQ")) == (1, 1),
        timeout_s=WAIT_S,
        what="the huge bodies in the dead-letter queues",
    )
    assert tm.submit("double", {"n": 1}).result(timeout_s=WAIT_S) == 2


# -- odd arguments and names ------------------------------------------------------


def test_args_of_several_megabytes_travel_and_are_stored(managers, raw, scratch):
    app = make_app()
    tm = managers(app, store=scratch / "tasks.sqlite3")
    tm.start_pool("cpu", workers=1)
    blob = "é" * 3_000_000  # 6 MB of UTF-8

    handle = tm.submit("echo", {"value": {"blob": blob, "deep": nested(150)}})

    assert handle.result(timeout_s=WAIT_S) == {"blob": blob, "deep": nested(150)}
    [row] = tm.frame().to_dict("records")
    assert row["args"]["value"]["blob"] == blob
    assert row["result"]["deep"] == nested(150)


def test_args_json_or_the_wire_cannot_carry_are_refused_at_submit(
    managers, raw, scratch
):
    app = make_app()
    tm = managers(app, store=scratch / "tasks.sqlite3")
    bad = {
        "too deep": {"value": nested(250)},
        "bytes": {"value": b"\xff\xfe"},
        "lone surrogate": {"value": "\udcff"},
        "NaN": {"value": float("nan")},
    }
    for why, args in bad.items():
        with pytest.raises(nb.InvalidArguments) as refused:
            tm.submit("echo", args)
        assert "args['value']" in str(refused.value), why
    assert tm.frame().empty
    assert raw.ready("TASK.cpu") == 0


def test_odd_task_and_group_names_are_clear_config_errors(vhost):
    app = nb.App("odd", groups=(nb.TaskGroup("cpu"),))
    for name in ["rm -rf /", "tâche", "a/b", "x" * 300, "", "café.ü"]:
        with pytest.raises(nb.ConfigError, match="invalid task name"):
            app.task(name=name)(lambda: None)
    for group in ["not a queue", "amq.reserved/x", "é", "x" * 300, ".dot"]:
        with pytest.raises(nb.ConfigError, match="invalid group name"):
            nb.TaskGroup(group)
    assert vhost.queue_names() == set()


# -- the store file ---------------------------------------------------------------

HOLD_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
db.execute("INSERT INTO managers VALUES ('holder', 'h', 1, 'x', 'now', 'now')")
print("locked", flush=True)
sys.stdin.read()
"""


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_store(scratch: Path, vhost, app: nb.App) -> tuple[Path, list[Any]]:
    path = scratch / "tasks.sqlite3"
    tm = nb.connect(
        app, broker=vhost.amqp_url, store=path, management_url=vhost.management_url
    )
    tm.start_pool("cpu", workers=1)
    results = tm.map("double", [{"n": i} for i in range(5)]).results(timeout_s=WAIT_S)
    tm.close()
    return path, results


def test_a_store_locked_by_another_process_is_a_clear_error(vhost, scratch):
    app = make_app()
    path, _ = make_store(scratch, vhost, app)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"locked\n"
        with pytest.raises(nb.StoreError) as refused:
            nb.connect(
                app,
                broker=vhost.amqp_url,
                store=path,
                management_url=vhost.management_url,
            )
    finally:
        holder.kill()
        holder.wait(timeout=WAIT_S)
        for pipe in (holder.stdin, holder.stdout):
            if pipe is not None:
                pipe.close()
    text = str(refused.value)
    assert str(path) in text
    assert "locked" in text
    assert "another process" in text
    # The other process's data and ours are intact: nothing was overwritten.
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM tasks WHERE state='DONE'").fetchone() == (
        5,
    )
    db.close()
    # The broker connection opened before the store failed was closed again.
    vhost.wait_until(lambda: not vhost.connections(), WAIT_S, what="no connection")


@pytest.mark.parametrize("damage", ["not a database", "damaged pages"])
def test_a_corrupt_store_is_a_clear_error_and_is_left_untouched(vhost, scratch, damage):
    app = make_app()
    path, _ = make_store(scratch, vhost, app)
    data = bytearray(path.read_bytes())
    if damage == "not a database":
        data = bytearray(b"this is no SQLite file\n" * 200)
    else:  # keep the header, garble every page after the first
        for at in range(4096, len(data)):
            data[at] = (data[at] * 7 + 13) % 256
    path.write_bytes(bytes(data))
    for side in ("-wal", "-shm"):
        Path(f"{path}{side}").unlink(missing_ok=True)
    before = digest(path)

    with pytest.raises(nb.StoreError) as refused:
        nb.connect(
            app, broker=vhost.amqp_url, store=path, management_url=vhost.management_url
        )

    text = str(refused.value)
    assert str(path) in text
    assert "nothing was overwritten" in text
    assert digest(path) == before
    vhost.wait_until(lambda: not vhost.connections(), WAIT_S, what="no connection")


def test_a_store_damaged_past_its_schema_fails_reads_with_a_clear_error(vhost, scratch):
    app = make_app()
    path, _ = make_store(scratch, vhost, app)
    with sqlite3.connect(path) as db:  # where the task rows are
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        (root,) = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'tasks'"
        ).fetchone()
    db.close()
    data = bytearray(path.read_bytes())
    start = (root - 1) * page_size
    for at in range(start + 100, start + page_size):  # past the page header
        data[at] = (data[at] * 7 + 13) % 256
    path.write_bytes(bytes(data))
    for side in ("-wal", "-shm"):
        Path(f"{path}{side}").unlink(missing_ok=True)

    def open_and_read() -> None:
        # Opening may still work (the schema is intact); reading the rows may not.
        tm = nb.connect(
            app, broker=vhost.amqp_url, store=path, management_url=vhost.management_url
        )
        try:
            tm.frame()
        finally:
            tm.close()

    with pytest.raises(nb.StoreError) as refused:
        open_and_read()

    assert str(path) in str(refused.value)
    assert "malformed" in str(refused.value)
