"""In-kernel benchmark: icij_nb's memory broker and pools against plain asyncio.

Run from the repository root:

    .venv/bin/python benchmarks/inkernel.py [--tasks 20000] [--repeats 5] \
        [--json out.json]

Every figure is measured ``--repeats`` times in this one process and reported as the
median (with min and max). icij_nb is compared with a baseline measured in the same
run, on the same machine, interleaved with it, because these machines are noisy:
the ratios are the figures to read, the absolute numbers move from run to run.

Figures:

- baseline async: an ``asyncio.Queue``, N consumer coroutines and a future per task;
  the producer puts ``(item, future)`` for every task, a consumer awaits a no-op
  coroutine and sets the future. Tasks/s from the first put to the last future done.
- baseline sync: the same, the consumers running a sync no-op with
  ``loop.run_in_executor`` on a ThreadPoolExecutor of N threads.
- icij async / icij sync: ``tm.map(name, [{}] * tasks)`` then ``tm.gather(batch)``
  from the main thread (the blocking API, as a notebook cell uses it), a pool of N
  workers, a SQLite store file. A fresh manager per repeat; connect, start_pool and
  close are not timed.
- latency: sequential ``tm.submit("noop_async").result()`` with a pool of 1 worker,
  against ``asyncio.run_coroutine_threadsafe`` into a loop thread that does queue put
  -> consumer -> future result. p50 and p99 of each repeat; the medians over repeats.
- CPU: the process's CPU time (all threads) per task over each throughput window,
  steadier than tasks/s when other processes compete for the CPUs.
- printing (unless ``--skip-printing``): icij async / sync again, with tasks that
  print one line each (kept with each task, docs/output.md), right after the no-op
  run; the ratio to the no-op run is what capturing costs.
- in a kernel (unless ``--skip-kernel``): ``submit().result()`` p50 in a real
  ipykernel, with the wait reading widget messages (``ui_poll.py``, the default in
  a kernel) and without (``ui_poll.current`` replaced by ``lambda: None``), blocks of
  calls alternating between the two in the one kernel.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from figures import Figure, percentile

import icij_nb as nb

WORKERS = 4
LATENCY_CALLS = 2_000
WARMUP_TASKS = 1_000

# Targets (see the benchmark's README): async throughput at least 10% of the plain
# asyncio baseline and at least 15,000 tasks/s; sync at least 5,000 tasks/s; the
# median sequential round trip at most 0.5 ms.
TARGET_ASYNC_RATIO = 0.20
TARGET_SYNC_RATIO = 0.50
TARGET_ASYNC_TPS = 15_000.0
TARGET_SYNC_TPS = 5_000.0
TARGET_P50_MS = 0.5


# -- the app under test ---------------------------------------------------------------


def make_app() -> nb.App:
    app = nb.App("inkernel-bench")

    @app.task
    async def noop_async() -> None:
        return None

    @app.task
    def noop_sync() -> None:
        return None

    # One line of output each: what capturing a task's output costs.
    @app.task
    async def print_async() -> None:
        print("one line of output")

    @app.task
    def print_sync() -> None:
        print("one line of output")

    return app


# -- figures --------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """Collect before a measurement so one run's garbage is not paid by the next."""
    gc.collect()
    yield


@dataclass
class Throughput:
    tasks_per_s: float
    cpu_us_per_task: float  # CPU time of the whole process (every thread) per task
    per_worker: list[int] = field(default_factory=list)  # tasks per pool worker


# -- baseline: plain asyncio ----------------------------------------------------------


async def _noop() -> None:
    return None


def _sync_noop() -> None:
    return None


async def _baseline_throughput(n_tasks: int, workers: int, *, sync: bool) -> Throughput:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, asyncio.Future[None]]] = asyncio.Queue()
    executor = concurrent.futures.ThreadPoolExecutor(workers) if sync else None

    async def consume() -> None:
        while True:
            _, future = await queue.get()
            if executor is not None:
                await loop.run_in_executor(executor, _sync_noop)
            else:
                await _noop()
            future.set_result(None)

    consumers = [asyncio.create_task(consume()) for _ in range(workers)]
    if executor is not None:  # start the threads outside the timing
        await asyncio.gather(
            *(loop.run_in_executor(executor, _sync_noop) for _ in range(workers))
        )
    start, cpu_start = time.perf_counter(), time.process_time()
    futures = []
    for item in range(n_tasks):
        future: asyncio.Future[None] = loop.create_future()
        queue.put_nowait((item, future))
        futures.append(future)
    await asyncio.gather(*futures)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    for consumer in consumers:
        consumer.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    if executor is not None:
        executor.shutdown()
    return Throughput(n_tasks / elapsed, cpu / n_tasks * 1e6)


