"""Task board benchmark: refresh cost, memory per task and filter latency.

Run from the repository root:

    .venv/bin/python benchmarks/board.py [--sizes 1000,10000,100000] \
        [--rate 1000] [--seconds 6] [--json out.json]

For each size N:

1. Fill: a memory store gets N tasks through the public API: ``tm.map`` of an
   async no-op task in chunks of 10,000 and ``tm.gather``, with an in-kernel pool
   of 4 workers. Every task ends DONE, with its args (``{"i": k}``) and result.
2. Create: ``tm.board()`` (wall time; it reads the store's frame once).
3. Memory: a second board is created under ``tracemalloc``; what it still holds
   after a garbage collection, less what a board of an empty manager holds (its
   widgets, mostly: printed as the fixed cost), per task: its columnar table, lists
   and index. Then ``board.frame`` (every row, unfiltered): what the DataFrame
   holds according to ``tracemalloc``, and pandas' ``memory_usage(deep=True)``.
4. Load: a driver thread submits tasks of a 10 ms async task in small batches
   (``tm.map``), aiming at ``--rate`` state changes a second (QUEUED, RUNNING and
   DONE each count one; the rate actually seen is counted by a subscriber and
   printed). Meanwhile the board refreshes by itself every ``refresh_s`` (0.3 s):
   the runtime thread's CPU time per refresh (``time.thread_time`` around each
   refresh, recorded by the board) is reported as median, p95 and max. The main
   thread measures the round trip of an empty call into the runtime loop
   (what a cell waits for on every blocking call) at the same time.
5. Filters: at full size, one ``board.set_filter`` per keystroke of a free-text
   search and of a name filter, a state filter, a group filter, and a clear: the
   wall time of each call until the widgets show the result; then the same through
   the widget (setting ``board.filter_text.value`` from the main thread, as the
   frontend does, until the board has rendered it).

Targets (from the product spec): a refresh <= 20 ms of kernel CPU, <= 1 KB per task
for the board's data, a filter answers within 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import icij_nb as nb

CHUNK = 10_000
TARGET_REFRESH_MS = 20.0
TARGET_BYTES_PER_TASK = 1024
TARGET_FILTER_MS = 200.0


def make_app() -> nb.App:
    app = nb.App("boardbench")

    @app.task(group="cpu")
    async def noop(i: int) -> int:
        return i

    @app.task(group="io")
    async def short(i: int) -> int:
        await asyncio.sleep(0.01)
        return i

    return app


def fill(tm: nb.TaskManager, n: int) -> float:
    start = time.perf_counter()
    for first in range(0, n, CHUNK):
        batch = tm.map("noop", [{"i": i} for i in range(first, min(n, first + CHUNK))])
        tm.gather(batch, timeout_s=600)
    return time.perf_counter() - start


def traced_board_bytes(tm: nb.TaskManager) -> tuple[int, Any]:
    """What a new board holds after creation, by tracemalloc (must be started)."""
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    board = tm.board()
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before, board


def fixed_board_bytes() -> int:
    """What a board of an empty manager holds: its widgets, mostly."""
    tm = nb.connect(make_app(), store=":memory:")
    try:
        tm.board().close()  # first use: imports and caches, not the board's
        tracemalloc.start()
        size, board = traced_board_bytes(tm)
        tracemalloc.stop()
        board.close()
        return size
    finally:
        tm.close()


def measure_memory(tm: nb.TaskManager, n: int, fixed: int) -> dict[str, float]:
    tracemalloc.start()
    board_bytes, board = traced_board_bytes(tm)
    before = tracemalloc.get_traced_memory()[0]
    frame = board.frame
    gc.collect()
    frame_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    deep = int(frame.memory_usage(deep=True).sum())
    assert len(frame) == n, (len(frame), n)
    board.close()
    return {
        "board_fixed_kb": fixed / 1024,
        "board_bytes_per_task": (board_bytes - fixed) / n,
        "frame_bytes_per_task": frame_bytes / n,
        "frame_deep_bytes_per_task": deep / n,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure_load(
    tm: nb.TaskManager, board: Any, rate: int, seconds: float
) -> dict[str, float]:
    changes = [0]

    def count(tasks: list[nb.Task]) -> None:
        changes[0] += len(tasks)

    unsubscribe = tm.subscribe(count)
    stop = threading.Event()
    # About three changes per task (QUEUED, RUNNING, DONE).
    per_batch = max(1, rate // 3 // 20)

    def drive() -> None:
        handles = []
        next_at = time.perf_counter()
        while not stop.is_set():
            handles += tm.map("short", [{"i": 0}] * per_batch)
            next_at += 0.05
            stop.wait(max(0.0, next_at - time.perf_counter()))
        tm.gather(handles, timeout_s=120)

    refreshes_before = len(board._refresh_cpu_s)
    driver = threading.Thread(target=drive)
    runtime = tm._runtime
    trips: list[float] = []
    start = time.perf_counter()
    driver.start()

    async def nothing() -> None:
        return None

    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        runtime.run(nothing())
        trips.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.02)
    window = time.perf_counter() - start
    seen = changes[0]
    stop.set()
    driver.join()
    unsubscribe()
    cpu = [s * 1000 for s in list(board._refresh_cpu_s)[refreshes_before:]]
    return {
        "changes_per_s": seen / window,
        "refreshes": len(cpu),
        "refresh_cpu_ms_median": statistics.median(cpu),
        "refresh_cpu_ms_p95": percentile(cpu, 0.95),
        "refresh_cpu_ms_max": max(cpu),
        "board_cpu_share": sum(cpu) / 1000 / window,
        "roundtrip_ms_p50": statistics.median(trips),
        "roundtrip_ms_p99": percentile(trips, 0.99),
    }


def measure_filters(board: Any) -> dict[str, float]:
    steps: list[dict[str, Any]] = [
        {"text": "1"},
        {"text": "12"},
        {"text": "123"},
        {"text": "1234"},
        {"text": None, "name": "noo"},
        {"name": None, "states": ["DONE"]},
        {"states": None, "group": "cpu"},
        {"group": None},
    ]
    api = []
    for step in steps:
        t0 = time.perf_counter()
        board.set_filter(**step)
        api.append((time.perf_counter() - t0) * 1000)
    typed = []
    for text in ["9", "99", "999", "9999", ""]:
        t0 = time.perf_counter()
        board.filter_text.value = text  # as the frontend does, on the kernel thread
        board.refresh()  # queued after the board's own handling: returns once shown
        typed.append((time.perf_counter() - t0) * 1000)
        assert board.filters.text == (text or None), board.filters
    return {
        "filter_api_ms_median": statistics.median(api),
        "filter_api_ms_max": max(api),
        "filter_typed_ms_median": statistics.median(typed),
        "filter_typed_ms_max": max(typed),
    }


def run_size(n: int, rate: int, seconds: float, fixed: int) -> dict[str, float]:
    app = make_app()
    tm = nb.connect(app, store=":memory:")
    try:
        tm.start_pool("cpu", workers=4)
        tm.start_pool("io", workers=64)
        result: dict[str, float] = {"tasks": n, "fill_s": fill(tm, n)}
        print(f"[{n}] filled in {result['fill_s']:.1f} s", file=sys.stderr)
        t0 = time.perf_counter()
        board = tm.board()
        result["create_s"] = time.perf_counter() - t0
        result.update(measure_memory(tm, n, fixed))
        print(f"[{n}] memory measured", file=sys.stderr)
        result.update(measure_load(tm, board, rate, seconds))
        print(f"[{n}] load measured", file=sys.stderr)
        result.update(measure_filters(board))
        board.close()
        return result
    finally:
        tm.close()


ROWS = [
    ("tasks", "tasks in the store", "{:,.0f}", None),
    ("fill_s", "fill time (s)", "{:.1f}", None),
    ("create_s", "tm.board() (s)", "{:.2f}", None),
    ("board_fixed_kb", "board fixed memory (KiB)", "{:.0f}", None),
    (
        "board_bytes_per_task",
        "board memory / task (B)",
        "{:.0f}",
        TARGET_BYTES_PER_TASK,
    ),
    ("frame_bytes_per_task", "board.frame / task (B)", "{:.0f}", TARGET_BYTES_PER_TASK),
    ("frame_deep_bytes_per_task", "  pandas deep / task (B)", "{:.0f}", None),
    ("changes_per_s", "state changes / s seen", "{:,.0f}", None),
    ("refreshes", "refreshes in the window", "{:.0f}", None),
    ("refresh_cpu_ms_median", "refresh CPU median (ms)", "{:.2f}", TARGET_REFRESH_MS),
    ("refresh_cpu_ms_p95", "refresh CPU p95 (ms)", "{:.2f}", TARGET_REFRESH_MS),
    ("refresh_cpu_ms_max", "refresh CPU max (ms)", "{:.2f}", None),
    ("board_cpu_share", "board CPU share of a core", "{:.1%}", None),
    ("roundtrip_ms_p50", "runtime round trip p50 (ms)", "{:.2f}", None),
    ("roundtrip_ms_p99", "runtime round trip p99 (ms)", "{:.2f}", None),
    ("filter_api_ms_median", "set_filter median (ms)", "{:.1f}", TARGET_FILTER_MS),
    ("filter_api_ms_max", "set_filter max (ms)", "{:.1f}", TARGET_FILTER_MS),
    ("filter_typed_ms_median", "typed filter median (ms)", "{:.1f}", TARGET_FILTER_MS),
    ("filter_typed_ms_max", "typed filter max (ms)", "{:.1f}", TARGET_FILTER_MS),
]


def table(results: list[dict[str, float]]) -> str:
    head = f"{'figure':<30}" + "".join(f"{r['tasks']:>12,.0f}" for r in results)
    lines = [head + f"{'target':>12}", "-" * len(head + " " * 12)]
    for key, label, fmt, target in ROWS:
        cells = "".join(f"{fmt.format(r[key]):>12}" for r in results)
        verdict = ""
        if target is not None:
            met = all(r[key] <= target for r in results)
            verdict = f"{'<= ' + format(target, 'g'):>12} {'MET' if met else 'MISSED'}"
        lines.append(f"{label:<30}{cells}{verdict}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    fixed = fixed_board_bytes()
    results = [run_size(n, options.rate, options.seconds, fixed) for n in sizes]
    print(table(results))
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
