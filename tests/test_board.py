"""The task board, through its public API and its widgets' trait values.

ipywidgets work without a frontend, so these run in the test process: a real
manager, real in-kernel pools, and the values the board puts in its widgets.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from typing import Any

import pandas as pd
import pytest

import icij_nb as nb
from icij_nb.testing import wait_until

STATE_RE = re.compile(r'class="icij-nb-state"[^>]*><b[^>]*>(\w+)</b>')
ID_RE = re.compile(r'data-task-id="([^"]+)"')


def shown_rows(board: Any) -> list[tuple[str, str]]:
    """(task id, state) of the rows the widgets show, in order."""
    rows = []
    for row in board.rows:
        if row.box.layout.display == "none":
            continue
        html = row.html.value
        rows.append((ID_RE.search(html).group(1), STATE_RE.search(html).group(1)))
    return rows


def row_of(board: Any, task_id: str) -> Any:
    return next(r for r in board.rows if r.task_id == task_id)


@pytest.fixture
def make_board():
    made = []

    def make(tm: nb.TaskManager, **options: Any) -> Any:
        board = tm.board(**options)
        made.append(board)
        return board

    yield make
    for board in made:
        board.close()


@pytest.fixture
def two_groups(app, release):
    """Tasks in groups cpu and io; ``hold`` blocks until ``release`` is set."""

    @app.task(group="cpu")
    def square(i: int) -> int:
        return i * i

    @app.task(group="cpu")
    def hold(i: int) -> int:
        release.wait(30)
        return i

    @app.task(group="io", max_retries=0)
    def fetch(url: str) -> str:
        if "bad" in url:
            raise ConnectionError(f"cannot reach {url}")
        return f"page of {url}"

    return app


# -- empty, counts, live updates ------------------------------------------------------


def test_a_board_made_before_any_task_explains_how_to_add_some(
    app, make_manager, make_board
):
    tm = make_manager(app)

    board = make_board(tm)

    assert "No tasks yet: submit some with tm.submit(...)" in board.message_html.value
    assert shown_rows(board) == []
    assert board.frame.empty
    assert list(board.frame.columns) == list(nb.FRAME_COLUMNS)
    bundle = board._repr_mimebundle_()
    assert "No tasks yet" in bundle["text/html"]
    assert "No tasks yet" in bundle["text/plain"]


def test_header_counts_tasks_per_group_and_state_and_shows_live_workers(
    two_groups, make_manager, make_board
):
    tm = make_manager(two_groups)
    board = make_board(tm)
    tm.start_pool("cpu", workers=2)
    tm.start_pool("io", workers=1)

    tm.gather(tm.map("square", [{"i": i} for i in range(5)]))
    tm.gather(
        [tm.submit("fetch", {"url": "good"}), tm.submit("fetch", {"url": "bad"})],
        return_exceptions=True,
    )

    html = board.counts_html.value
    assert "<b>7 tasks</b>" in html
    cpu = re.search(r'data-group="cpu">(.*?)</tr>', html).group(1)
    io = re.search(r'data-group="io">(.*?)</tr>', html).group(1)
    numbers = [
        re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", cpu)
    ]
    # group, progress, CREATED QUEUED RUNNING ERROR DONE CANCELLED, total, workers
    assert numbers[2:] == ["·", "·", "·", "·", "5", "·", "5", "2"]
    assert "100%" in numbers[1]
    io_numbers = [
        re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", io)
    ]
    assert io_numbers[2:] == ["·", "·", "·", "1", "1", "·", "2", "1"]
    assert "DONE=6" in board._repr_mimebundle_()["text/plain"]


def test_group_progress_is_the_mean_of_its_tasks_with_finished_ones_whole(
    app, make_manager, make_board
):
    gate = asyncio.Event()

    @app.task(group="cpu")
    async def halfway(progress) -> None:
        await progress(0.5)
        await gate.wait()

    tm = make_manager(app)
    board = make_board(tm, refresh_s=0.05)
    pool = tm.start_pool("cpu", workers=2)
    running = [tm.submit("halfway"), tm.submit("halfway")]
    wait_until(lambda: all(h.progress == 0.5 for h in running), what="both at 50%")
    board.refresh()
    assert "50%</td>" in board.counts_html.value

    tm._runtime.call_soon(gate.set)
    tm.gather(running)
    assert "100%</td>" in board.counts_html.value
    pool.stop()


def test_rows_move_through_states_while_a_gather_blocks_the_caller(
    app, make_manager, make_board
):
    @app.task(group="cpu")
    async def step(i: int) -> int:
        await asyncio.sleep(0.3)
        return i

    tm = make_manager(app)
    board = make_board(tm, refresh_s=0.05)
    tm.start_pool("cpu", workers=1)
    handles = [tm.submit("step", {"i": i}, task_id=f"step-{i}") for i in range(3)]
    events: list[tuple[float, str, str]] = []

    def record(change: dict[str, Any]) -> None:  # runs on the runtime thread
        match = ID_RE.search(change["new"])
        if match:
            state = STATE_RE.search(change["new"]).group(1)
            events.append((time.monotonic(), match.group(1), state))

    for row in board.rows[:3]:
        row.html.observe(record, names="value")

    tm.gather(handles)  # blocks this thread; the board must keep moving
    returned = time.monotonic()

    seen = [(task_id, state) for _, task_id, state in events]
    first_done = seen.index(("step-0", "DONE"))
    # Task 2 was shown RUNNING after task 0 was shown DONE: a render in the middle
    # of the gather, not only the final one.
    assert ("step-2", "RUNNING") in seen[first_done:]
    assert all(t <= returned for t, task_id, state in events if state == "RUNNING")
    assert shown_rows(board)[-1] == ("step-2", "DONE")


def test_refreshes_are_coalesced_to_one_per_refresh_interval(
    app, make_manager, make_board
):
    @app.task(group="cpu")
    async def noop(i: int) -> int:
        return i

    tm = make_manager(app)
    board = make_board(tm, refresh_s=0.25)
    tm.start_pool("cpu", workers=4)
    renders: list[float] = []
    board.counts_html.observe(lambda c: renders.append(time.monotonic()), names="value")
    notified = []
    tm.subscribe(lambda tasks: notified.append(len(tasks)))

    start = time.monotonic()
    for _ in range(10):
        tm.gather(tm.map("noop", [{"i": i} for i in range(200)]))
    elapsed = time.monotonic() - start

    # Every gather forces one render when it ends; otherwise at most one render
    # per refresh interval, however many changes arrive.
    assert len(renders) <= elapsed / 0.25 + 10 + 2
    assert len(notified) > len(renders)
    assert "<b>2000 tasks</b>" in board.counts_html.value


def test_gather_ends_with_the_board_showing_the_final_state(
    app, make_manager, make_board
):
    @app.task(group="cpu")
    async def noop(i: int) -> int:
        return i

    tm = make_manager(app)
    board = make_board(tm, refresh_s=3600)  # the timer alone would not show it
    tm.start_pool("cpu", workers=2)

    tm.gather(tm.map("noop", [{"i": i} for i in range(30)]))

    assert "DONE 30" in board.counts_html.value
    assert "DONE 30" in board._repr_mimebundle_()["text/html"]
    assert [state for _, state in shown_rows(board)] == ["DONE"] * 20


async def test_awaited_gather_also_ends_with_the_final_state(
    app, make_manager, make_board
):
    @app.task(group="cpu")
    async def noop(i: int) -> int:
        return i

    tm = make_manager(app)
    board = make_board(tm, refresh_s=3600)
    tm.start_pool("cpu", workers=2)

    await tm.gather_async(tm.map("noop", [{"i": i} for i in range(5)]))

    assert "DONE 5" in board.counts_html.value


# -- the frame ------------------------------------------------------------------------


def test_unfiltered_frame_is_tm_frame_and_filters_narrow_it(
    two_groups, make_manager, make_board
):
    tm = make_manager(two_groups)
    tm.start_pool("cpu", workers=2)
    tm.start_pool("io", workers=1)
    tm.gather(tm.map("square", [{"i": i} for i in range(4)]))
    tm.gather(
        [tm.submit("fetch", {"url": u}) for u in ("a", "bad-b", "c")],
        return_exceptions=True,
    )
    board = make_board(tm)

    pd.testing.assert_frame_equal(board.frame, tm.frame())

    board.set_filter(group="io")
    assert set(board.frame["name"]) == {"fetch"}
    board.set_filter(states=["error"])
    assert board.frame["args"].tolist() == [{"url": "bad-b"}]
    assert board.frame["error"].tolist() == ["ConnectionError: cannot reach bad-b"]
    expected = tm.frame()
    expected = expected[(expected["group"] == "io") & (expected["state"] == "ERROR")]
    pd.testing.assert_frame_equal(board.frame, expected.reset_index(drop=True))
    assert tm.frame().shape == (7, len(nb.FRAME_COLUMNS))  # tm.frame() unfiltered


def test_filters_by_several_states_by_name_and_by_free_text(
    two_groups, make_manager, make_board
):
    tm = make_manager(two_groups)
    tm.start_pool("cpu", workers=2)
    tm.start_pool("io", workers=1)
    tm.gather(tm.map("square", [{"i": i} for i in (3, 12, 30)]))
    tm.gather(
        [tm.submit("fetch", {"url": u}) for u in ("alpha", "bad-beta")],
        return_exceptions=True,
    )
    board = make_board(tm)

    board.set_filter(states=["DONE", nb.TaskState.ERROR])
    assert len(board.frame) == 5
    board.set_filter(states="ERROR")
    assert len(board.frame) == 1
    board.set_filter(states=None, name="SQU")  # case-insensitive, a substring
    assert set(board.frame["name"]) == {"square"}
    board.set_filter(name=None, text="12")  # args {"i": 12}, result 144
    assert board.frame["args"].tolist() == [{"i": 12}]
    board.set_filter(text="900")  # the result of i=30
    assert board.frame["result"].tolist() == [900]
    board.set_filter(text="CANNOT REACH")  # the error
    assert board.frame["args"].tolist() == [{"url": "bad-beta"}]
    board.set_filter(text="page of alpha")
    assert board.frame["result"].tolist() == ["page of alpha"]
    assert board.filter_text.value == "page of alpha"  # the widget follows the API

    board.set_filter(group="cpu", text="nothing like this")
    assert board.frame.empty
    assert "No task matches the filters" in board.message_html.value
    assert "5 task(s) in all" in board.message_html.value


def test_filters_given_to_tm_board_apply_from_the_start(
    two_groups, make_manager, make_board
):
    tm = make_manager(two_groups)
    tm.start_pool("cpu", workers=2)
    tm.gather(tm.map("square", [{"i": i} for i in range(3)]))

    board = make_board(tm, group="cpu", states=["DONE"], text="4")

    assert board.frame["args"].tolist() == [{"i": 2}]
    assert board.filter_group.value == "cpu"
    assert board.filter_states.value == ("DONE",)
    assert board.filter_text.value == "4"


def test_typing_in_the_filter_widgets_filters_like_set_filter(
    two_groups, make_manager, make_board
):
    tm = make_manager(two_groups)
    tm.start_pool("cpu", workers=2)
    tm.start_pool("io", workers=1)
    tm.gather(tm.map("square", [{"i": i} for i in range(6)]))
    tm.gather([tm.submit("fetch", {"url": "x"})])
    board = make_board(tm)

    # As the frontend does it: the kernel's thread sets the widgets' values.
    board.filter_group.value = "cpu"
    board.filter_states.value = ("DONE",)
    board.filter_text.value = "25"

    wait_until(lambda: len(board.frame) == 1, what="the typed filters to apply")
    assert board.frame["result"].tolist() == [25]
    assert board.filters.group == "cpu"
    assert board.filters.states == frozenset({nb.TaskState.DONE})
    board.filter_text.value = ""
    board.filter_group.value = ""
    board.filter_states.value = ()
    wait_until(lambda: len(board.frame) == 7, what="the filters to clear")


def test_unknown_state_or_group_raises_a_value_error_listing_the_valid_ones(
    two_groups, make_manager, make_board
):
    tm = make_manager(two_groups)
    board = make_board(tm)

    with pytest.raises(ValueError, match=r"unknown task state 'FINISHED'.*DONE"):
        board.set_filter(states=["DONE", "FINISHED"])
    with pytest.raises(
        ValueError, match=r"unknown group 'gpu'; valid groups: 'cpu', 'io'"
    ):
        board.set_filter(group="gpu")
    with pytest.raises(ValueError, match="unknown group 'gpu'"):
        tm.board(group="gpu")
    with pytest.raises(ValueError, match="unknown task state 'nope'"):
        tm.board(states="nope")
    with pytest.raises(ValueError, match="unknown task state 3"):
        board.set_filter(states=[3])
    with pytest.raises(ValueError, match="unknown group 'gpu'"):
        board.cancel_group("gpu")
    with pytest.raises(ValueError, match="page_size must be >= 1"):
        tm.board(page_size=0)
    with pytest.raises(ValueError, match="refresh_s must be"):
        tm.board(refresh_s=0)
    assert board.filters.group is None
    assert board.filters.states is None


def test_bad_filters_raise_invalid_filter_from_the_errors_tree(
    two_groups, make_manager, make_board
):
    tm = make_manager(two_groups)
    board = make_board(tm)

    with pytest.raises(nb.InvalidFilter, match="unknown task state 'FINISHED'"):
        board.set_filter(states=["FINISHED"])
    with pytest.raises(nb.InvalidFilter, match="unknown task state 3"):
        board.set_filter(states=[3])
    with pytest.raises(nb.InvalidFilter, match="name must be a string or None"):
        board.set_filter(name=3)
    with pytest.raises(nb.InvalidFilter, match="unknown group 'gpu'"):
        board.set_filter(group="gpu")
    with pytest.raises(nb.InvalidFilter, match="unknown group 'gpu'"):
        board.retry_failed("gpu")
    with pytest.raises(nb.InvalidFilter, match="cannot sort by 'args'"):
        board.sort("args")


# -- paging and sorting ---------------------------------------------------------------


def test_only_one_page_of_rows_is_rendered(two_groups, make_manager, make_board):
    tm = make_manager(two_groups)
    tm.start_pool("cpu", workers=2)
    ids = [f"sq-{i:02d}" for i in range(25)]
    tm.gather([tm.submit("square", {"i": i}, task_id=t) for i, t in enumerate(ids)])
    board = make_board(tm, page_size=10)

    assert len(board.rows) == 10
    assert [i for i, _ in shown_rows(board)] == ids[:10]
    assert board.page == 0
    assert board.page_count == 3
    assert "page 1/3" in board.page_label.value
    assert "rows 1-10 of 25" in board.page_label.value
    assert board.prev_button.disabled
    assert not board.next_button.disabled

    assert board.next_page() == 1
    assert [i for i, _ in shown_rows(board)] == ids[10:20]
    assert board.next_page() == 2
    assert [i for i, _ in shown_rows(board)] == ids[20:]
    assert board.next_button.disabled
    assert board.next_page() == 2  # the last page stays
    board.page = 0
    assert [i for i, _ in shown_rows(board)] == ids[:10]
    assert board.prev_page() == 0
    with pytest.raises(ValueError, match="page 3 does not exist"):
        board.page = 3
    assert len(board.frame) == 25  # the frame is every page
    board.next_button.click()  # the widget pages too
    wait_until(lambda: board.page == 1, what="the next-page click")


def test_sort_by_a_column_either_way_keeps_ties_in_creation_order(
    two_groups, make_manager, make_board
):
    tm = make_manager(two_groups)
    tm.start_pool("cpu", workers=2)
    tm.start_pool("io", workers=1)
    squares = [tm.submit("square", {"i": i}, task_id=f"b-{i}") for i in range(3)]
    tm.gather(squares)
    fetched = [tm.submit("fetch", {"url": u}, task_id=f"a-{u}") for u in ("bad", "ok")]
    tm.gather(fetched, return_exceptions=True)
    board = make_board(tm)

    board.sort("id")
    assert board.frame["id"].tolist() == ["a-bad", "a-ok", "b-0", "b-1", "b-2"]
    board.sort("id", ascending=False)
    assert board.frame["id"].tolist() == ["b-2", "b-1", "b-0", "a-ok", "a-bad"]
    board.sort("state")  # ERROR < DONE; ties keep creation order
    assert board.frame["id"].tolist() == ["a-bad", "b-0", "b-1", "b-2", "a-ok"]
    board.sort("name", ascending=False)
    assert board.frame["id"].tolist() == ["b-0", "b-1", "b-2", "a-bad", "a-ok"]
    assert [i for i, _ in shown_rows(board)] == board.frame["id"].tolist()
    assert "name ▼" in board.header_html.value
    assert (board.sort_by.value, board.sort_order.value) == ("name", False)
    board.sort_by.value = "created_at"  # the widget sorts too
    board.sort_order.value = True
    wait_until(
        lambda: board.frame["id"].tolist() == ["b-0", "b-1", "b-2", "a-bad", "a-ok"],
        what="the sort widgets to apply",
    )
    with pytest.raises(ValueError, match="cannot sort by 'args'; sortable columns:"):
        board.sort("args")


def test_sort_puts_missing_values_last_both_ways(
    app, make_manager, make_board, release
):
    @app.task(group="cpu")
    def hold(i: int) -> int:
        release.wait(30)
        return i

    @app.task(group="cpu")
    def quick(i: int) -> int:
        return i

    tm = make_manager(app)
    tm.start_pool("cpu", workers=1)
    tm.gather([tm.submit("quick", {"i": 1}, task_id="quick")])
    tm.submit("hold", {"i": 2}, task_id="held")
    tm.submit("quick", {"i": 3}, task_id="waiting")  # queued: never started
    board = make_board(tm)
    wait_until(lambda: tm.get("held").state is nb.TaskState.RUNNING, what="held")

    board.sort("started_at")
    assert board.frame["id"].tolist() == ["quick", "held", "waiting"]
    board.sort("started_at", ascending=False)
    assert board.frame["id"].tolist() == ["held", "quick", "waiting"]
    board.sort("duration_s", ascending=False)
    assert board.frame["id"].tolist()[0] == "quick"
    release.set()


# -- actions --------------------------------------------------------------------------


def test_cancel_button_cancels_a_queued_task_and_retry_button_queues_it_again(
    two_groups, make_manager, make_board, release
):
    tm = make_manager(two_groups)
    tm.start_pool("cpu", workers=1)
    running = tm.submit("hold", {"i": 1}, task_id="running")
    queued = tm.submit("hold", {"i": 2}, task_id="queued")
    board = make_board(tm)
    wait_until(lambda: running.state is nb.TaskState.RUNNING, what="one to run")
    board.refresh()
    row = row_of(board, "queued")
    assert not row.cancel_button.disabled
    assert row.retry_button.disabled  # only ERROR or CANCELLED tasks can be retried

    row.cancel_button.click()

    wait_until(lambda: queued.state is nb.TaskState.CANCELLED, what="the cancel")
    wait_until(
        lambda: ("queued", "CANCELLED") in shown_rows(board), what="the row to show it"
    )
    row = row_of(board, "queued")
    assert row.cancel_button.disabled
    assert not row.retry_button.disabled
    assert "cancel sent for queued" in board.status_html.value

    row.retry_button.click()
    wait_until(lambda: queued.state is nb.TaskState.QUEUED, what="the retry")
    release.set()
    assert tm.gather([running, queued]) == [1, 2]


def test_cancel_and_retry_through_the_api_go_through_the_manager(
    two_groups, make_manager, make_board, release
):
    tm = make_manager(two_groups)
    tm.start_pool("cpu", workers=1)
    handle = tm.submit("hold", {"i": 7})
    board = make_board(tm)
    wait_until(lambda: handle.state is nb.TaskState.RUNNING, what="it to run")

    board.cancel(handle.id)  # a running task: the worker stops it

    with pytest.raises(nb.TaskCancelled):
        handle.result(timeout_s=10)
    assert board.frame["state"].tolist() == ["CANCELLED"]
    release.set()
    board.retry(handle)
    assert handle.result(timeout_s=10) == 7
    assert board.frame["state"].tolist() == ["DONE"]


def test_actions_that_make_no_sense_raise_and_their_buttons_are_disabled(
    two_groups, make_manager, make_board
):
    tm = make_manager(two_groups)
    tm.start_pool("cpu", workers=1)
    done = tm.submit("square", {"i": 3})
    tm.gather([done])
    board = make_board(tm)
    row = row_of(board, done.id)

    assert row.cancel_button.disabled
    assert row.retry_button.disabled
    assert not row.detail_button.disabled
    with pytest.raises(nb.InvalidTransition, match="already DONE"):
        board.cancel(done.id)
    with pytest.raises(nb.InvalidTransition, match="only ERROR or CANCELLED"):
        board.retry(done.id)
    with pytest.raises(nb.UnknownTask):
        board.cancel("no-such-task")
    assert board.frame["state"].tolist() == ["DONE"]


def test_cancel_group_cancels_only_that_groups_unfinished_tasks(
    two_groups, make_manager, make_board, release
):
    tm = make_manager(two_groups)
    tm.start_pool("cpu", workers=1)
    tm.start_pool("io", workers=1)
    finished = tm.submit("square", {"i": 2})
    tm.gather([finished])
    held = [tm.submit("hold", {"i": i}) for i in range(3)]  # one runs, two queued
    fetched = tm.submit("fetch", {"url": "u"})
    board = make_board(tm)
    wait_until(lambda: held[0].state is nb.TaskState.RUNNING, what="one to run")

    assert board.cancel_group("cpu") == 3

    for handle in held:
        with pytest.raises(nb.TaskCancelled):
            handle.result(timeout_s=10)
    assert finished.state is nb.TaskState.DONE
    assert fetched.result(timeout_s=10) == "page of u"
    assert board.cancel_group("cpu") == 0


def test_group_buttons_act_on_the_group_chosen_in_the_filter(
    two_groups, make_manager, make_board
):
    tm = make_manager(two_groups)
    tm.start_pool("io", workers=1)
    bad = [tm.submit("fetch", {"url": f"bad-{i}"}) for i in range(2)]
    tm.gather(bad, return_exceptions=True)
    board = make_board(tm)
    assert board.retry_group_button.disabled  # no group chosen yet

    board.set_filter(group="io")
    assert board.retry_group_button.description == "retry 2 failed of io"
    assert board.cancel_group_button.disabled  # nothing unfinished in io
    board.retry_group_button.click()

    wait_until(
        lambda: all(len(tm.errors(h)) == 2 for h in bad), what="both to fail again"
    )
    assert board.retry_failed("io") == 2


def test_detail_view_shows_args_result_and_every_error_with_its_traceback(
    app, make_manager, make_board
):
    attempts = []

    @app.task(group="cpu", max_retries=2, recover_from=(ValueError,))
    def flaky(doc: str) -> str:
        attempts.append(doc)
        if len(attempts) < 3:
            raise ValueError(f"attempt {len(attempts)} failed on {doc}")
        return doc.upper()

    tm = make_manager(app)
    tm.start_pool("cpu", workers=1)
    handle = tm.submit("flaky", {"doc": "report.pdf"})
    board = make_board(tm)
    tm.gather([handle])

    board.show_detail(handle.id)

    html = board.detail_html.value
    assert board.detail_box.layout.display != "none"
    assert handle.id in html
    assert "DONE" in html
    assert "report.pdf" in html
    assert "REPORT.PDF" in html
    assert "errors (2, oldest first)" in html
    assert "attempt 1 failed on report.pdf" in html
    assert "attempt 2 failed on report.pdf" in html
    assert "Traceback (most recent call last)" in html
    assert "test_board.py" in html
    assert "in flaky" in html
    board.hide_detail()
    assert board.detail_box.layout.display == "none"
    with pytest.raises(nb.UnknownTask):
        board.show_detail("nope")
    row_of(board, handle.id).detail_button.click()
    wait_until(lambda: handle.id in board.detail_html.value, what="the details click")


def test_a_large_result_is_cut_in_the_preview_and_whole_in_the_frame(
    app, make_manager, make_board
):
    big = {"text": "x" * 200_000, "pages": list(range(10_000))}

    @app.task(group="cpu")
    def extract() -> dict[str, Any]:
        return big

    tm = make_manager(app)
    tm.start_pool("cpu", workers=1)
    tm.gather([tm.submit("extract")])
    board = make_board(tm)

    cells = board.rows[0].html.value
    preview = re.search(r'class="icij-nb-preview"[^>]*>(.*?)</span>', cells).group(1)
    assert preview.startswith("{&quot;text&quot;: &quot;xxx")
    assert preview.endswith("…")
    assert len(preview) < 200
    assert len(cells) < 10_000
    assert board.frame["result"].tolist() == [big]
    board.show_detail(board.frame["id"][0])
    assert "cut at 20,000 of" in board.detail_html.value
    assert len(board._repr_mimebundle_()["text/html"]) < 20_000


def test_an_error_preview_is_its_last_error(two_groups, make_manager, make_board):
    tm = make_manager(two_groups)
    tm.start_pool("io", workers=1)
    tm.gather([tm.submit("fetch", {"url": "bad-url"})], return_exceptions=True)
    board = make_board(tm)

    assert "ConnectionError: cannot reach bad-url" in board.rows[0].html.value
    assert "0/1 · 0 left" not in board.rows[0].html.value
    assert "1/1 · 0 left" in board.rows[0].html.value


# -- display, sessions, life ----------------------------------------------------------


def test_repr_bundle_carries_the_widget_view_html_and_text(
    two_groups, make_manager, make_board
):
    tm = make_manager(two_groups)
    tm.start_pool("cpu", workers=1)
    tm.gather(tm.map("square", [{"i": i} for i in range(3)]))
    board = make_board(tm)

    bundle = board._repr_mimebundle_()

    view = bundle["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == board.widget.model_id
    assert "<b>3 tasks</b>" in bundle["text/html"]
    assert bundle["text/html"].count('class="icij-nb-cells"') == 3
    assert bundle["text/plain"].startswith("TaskBoard: 3 tasks DONE=3")
    assert repr(board).startswith("<TaskBoard 'testapp' tasks=3 shown=3 page=1/1")


def test_a_board_shows_the_tasks_of_an_earlier_session(
    two_groups, make_manager, make_board
):
    first = make_manager(two_groups, store="file")
    first.start_pool("cpu", workers=1)
    first.gather(first.map("square", [{"i": i} for i in range(4)]))
    path = first.store.path
    first.close()

    second = make_manager(two_groups, store=path)
    board = make_board(second)

    assert "DONE 4" in board.counts_html.value
    pd.testing.assert_frame_equal(board.frame, second.frame())
    assert "4/4" not in board.rows[0].html.value
    assert "1/4" in board.rows[0].html.value  # one attempt of four allowed


def test_close_stops_updates_and_can_be_called_twice(two_groups, make_manager, release):
    tm = make_manager(two_groups)
    tm.start_pool("cpu", workers=1)
    board = tm.board()

    board.close()
    board.close()

    tm.gather([tm.submit("square", {"i": 1})])
    assert board.frame.empty  # it stopped listening
    with pytest.raises(nb.IcijNbError, match="this board is closed"):
        board.set_filter(text="x")
    with pytest.raises(nb.IcijNbError, match="this board is closed"):
        board.refresh()
    assert "text/html" in board._repr_mimebundle_()
    assert repr(board).startswith("<TaskBoard closed")


def test_boards_keep_working_when_the_manager_is_closed(
    two_groups, make_manager, make_board
):
    tm = make_manager(two_groups)
    tm.start_pool("cpu", workers=1)
    tm.gather([tm.submit("square", {"i": 3})])
    board = make_board(tm)

    tm.close()

    assert board.frame["result"].tolist() == [9]
    board.refresh()
    assert board.rows[0].cancel_button.disabled
    with pytest.raises(nb.ManagerClosed):
        tm.board()


def test_importing_icij_nb_does_not_import_ipywidgets():
    code = "import sys, icij_nb; print('ipywidgets' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "False", out.stderr


def test_widgets_are_only_updated_from_the_runtime_thread(
    two_groups, make_manager, make_board
):
    tm = make_manager(two_groups)
    board = make_board(tm, refresh_s=0.05)
    tm.start_pool("cpu", workers=2)
    threads = set()

    def record(change: dict[str, Any]) -> None:
        threads.add(threading.current_thread().name)

    for widget in (board.counts_html, board.page_label, *(r.html for r in board.rows)):
        widget.observe(record, names="value")

    tm.gather(tm.map("square", [{"i": i} for i in range(50)]))
    board.set_filter(text="4")
    board.sort("id")
    board.next_page()

    assert threads == {"icij_nb-runtime"}


def test_a_burst_of_changes_is_applied_over_several_short_refreshes(
    app, make_manager, make_board
):
    @app.task(group="cpu")
    async def noop(i: int) -> int:
        return i

    tm = make_manager(app)
    board = make_board(tm, refresh_s=0.05)
    totals: list[str] = []
    board.counts_html.observe(
        lambda c: totals.append(re.search(r"<b>(\d+) tasks?</b>", c["new"]).group(1)),
        names="value",
    )

    tm.map("noop", [{"i": i} for i in range(5_000)])  # one notification of 5,000

    wait_until(lambda: "5000" in totals, what="every task to show")
    # 2,000 changes per timed refresh at most: the runtime loop is never held long.
    assert list(dict.fromkeys(totals))[:3] == ["2000", "4000", "5000"]