def baseline_throughput(n_tasks: int, *, sync: bool) -> Throughput:
    with quiet_gc():
        return asyncio.run(_baseline_throughput(n_tasks, WORKERS, sync=sync))


def baseline_latency(calls: int) -> list[float]:
    """Seconds per round trip: main thread -> loop thread queue -> consumer -> back."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    thread = threading.Thread(
        target=lambda: (loop.call_soon(ready.set), loop.run_forever()), daemon=True
    )
    thread.start()
    ready.wait()

    async def setup() -> asyncio.Queue[asyncio.Future[None]]:
        queue: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()

        async def consume() -> None:
            while True:
                future = await queue.get()
                await _noop()
                future.set_result(None)

        consumer = asyncio.create_task(consume())
        consumers.append(consumer)
        return queue

    consumers: list[asyncio.Task[None]] = []
    queue = asyncio.run_coroutine_threadsafe(setup(), loop).result()

    async def round_trip() -> None:
        future: asyncio.Future[None] = loop.create_future()
        queue.put_nowait(future)
        await future

    samples = []
    with quiet_gc():
        for _ in range(calls):
            start = time.perf_counter()
            asyncio.run_coroutine_threadsafe(round_trip(), loop).result()
            samples.append(time.perf_counter() - start)

    async def teardown() -> None:
        consumers[0].cancel()
        await asyncio.gather(consumers[0], return_exceptions=True)

    asyncio.run_coroutine_threadsafe(teardown(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()
    return samples


# -- icij_nb --------------------------------------------------------------------------


@contextlib.contextmanager
def manager(
    app: nb.App, store: Path, *, workers: int
) -> Iterator[tuple[nb.TaskManager, Any]]:
    tm = nb.connect(app, store=store)
    try:
        pool = tm.start_pool(None, workers=workers)
        yield tm, pool
    finally:
        tm.close()


def stored_done(store: Path) -> int:
    with contextlib.closing(sqlite3.connect(store)) as db:
        (count,) = db.execute(
            "SELECT COUNT(*) FROM tasks WHERE state = 'DONE'"
        ).fetchone()
    return int(count)


def icij_throughput(app: nb.App, name: str, n_tasks: int, store: Path) -> Throughput:
    args: list[dict[str, Any]] = [{}] * n_tasks
    with manager(app, store, workers=WORKERS) as (tm, pool), quiet_gc():
        start, cpu_start = time.perf_counter(), time.process_time()
        batch = tm.map(name, args)
        results = tm.gather(batch)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        per_worker = [worker.done for worker in pool.workers]
    if len(results) != n_tasks or any(r is not None for r in results):
        raise RuntimeError(f"{name}: wrong results from gather")
    done = stored_done(store)
    if done != n_tasks:
        raise RuntimeError(f"{name}: the store holds {done} DONE rows, not {n_tasks}")
    return Throughput(n_tasks / elapsed, cpu / n_tasks * 1e6, per_worker)


def icij_latency(app: nb.App, calls: int, store: Path) -> list[float]:
    samples = []
    with manager(app, store, workers=1) as (tm, _), quiet_gc():
        for _ in range(calls):
            start = time.perf_counter()
            tm.submit("noop_async").result()
            samples.append(time.perf_counter() - start)
    return samples


# -- the run --------------------------------------------------------------------------


@dataclass
class Results:
    figures: dict[str, Figure]
    per_worker: dict[str, list[int]] = field(default_factory=dict)
    manager_per_repeat: str = "fresh per repeat (connect, start_pool, close not timed)"

    def __getitem__(self, key: str) -> Figure:
        return self.figures[key]

    def paired_ratio(self, ours: str, base: str) -> float:
        """Median of the per-repeat ratios: each pair ran back to back."""
        pairs = zip(self[ours].values, self[base].values, strict=True)
        return statistics.median(o / b for o, b in pairs)


# Dask's in-process client, in its own virtualenv (scripts/bench_venv.sh dask):
# a reference measured in the same run, never a dependency of icij_nb.
DASK_SOURCE = """\
import asyncio, json, sys, time
from distributed import Client

