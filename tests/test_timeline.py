"""The timeline: its data (lanes, bars, throughput) and the PNG it renders."""

from __future__ import annotations

import sys
import time

import pandas as pd
import pytest

import icij_nb as nb
from icij_nb.testing import wait_until

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def finished(app, make_manager):
    """A manager whose 8 tasks ran on 2 workers: 7 DONE, 1 ERROR."""

    @app.task(group="cpu", max_retries=0)
    def work(i: int) -> int:
        time.sleep(0.15)  # past the workers' grace period: a start time of its own
        if i == 3:
            msg = "three"
            raise ValueError(msg)
        return i

    tm = make_manager(app)
    tm.start_pool("cpu", workers=2)
    tm.gather(tm.map("work", [{"i": i} for i in range(8)]), return_exceptions=True)
    return tm


def test_a_timeline_has_one_lane_per_worker_and_one_bar_per_task(finished):
    line = nb.timeline(finished.frame())
    assert len(line.workers) == 2
    assert len(line.bars) == 8
    assert line.not_started == 0
    assert set(line.bars["worker"]) == set(line.workers)
    assert sorted(line.bars["state"]) == ["DONE"] * 7 + ["ERROR"]
    assert (line.bars["end"] > line.bars["start"]).all()
    assert "tasks=8 workers=2" in repr(line)
    assert line.title == "8 tasks on 2 workers"


def test_throughput_counts_every_task_that_ended(finished):
    line = nb.timeline(finished.frame(), bins=10)
    assert len(line.throughput) == 10
    span_s = (line.bars["end"].max() - line.bars["start"].min()).total_seconds()
    assert line.throughput.sum() * span_s / 10 == pytest.approx(8)


def test_a_timeline_renders_as_a_png_under_the_cell(finished, tmp_path):
    line = nb.timeline(finished.frame())
    png = line._repr_png_()
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) > 5_000
    saved = line.save(tmp_path / "timeline.png")
    assert saved.read_bytes().startswith(PNG_SIGNATURE)
    # Drawn without pyplot: the inline backend cannot show it a second time.
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or pyplot.get_fignums() == []


def test_the_board_timeline_draws_what_the_board_shows(finished):
    board = finished.board()
    try:
        board.set_filter(states=["ERROR"])
        line = board.timeline(title="failures")
        assert line.bars["state"].tolist() == ["ERROR"]
        assert line.png().startswith(PNG_SIGNATURE)
    finally:
        board.close()


def test_tasks_not_started_are_counted_not_drawn(app, make_manager, release):
    @app.task(group="cpu")
    def hold() -> None:
        release.wait(10)

    tm = make_manager(app)
    tm.start_pool("cpu", workers=1)
    handles = [tm.submit("hold", {}) for _ in range(3)]
    wait_until(lambda: (tm.frame()["state"] == "RUNNING").sum() == 1, timeout_s=5)
    now = pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=5)
    line = nb.timeline(tm.frame(), now=now)
    release.set()
    tm.gather(handles)
    assert line.not_started == 2
    assert line.bars["state"].tolist() == ["RUNNING"]
    assert line.bars["end"].iloc[0] == now  # a running task's bar ends now
    assert "2 not started" in line.title
    assert line.png().startswith(PNG_SIGNATURE)


def test_an_empty_frame_draws_an_empty_timeline(app, make_manager):
    line = nb.timeline(make_manager(app).frame())
    assert line.bars.empty
    assert line.throughput.empty
    assert line.png().startswith(PNG_SIGNATURE)


def test_a_frame_without_the_columns_is_refused():
    with pytest.raises(nb.InvalidArguments, match=r"tm\.frame"):
        nb.timeline(pd.DataFrame({"id": ["a"]}))
    with pytest.raises(nb.InvalidArguments, match="bins"):
        nb.timeline(pd.DataFrame(columns=list(nb.FRAME_COLUMNS)), bins=0)
