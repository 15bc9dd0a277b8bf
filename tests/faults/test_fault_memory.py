"""A burst of 100,000 in-kernel tasks against a slow consumer: memory stays bounded.

The whole burst is queued at once (one ``tm.map``) on the embedded broker for one
worker, the slow consumer, whose task yields to the loop once per task; a
subscriber (a stand-in for a live board) hears of every change. The queue holds up
to 100,000 tasks. The test samples the process's
resident memory (RSS, from ``/proc/self/status``) on a thread and bounds its growth
per task, at the peak and at the end; the figures go to docs/reliability.md.

The bound is generous on purpose (memory is no speed, but it varies with the
allocator): it catches a leak or a copy per task, not a few hundred bytes.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path

import pytest

import icij_nb as nb

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(300)]

TASKS = 100_000
WARM_UP = 2_000
#: the most resident memory a queued-then-finished task may add, in bytes
BOUND_PER_TASK = 3 * 1024


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class PeakSampler:
    """The highest RSS seen on a thread that samples it every 20 ms."""

    def __init__(self) -> None:
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, rss_bytes())


def test_a_burst_of_100k_tasks_on_a_slow_consumer_keeps_memory_bounded(
    scratch, figures
):
    app = nb.App("burst", groups=(nb.TaskGroup("cpu"),))

    @app.task(group="cpu")
    async def step(i: int) -> int:
        await asyncio.sleep(0)
        return i

    notified = [0]

    def board(tasks: list[nb.Task]) -> None:
        notified[0] += len(tasks)

    tm = nb.connect(app, store=scratch / "burst.sqlite3")
    try:
        tm.subscribe(board)
        tm.start_pool("cpu", workers=1)
        warm = tm.map("step", [{"i": i} for i in range(WARM_UP)])
        assert tm.gather(warm, timeout_s=60) == list(range(WARM_UP))
        gc.collect()
        before = rss_bytes()

        with PeakSampler() as sampler:
            started = time.monotonic()
            burst = tm.map("step", [{"i": i} for i in range(TASKS)])
            queued_at_once = tm.counts[nb.TaskState.QUEUED]
            results = tm.gather(burst, timeout_s=240)
            elapsed_s = time.monotonic() - started
        gc.collect()
        after = rss_bytes()

        assert results == list(range(TASKS))
        frame = tm.frame()
        assert len(frame) == TASKS + WARM_UP
        assert set(frame["state"].astype(str)) == {"DONE"}
        assert frame["id"].is_unique
    finally:
        tm.close()

    peak_per_task = (sampler.peak - before) / TASKS
    end_per_task = (after - before) / TASKS
    figures.record(
        "7-burst-100k-slow-consumer",
        submitted=TASKS,
        done=len(results),
        error=0,
        cancelled=0,
        lost=TASKS - len(results),
        duplicates=int(len(frame) - frame["id"].nunique()),
        wrong_results=sum(1 for i, r in enumerate(results) if r != i),
        queued_at_once=queued_at_once,
        rss_before_mb=round(before / 2**20, 1),
        rss_peak_mb=round(sampler.peak / 2**20, 1),
        rss_growth_peak_bytes_per_task=round(peak_per_task),
        rss_growth_end_bytes_per_task=round(end_per_task),
        bound_bytes_per_task=BOUND_PER_TASK,
        changes_notified=notified[0],
        seconds=round(elapsed_s, 1),
    )
    # A slow consumer indeed: the burst was queued before it could drain much.
    assert queued_at_once > TASKS // 2
    assert peak_per_task < BOUND_PER_TASK, f"{peak_per_task:.0f} bytes per task"
    assert end_per_task < BOUND_PER_TASK, f"{end_per_task:.0f} bytes per task"