async def noop_async():
    return None

def noop_sync():
    return None

n = int(sys.argv[1])
out = {}
with Client(processes=False, n_workers=1, threads_per_worker=4,
            dashboard_address=None) as client:
    for kind, fn in (("async", noop_async), ("sync", noop_sync)):
        client.gather(client.map(lambda i, f=fn: f(), range(200), pure=False))
        if kind == "async":
            # Dask runs a coroutine function's result as a plain object: wrap it
            # so that the task awaits it, as icij_nb's worker does.
            def call(i):
                return asyncio.run(noop_async())
        else:
            def call(i):
                return noop_sync()
        start = time.perf_counter()
        client.gather(client.map(call, range(n), pure=False))
        out[kind] = n / (time.perf_counter() - start)
print(json.dumps(out), flush=True)
"""


def dask_python() -> str | None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_venv.sh"
    done = subprocess.run(
        ["bash", str(script), "dask"], capture_output=True, check=False, timeout=900
    )
    lines = done.stdout.decode().split()
    return lines[-1] if done.returncode == 0 and lines else None


def dask_throughput(python: str, n_tasks: int) -> dict[str, float]:
    done = subprocess.run(
        [python, "-c", DASK_SOURCE, str(n_tasks)],
        capture_output=True,
        check=True,
        timeout=600,
    )
    result: dict[str, float] = json.loads(done.stdout.decode().splitlines()[-1])
    return result


def make_figures() -> dict[str, Figure]:
    return {
        "baseline_async": Figure("baseline async (asyncio.Queue)", "tasks/s"),
        "icij_async": Figure(
            "icij_nb async (map+gather)",
            "tasks/s",
            f">= {TARGET_ASYNC_TPS:,.0f} and >= {TARGET_ASYNC_RATIO:.0%} of baseline",
        ),
        "baseline_sync": Figure("baseline sync (run_in_executor)", "tasks/s"),
        "icij_sync": Figure(
            "icij_nb sync (map+gather)", "tasks/s", f">= {TARGET_SYNC_TPS:,.0f}"
        ),
        "baseline_p50": Figure("baseline round trip p50", "ms"),
        "baseline_p99": Figure("baseline round trip p99", "ms"),
        "icij_p50": Figure(
            "icij_nb submit().result() p50", "ms", f"<= {TARGET_P50_MS} ms"
        ),
        "icij_p99": Figure("icij_nb submit().result() p99", "ms"),
        # CPU time of every thread of the process, per task: less sensitive than
        # tasks/s to other processes competing for the CPUs.
        "baseline_async_cpu": Figure("baseline async CPU", "us/task"),
        "icij_async_cpu": Figure("icij_nb async CPU", "us/task"),
        "baseline_sync_cpu": Figure("baseline sync CPU", "us/task"),
        "icij_sync_cpu": Figure("icij_nb sync CPU", "us/task"),
        "icij_async_print": Figure("icij_nb async, one print per task", "tasks/s"),
        "icij_sync_print": Figure("icij_nb sync, one print per task", "tasks/s"),
        "kernel_p50_poll": Figure(
            "kernel result() p50, polling", "ms", "<= no polling + 1 ms"
        ),
        "kernel_p50_nopoll": Figure("kernel result() p50, no polling", "ms"),
        "dask_async": Figure("Dask Client(processes=False) async", "tasks/s"),
        "dask_sync": Figure("Dask Client(processes=False) sync", "tasks/s"),
    }


def run_repeat(
    app: nb.App,
    n_tasks: int,
    run_dir: Path,
    results: Results,
    dask: str | None,
    *,
    printing: bool = True,
) -> dict[str, float]:
    """One repeat of every figure, interleaved so a slow spell hits both sides."""
    figures = results.figures
    measured: dict[str, float] = {}
    runs = {
        "baseline_async": baseline_throughput(n_tasks, sync=False),
        "icij_async": icij_throughput(app, "noop_async", n_tasks, run_dir / "a.db"),
        "baseline_sync": baseline_throughput(n_tasks, sync=True),
        "icij_sync": icij_throughput(app, "noop_sync", n_tasks, run_dir / "s.db"),
    }
    for key, outcome in runs.items():
        measured[key] = outcome.tasks_per_s
        measured[f"{key}_cpu"] = outcome.cpu_us_per_task
    if printing:
        for kind in ("async", "sync"):
            store = run_dir / f"p{kind}.db"
            printed = icij_throughput(app, f"print_{kind}", n_tasks, store)
            measured[f"icij_{kind}_print"] = printed.tasks_per_s
    base = baseline_latency(LATENCY_CALLS)
    ours = icij_latency(app, LATENCY_CALLS, run_dir / "l.sqlite3")
    for key, samples in (("baseline", base), ("icij", ours)):
        measured[f"{key}_p50"] = percentile(samples, 0.50) * 1e3
        measured[f"{key}_p99"] = percentile(samples, 0.99) * 1e3
    if dask is not None:
        for kind, value in dask_throughput(dask, n_tasks).items():
            measured[f"dask_{kind}"] = value
    for key, value in measured.items():
        figures[key].values.append(value)
    results.per_worker = {
        "async": runs["icij_async"].per_worker,
        "sync": runs["icij_sync"].per_worker,
    }
    return measured


def run(
    n_tasks: int,
    repeats: int,
    log: Callable[[str], None],
    *,
    dask: bool = True,
    printing: bool = True,
    kernel: bool = True,
) -> Results:
    app = make_app()
    dask_py = dask_python() if dask else None
    if dask and dask_py is None:
        log("Dask's virtualenv could not be built: Dask left out")
    results = Results(make_figures())
    with tempfile.TemporaryDirectory(prefix="icij_nb-bench-") as tmp:
        # Warm up: start the runtime thread, import lazily loaded code, fill caches.
        icij_throughput(app, "noop_async", WARMUP_TASKS, Path(tmp, "warm-a.sqlite3"))
        icij_throughput(app, "noop_sync", WARMUP_TASKS, Path(tmp, "warm-s.sqlite3"))
        baseline_throughput(WARMUP_TASKS, sync=False)
        for index in range(repeats):
            run_dir = Path(tmp, f"r{index}")
            run_dir.mkdir()
            m = run_repeat(app, n_tasks, run_dir, results, dask_py, printing=printing)
            log(
                f"repeat {index + 1}/{repeats}: async {m['icij_async']:,.0f} vs "
                f"{m['baseline_async']:,.0f} tasks/s, sync {m['icij_sync']:,.0f} vs "
                f"{m['baseline_sync']:,.0f} tasks/s, p50 {m['icij_p50']:.3f} vs "
                f"{m['baseline_p50']:.3f} ms"
            )
    if kernel:
        measured = kernel_latency(LATENCY_CALLS // 2, repeats * 2)
        for mode, values in measured.items():
            results.figures[f"kernel_p50_{mode}"].values.extend(values)
        log(f"kernel p50 ms: {measured}")
    return results


# The wait in a real kernel: the same sequential calls with the kernel's widget
# messages read during the wait (the default there) and without, alternating.
KERNEL_SOURCE = """\
import json, statistics, tempfile, time
from pathlib import Path
import icij_nb as nb
from icij_nb import ui_poll

