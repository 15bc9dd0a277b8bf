"""Task output: the capture's bounds, the store, the wire, the board's detail view.

Real managers and in-kernel pools in the test process (the kernel cases are in
``tests/notebooks/test_output_kernel.py``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

import icij_nb as nb
from icij_nb.brokers import wire
from icij_nb.output import LINE_CHARS, TAIL_CHARS, AttemptOutput, OutputChunk, clean
from icij_nb.store import schema

app = nb.App("output_tests")


@app.task(group="cpu")
def chatty(n: int) -> int:
    print(f"line {n}")
    logging.getLogger("tests.chatty").error("logged %d", n)
    return n


@app.task(group="cpu")
def flood(mb: int) -> None:
    block = "y" * 1_000_000
    for _ in range(mb):
        sys.stdout.write(block)  # no newline at all
    print()
    sys.stdout.write("bad \udcff utf-8 \x00 nul\rkept after cr\n")


@app.task(group="cpu", max_retries=1, recover_from=(ValueError,))
def fails_twice() -> None:
    print("about to fail")
    raise ValueError("boom")


@app.task(group="io")
async def interleaved(n: int) -> None:
    for i in range(4):
        print(f"{n}:{i}")
        await asyncio.sleep(0)


@app.task(group="io")
async def two_streams(n: int) -> None:
    print(f"{n} first")
    # About one chunk interval: the timer's chunk and the final one go out together.
    await asyncio.sleep(0.2)
    print(f"{n} second", file=sys.stderr)


@pytest.fixture
def tm(tmp_path: Path):
    manager = nb.connect(app, store=tmp_path / "store.db")
    manager.start_pool("cpu", workers=2)
    manager.start_pool("io", workers=4)
    yield manager
    manager.close()


def test_output_is_tagged_by_stream_and_kept_in_the_store(tm, tmp_path: Path):
    h = tm.submit("chatty", {"n": 3})
    assert h.result(timeout_s=10) == 3
    assert h.output() == "[stdout] line 3\n[ERROR tests.chatty] logged 3"
    tm.close()
    again = nb.connect(app, store=tmp_path / "store.db")
    try:
        assert again.output(h.id) == "[stdout] line 3\n[ERROR tests.chatty] logged 3"
    finally:
        again.close()


def test_concurrent_async_tasks_keep_their_own_lines(tm):
    handles = tm.map("interleaved", [{"n": n} for n in range(4)])
    tm.gather(handles, timeout_s=10)
    for n, h in enumerate(handles):
        assert h.output() == "\n".join(f"[stdout] {n}:{i}" for i in range(4))


def test_a_chunk_sent_by_the_timer_stays_before_the_final_one(tm):
    handles = tm.map("two_streams", [{"n": n} for n in range(6)])
    tm.gather(handles, timeout_s=10)
    for n, h in enumerate(handles):
        assert h.output() == f"[stdout] {n} first\n[stderr] {n} second"


def test_a_flood_keeps_a_bounded_tail_with_the_cut_marked(tm):
    h = tm.submit("flood", {"mb": 20})
    tm.wait([h], timeout_s=30)
    text = h.output()
    assert len(text) < TAIL_CHARS + 200
    first, *_, last = text.split("\n")
    assert first.startswith("[... ")
    assert first.endswith(" characters cut ...]")
    assert last == "[stdout] kept after cr"
    assert clean("a\udcffb\x00") == "a\ufffdb\ufffd"
    assert max(len(line) for line in text.split("\n")) <= LINE_CHARS


def test_each_failed_attempt_keeps_its_output(tm):
    h = tm.submit("fails_twice")
    tm.wait([h], timeout_s=10)
    assert h.state is nb.TaskState.ERROR
    assert len(tm.get(h).errors) == 2
    text = h.output()
    assert text.count("[stdout] about to fail") == 2
    assert text.startswith("--- attempt 1 on ")
    assert h.output(attempt=-1) == "[stdout] about to fail"


def test_the_board_detail_view_shows_the_output(tm):
    pytest.importorskip("ipywidgets")
    h = tm.submit("chatty", {"n": 5})
    h.result(timeout_s=10)
    board = tm.board()
    try:
        board.show_detail(h.id)
        assert "[stdout] line 5" in board.detail_html.value
        assert "output of attempt 1" in board.detail_html.value
    finally:
        board.close()


def test_a_version_1_store_gets_the_outputs_table(tmp_path: Path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        schema.SCHEMA.replace(
            "CREATE TABLE IF NOT EXISTS outputs", "CREATE TABLE IF NOT EXISTS unused"
        )
    )
    db.execute("DROP TABLE unused")
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.commit()
    db.close()
    schema.check_version(sqlite3.connect(path, isolation_level=None), str(path))
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta").fetchone() == ("2",)
    assert db.execute("SELECT count(*) FROM outputs").fetchone() == (0,)


def test_the_output_message_round_trips():
    chunk = OutputChunk(
        "t-1",
        "w:1",
        "w",
        datetime(2026, 1, 2, tzinfo=UTC),
        lines=("[stdout] a", "[WARNING x] b"),
        cut=12,
        final=True,
        created_at=datetime(2026, 1, 2, 0, 0, 1, tzinfo=UTC),
    )
    assert wire.decode_output(wire.encode_output([chunk])) == [chunk]
    kept = AttemptOutput.of(chunk)
    kept.add(chunk)
    assert kept.text == "[... 12 characters cut ...]\n[stdout] a\n[WARNING x] b"