app = nb.App("kernel-latency")

@app.task
async def noop_async():
    return None

folder = tempfile.mkdtemp(prefix="icij_nb-bench-kernel-")
tm = nb.connect(app, store=Path(folder, "k.sqlite3"))
tm.start_pool(None, workers=1)
real, off = ui_poll.current, (lambda: None)
assert real() is not None, "this kernel has no widget messages to read"
for _ in range(500):
    tm.submit("noop_async").result()
out = {"poll": [], "nopoll": []}
for repeat in range(REPEATS):
    modes = ("poll", "nopoll") if repeat % 2 == 0 else ("nopoll", "poll")
    for mode in modes:
        ui_poll.current = real if mode == "poll" else off
        samples = []
        for _ in range(CALLS):
            start = time.perf_counter()
            tm.submit("noop_async").result()
            samples.append(time.perf_counter() - start)
        out[mode].append(statistics.median(samples) * 1e3)
ui_poll.current = real
tm.close()
print("RESULT " + json.dumps(out))
"""


def kernel_latency(calls: int, repeats: int) -> dict[str, list[float]]:
    """p50 ms of each block of ``calls``, per mode (``poll``, ``nopoll``)."""
    from jupyter_client.manager import start_new_kernel

    source = KERNEL_SOURCE.replace("REPEATS", str(repeats)).replace("CALLS", str(calls))
    manager, client = start_new_kernel(kernel_name="python3")
    printed: list[str] = []

    def collect(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            printed.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            printed.append("\n".join(msg["content"]["traceback"]))

    try:
        reply = client.execute_interactive(source, timeout=600, output_hook=collect)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    text = "".join(printed)
    if reply["content"]["status"] != "ok" or "RESULT " not in text:
        raise RuntimeError(f"the kernel measurement failed:\n{text}")
    result: dict[str, list[float]] = json.loads(text.split("RESULT ", 1)[1])
    return result


# -- report ---------------------------------------------------------------------------


def _check(value: float, target: str, met: bool | None) -> dict[str, Any]:
    return {"value": value, "target": target, "met": met}


def verdicts(results: Results) -> dict[str, dict[str, Any]]:
    """The ratios and target checks, all computed on medians over the repeats."""
    async_ratio = results["icij_async"].median / results["baseline_async"].median
    sync_ratio = results["icij_sync"].median / results["baseline_sync"].median
    async_tps = results["icij_async"].median
    sync_tps = results["icij_sync"].median
    p50 = results["icij_p50"].median
    return {
        "icij async / baseline async": _check(
            async_ratio,
            f">= {TARGET_ASYNC_RATIO:.2f}",
            async_ratio >= TARGET_ASYNC_RATIO,
        ),
        "  async, median of paired ratios": _check(
            results.paired_ratio("icij_async", "baseline_async"), "", None
        ),
        "icij async tasks/s": _check(
            async_tps, f">= {TARGET_ASYNC_TPS:,.0f}", async_tps >= TARGET_ASYNC_TPS
        ),
        "icij sync / baseline sync": _check(
            sync_ratio,
            f">= {TARGET_SYNC_RATIO:.2f}",
            sync_ratio >= TARGET_SYNC_RATIO,
        ),
        "  sync, median of paired ratios": _check(
            results.paired_ratio("icij_sync", "baseline_sync"), "", None
        ),
        "icij sync tasks/s": _check(
            sync_tps, f">= {TARGET_SYNC_TPS:,.0f}", sync_tps >= TARGET_SYNC_TPS
        ),
        "CPU/task icij / baseline async": _check(
            results["icij_async_cpu"].median / results["baseline_async_cpu"].median,
            "(reported; 10.0 = the 10% target)",
            None,
        ),
        "CPU/task icij / baseline sync": _check(
            results["icij_sync_cpu"].median / results["baseline_sync_cpu"].median,
            "(reported)",
            None,
        ),
        "icij p50 / baseline p50": _check(
            p50 / results["baseline_p50"].median, "(reported)", None
        ),
        "icij p50 ms": _check(p50, f"<= {TARGET_P50_MS}", p50 <= TARGET_P50_MS),
        **_printing_ratios(results),
        **_kernel_checks(results),
        **_dask_ratios(results),
    }


def _printing_ratios(results: Results) -> dict[str, dict[str, Any]]:
    out = {}
    for kind in ("async", "sync"):
        if results.figures[f"icij_{kind}_print"].values:
            out[f"{kind}: one print / no output"] = _check(
                results.paired_ratio(f"icij_{kind}_print", f"icij_{kind}"),
                "(reported; median of paired ratios)",
                None,
            )
    return out


def _kernel_checks(results: Results) -> dict[str, dict[str, Any]]:
    if not results.figures["kernel_p50_poll"].values:
        return {}
    added = statistics.median(
        p - n
        for p, n in zip(
            results["kernel_p50_poll"].values,
            results["kernel_p50_nopoll"].values,
            strict=True,
        )
    )
    return {
        "kernel p50: poll - no poll, ms": _check(added, "<= 1.0", added <= 1.0),
        "kernel p50: poll / no poll": _check(
            results.paired_ratio("kernel_p50_poll", "kernel_p50_nopoll"), "", None
        ),
    }


def _dask_ratios(results: Results) -> dict[str, dict[str, Any]]:
    out = {}
    for kind in ("async", "sync"):
        dask = results.figures[f"dask_{kind}"]
        if dask.values:
            ratio = results[f"icij_{kind}"].median / dask.median
            out[f"icij {kind} / Dask {kind}"] = _check(ratio, "(reference)", None)
    return out


def machine() -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "icij_nb": nb.__version__,
    }


def _fmt(value: float, unit: str) -> str:
    if unit == "tasks/s":
        return f"{value:,.0f}"
    return f"{value:.1f}" if unit == "us/task" else f"{value:.3f}"


def report(results: Results, info: dict[str, Any], params: dict[str, Any]) -> str:
    lines = [
        f"icij_nb in-kernel benchmark, {info['date']}",
        f"machine: {info['cpu_count']} CPUs ({info['usable_cpus']} usable), "
        f"{info['implementation']} {info['python']}, {info['platform']}",
        f"tasks per throughput run: {params['tasks']:,}; latency calls: "
        f"{params['latency_calls']:,}; repeats: {params['repeats']}; "
        f"workers: {WORKERS} (latency: 1); store: SQLite file",
        f"manager: {results.manager_per_repeat}",
        "",
        f"{'figure':<34} {'unit':>8} {'median':>10} {'min':>10} {'max':>10}  target",
        "-" * 100,
    ]
    for figure in [f for f in results.figures.values() if f.values]:
        lines.append(
            f"{figure.label:<34} {figure.unit:>8} "
            f"{_fmt(figure.median, figure.unit):>10} "
            f"{_fmt(min(figure.values), figure.unit):>10} "
            f"{_fmt(max(figure.values), figure.unit):>10}  {figure.target}"
        )
    lines += ["", f"{'ratio / check (of medians)':<34} {'value':>10}  target", "-" * 70]
    for name, verdict in verdicts(results).items():
        met = verdict["met"]
        mark = "" if met is None else ("  MET" if met else "  MISSED")
        value = verdict["value"]
        shown = f"{value:,.0f}" if value >= 100 else f"{value:.3f}"
        lines.append(f"{name:<34} {shown:>10}  {verdict['target']}{mark}")
    lines += [
        "",
        "tasks per worker, last repeat: "
        + "; ".join(f"{k} {v}" for k, v in results.per_worker.items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--skip-dask", action="store_true", help="leave the Dask reference out"
    )
    parser.add_argument(
        "--skip-printing", action="store_true", help="leave the printing tasks out"
    )
    parser.add_argument(
        "--skip-kernel", action="store_true", help="leave the in-kernel p50 out"
    )
    options = parser.parse_args(argv)
    if options.tasks < 1 or options.repeats < 1:
        parser.error("--tasks and --repeats must be >= 1")

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    info = machine()
    params = {
        "tasks": options.tasks,
        "repeats": options.repeats,
        "workers": WORKERS,
        "latency_calls": LATENCY_CALLS,
    }
    started = time.perf_counter()
    results = run(
        options.tasks,
        options.repeats,
        log,
        dask=not options.skip_dask,
        printing=not options.skip_printing,
        kernel=not options.skip_kernel,
    )
    log(f"benchmark took {time.perf_counter() - started:.1f}s")
    print(report(results, info, params), flush=True)
    if options.json is not None:
        payload = {
            "machine": info,
            "params": {**params, "manager": results.manager_per_repeat},
            "figures": {k: f.as_dict() for k, f in results.figures.items() if f.values},
            "checks": {k.strip(): v for k, v in verdicts(results).items()},
            "per_worker_last_repeat": results.per_worker,
        }
        options.json.write_text(json.dumps(payload, indent=2) + "\n")
        log(f"results written to {options.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
