"""Side by side on RabbitMQ: icij_nb, the raw limits, Celery 5 and icij-worker.

Run from the repository root, with a RabbitMQ on 127.0.0.1 (AMQP :5672, management
API :15672, guest/guest):

    .venv/bin/python benchmarks/race.py [--tasks 2000] [--repeats 3] [--json out.json]

One repeat runs every system below once, back to back, in a fresh vhost each, with
P = 2 worker processes, a no-op task, durable queues and persistent messages; the
order of the systems rotates from one repeat to the next so that no system always
runs first or last. Each run times a batch of ``--tasks`` tasks (submitted at once,
then every result awaited) and then 200 sequential round trips (50 for
icij-worker), one task at a time:

- raw pipelined: plain aio-pika request/reply as in amqp.py, the repliers with
  prefetch 200 (their callbacks run concurrently, replies and confirms pipelined);
- raw prefetch 1: the raw limit of amqp.py (one request at a time per replier);
- icij_nb c=1 and c=best: ``tm.start_pool("bench", workers=2, processes=True,
  concurrency=C)``, ``tm.gather(tm.map("noop", [{}] * tasks))``, a SQLite store;
  "best" is the documented default for async tasks (:data:`BEST_CONCURRENCY`);
- Celery at-least-once: Celery 5 in its own virtualenv (``scripts/bench_venv.sh
  celery``), ``celery worker -c 2`` (prefork), ``task_acks_late``,
  ``task_reject_on_worker_lost``, publisher confirms (``confirm_publish``),
  persistent task messages and ``result_backend="rpc://"`` with
  ``result_persistent``: results travel as persistent messages on the same
  RabbitMQ, as icij_nb's events do (no second server to compare);
- Celery defaults: the same worker with Celery's defaults (early ack, no publisher
  confirms, non-persistent results), ``rpc://`` only so that results come back;
- icij-worker 0.20.2 and its own ``AMQPTaskManager``, as amqp.py runs them.

Every ratio of the targets (benchmarks/README.md, "race.py") is printed against its
target on medians, with the median of the per-repeat ratios beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import amqp as base
from figures import Figure, percentile

from icij_nb.app import DEFAULT_ASYNC_CONCURRENCY

PROCESSES = 2
PIPELINED_PREFETCH = 200
#: icij_nb's documented default concurrency for async tasks in a process pool
BEST_CONCURRENCY = DEFAULT_ASYNC_CONCURRENCY
CELERY_LATENCY_CALLS = 200
REPO = Path(__file__).resolve().parents[1]
BENCH_VENV_SCRIPT = REPO / "scripts" / "bench_venv.sh"

CELERY_APP_MODULE = "icij_nb_celery_app"
CELERY_APP_SOURCE = """\
\"\"\"The no-op task of benchmarks/race.py, for Celery (written by it).\"\"\"
import os

from celery import Celery

app = Celery("icij_nb_bench", broker=os.environ["BENCH_BROKER_URL"])
app.conf.update(
    result_backend="rpc://",
    task_default_queue="bench",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
if os.environ["BENCH_CELERY_MODE"] == "safe":
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        result_persistent=True,
        task_default_delivery_mode="persistent",
        broker_transport_options={"confirm_publish": True},
    )


@app.task(name="noop")
def noop():
    return 0
"""

CELERY_DRIVER_SOURCE = """\
import json, sys, time
from celery.result import ResultSet
from icij_nb_celery_app import app, noop

config = json.loads(sys.argv[1])
timeout = 120

def batch(n):
    start = time.perf_counter()
    results = ResultSet([noop.delay() for _ in range(n)])
    values = results.join_native(timeout=timeout)
    elapsed = time.perf_counter() - start
    if values != [0] * n:
        raise RuntimeError("celery: wrong results")
    return elapsed

batch(config["warmup"])
cpu = time.process_time()
elapsed = batch(config["tasks"])
cpu = time.process_time() - cpu
samples = []
for _ in range(config["latency"]):
    start = time.perf_counter()
    noop.delay().get(timeout=30)
    samples.append(time.perf_counter() - start)
cpu_us = cpu / config["tasks"] * 1e6
out = {"tps": config["tasks"] / elapsed, "cpu_us": cpu_us, "latency_s": samples}
print(json.dumps(out), flush=True)
"""


def bench_python(name: str) -> str:
    done = subprocess.run(
        ["bash", str(BENCH_VENV_SCRIPT), name],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=900,
        check=False,
    )
    out = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0 or not out:
        err = done.stderr.decode(errors="replace")[-3000:]
        raise RuntimeError(f"{BENCH_VENV_SCRIPT} {name} failed:\n{err}")
    return out.splitlines()[-1]


def celery_run(
    management: base.Management,
    python: str,
    mode: str,
    n_tasks: int,
    latency: int,
    tmp: Path,
) -> dict[str, Any]:
    with base.fresh_vhost(management) as vhost:
        url = base.amqp_url(vhost)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env |= {
            "BENCH_BROKER_URL": url,
            "BENCH_CELERY_MODE": mode,
            "PYTHONPATH": str(tmp),
            "PYTHONUNBUFFERED": "1",
        }
        log_path = tmp / f"celery-{vhost}.log"
        cmd = [python, "-m", "celery", "-A", CELERY_APP_MODULE, "worker"]
        cmd += ["-c", str(PROCESSES), "-P", "prefork", "-Q", "bench", "-l", "warning"]
        cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        with log_path.open("ab") as out:
            pool = base.start_child(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=tmp,
            )
        try:

            def alive() -> None:
                if pool.poll() is not None:
                    msg = f"celery exited ({pool.returncode}):\n{base.tail(log_path)}"
                    raise RuntimeError(msg)

            asyncio.run(base.wait_consumers(url, "bench", 1, alive=alive))
            config = {"tasks": n_tasks, "latency": latency, "warmup": 100}
            with log_path.open("ab") as err:
                driver = base.start_child(
                    [python, str(tmp / "icij_nb_celery_driver.py"), json.dumps(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env=env,
                    cwd=tmp,
                )
            try:
                stdout, _ = driver.communicate(timeout=300)
            finally:
                base.stop_child(driver)
            if driver.returncode != 0 or not stdout.strip():
                msg = f"celery driver failed ({driver.returncode}):\n"
                raise RuntimeError(msg + base.tail(log_path))
            result: dict[str, Any] = json.loads(stdout.decode().splitlines()[-1])
            return result
        finally:
            base.stop_child(pool)


# -- the systems, one run each ---------------------------------------------------------

#: key, label, whether it measures sequential round trips
SYSTEMS = (
    ("raw_pipelined", "raw aio-pika, replier prefetch 200 (pipelined)"),
    ("raw_prefetch1", "raw aio-pika, replier prefetch 1 (amqp.py)"),
    ("nb_c1", "icij_nb, concurrency 1"),
    ("nb_best", f"icij_nb, concurrency {BEST_CONCURRENCY} (default)"),
    ("celery_safe", "Celery 5, at-least-once, -c 2"),
    ("celery_default", "Celery 5 defaults, -c 2"),
    ("icij", "icij-worker 0.20.2 + its task manager"),
)


def runners(
    management: base.Management,
    app: Any,
    pythons: dict[str, str | None],
    params: dict[str, Any],
    tmp: Path,
) -> dict[str, Callable[[], dict[str, Any]]]:
    n, lat = params["tasks"], base.LATENCY_CALLS
    out: dict[str, Callable[[], dict[str, Any]]] = {
        "raw_pipelined": lambda: base.raw_run(
            management, PROCESSES, n, lat, tmp, prefetch=PIPELINED_PREFETCH
        ),
        "raw_prefetch1": lambda: base.raw_run(management, PROCESSES, n, lat, tmp),
        "nb_c1": lambda: base.nb_run(management, app, PROCESSES, n, lat, tmp),
        "nb_best": lambda: base.nb_run(
            management, app, PROCESSES, n, lat, tmp, concurrency=BEST_CONCURRENCY
        ),
    }
    celery = pythons.get("celery")
    if celery is not None:
        out["celery_safe"] = lambda: celery_run(
            management, celery, "safe", n, CELERY_LATENCY_CALLS, tmp
        )
        out["celery_default"] = lambda: celery_run(
            management, celery, "default", n, CELERY_LATENCY_CALLS, tmp
        )
    icij = pythons.get("icij")
    if icij is not None:
        out["icij"] = lambda: _icij(management, icij, params, tmp)
    return out


def _icij(
    management: base.Management, python: str, params: dict[str, Any], tmp: Path
) -> dict[str, Any]:
    result = base.icij_run(
        management,
        python,
        PROCESSES,
        params["icij_tasks"],
        base.ICIJ_LATENCY_CALLS,
        tmp,
    )
    result["cpu_us"] = None  # its driver does not measure it
    return result


def make_figures(keys: list[str]) -> dict[str, Figure]:
    labels = dict(SYSTEMS)
    figures: dict[str, Figure] = {}
    for key in keys:
        figures[f"{key}_tps"] = Figure(labels[key], "tasks/s")
    for key in keys:
        figures[f"{key}_p50"] = Figure(f"{labels[key]}: round trip p50", "ms")
    for key in keys:
        if key != "icij":
            figures[f"{key}_cpu"] = Figure(f"{labels[key]}: client CPU", "us/task")
    return figures


def record(figures: dict[str, Figure], key: str, result: dict[str, Any]) -> None:
    figures[f"{key}_tps"].values.append(result["tps"])
    figures[f"{key}_p50"].values.append(percentile(result["latency_s"], 0.5) * 1e3)
    cpu = result.get("cpu_us", result.get("requester_cpu_us"))
    cpu = result.get("manager_cpu_us", cpu)
    if f"{key}_cpu" in figures and cpu is not None:
        figures[f"{key}_cpu"].values.append(cpu)


# -- targets ---------------------------------------------------------------------------

#: (name, numerator figure, denominator figure, factor, ">=" or "<=")
TARGETS = (
    ("icij_nb best / raw pipelined", "nb_best_tps", "raw_pipelined_tps", 0.8, ">="),
    ("icij_nb best / Celery at-least-once", "nb_best_tps", "celery_safe_tps", 2, ">="),
    ("icij_nb best / Celery defaults", "nb_best_tps", "celery_default_tps", 1.3, ">="),
    ("icij_nb best / icij-worker", "nb_best_tps", "icij_tps", 8, ">="),
    ("icij_nb p50 / Celery a-l-o p50", "nb_c1_p50", "celery_safe_p50", 1, "<="),
    ("icij_nb p50 / raw prefetch-1 p50", "nb_c1_p50", "raw_prefetch1_p50", 1.3, "<="),
    ("icij_nb c1 manager CPU / raw", "nb_c1_cpu", "raw_prefetch1_cpu", 1.5, "<="),
    ("icij_nb best manager CPU / raw", "nb_best_cpu", "raw_pipelined_cpu", 1.5, "<="),
)
REPORTED = (
    ("icij_nb c1 / raw prefetch 1", "nb_c1_tps", "raw_prefetch1_tps"),
    ("raw pipelined / raw prefetch 1", "raw_pipelined_tps", "raw_prefetch1_tps"),
    ("Celery defaults / a-l-o", "celery_default_tps", "celery_safe_tps"),
    ("icij_nb p50 / raw pipelined p50", "nb_c1_p50", "raw_pipelined_p50"),
)


def verdicts(figures: dict[str, Figure]) -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {}
    rows = [(*t, None, None) for t in REPORTED]
    rows = [(n, a, b, f, op) for n, a, b, f, op in TARGETS] + rows
    for name, ours, theirs, factor, op in rows:
        if not (figures.get(ours) and figures.get(theirs)):
            continue
        if not (figures[ours].values and figures[theirs].values):
            continue
        value = figures[ours].median / figures[theirs].median
        pairs = zip(figures[ours].values, figures[theirs].values, strict=False)
        paired = statistics.median(o / t for o, t in pairs)
        met = None
        if factor is not None:
            met = value >= factor if op == ">=" else value <= factor
        target = "(reported)" if factor is None else f"{op} {factor:g}"
        checks[name] = {"value": value, "paired": paired, "target": target, "met": met}
    return checks


def report(
    figures: dict[str, Figure], info: dict[str, Any], params: dict[str, Any]
) -> str:
    lines = [
        f"icij_nb race on RabbitMQ, {info['date']}",
        f"machine: {info['cpu_count']} CPUs, load {info['load_avg']}, Python "
        f"{info['python']}, RabbitMQ {info['rabbitmq']}; P = {PROCESSES} worker "
        f"processes; {params['tasks']:,} tasks per batch (icij-worker "
        f"{params['icij_tasks']:,}); repeats {params['repeats']}, interleaved",
        "",
        f"{'figure':<58} {'unit':>8} {'median':>9} {'min':>9} {'max':>9}",
        "-" * 98,
    ]
    for figure in figures.values():
        if not figure.values:
            continue
        fmt = base._fmt
        lines.append(
            f"{figure.label:<58} {figure.unit:>8} {fmt(figure.median, figure.unit):>9} "
            f"{fmt(min(figure.values), figure.unit):>9} "
            f"{fmt(max(figure.values), figure.unit):>9}"
        )
    lines += [
        "",
        f"{'ratio (of medians)':<40} {'value':>7} {'paired':>7}  target",
        "-" * 72,
    ]
    for name, v in verdicts(figures).items():
        mark = "" if v["met"] is None else ("  MET" if v["met"] else "  MISSED")
        lines.append(
            f"{name:<40} {v['value']:>7.2f} {v['paired']:>7.2f}  {v['target']}{mark}"
        )
    return "\n".join(lines)


def run(params: dict[str, Any]) -> dict[str, Figure]:
    management = base.Management()
    management.overview()
    pythons: dict[str, str | None] = {"celery": None, "icij": None}
    if not params["skip_celery"]:
        base.log("finding Celery's virtualenv (scripts/bench_venv.sh celery)")
        pythons["celery"] = bench_python("celery")
    if not params["skip_icij"]:
        base.log("finding icij-worker's virtualenv (scripts/icij_worker_venv.sh)")
        pythons["icij"] = base.icij_python()
    app = base.make_app()
    cwd = Path.cwd()
    atexit.register(management.delete_all)
    with tempfile.TemporaryDirectory(prefix="icij_nb-race-") as tmp_dir:
        tmp = Path(tmp_dir)
        (tmp / f"{base.ICIJ_APP_MODULE}.py").write_text(base.ICIJ_APP_SOURCE)
        (tmp / "icij_nb_bench_driver.py").write_text(base.ICIJ_DRIVER_SOURCE)
        (tmp / f"{CELERY_APP_MODULE}.py").write_text(CELERY_APP_SOURCE)
        (tmp / "icij_nb_celery_driver.py").write_text(CELERY_DRIVER_SOURCE)
        os.chdir(tmp)
        try:
            jobs = runners(management, app, pythons, params, tmp)
            keys = [k for k, _ in SYSTEMS if k in jobs and k in params["only"]]
            figures = make_figures(keys)
            for index in range(params["repeats"]):
                order = keys[index % len(keys) :] + keys[: index % len(keys)]
                base.log(f"repeat {index + 1}/{params['repeats']}: {', '.join(order)}")
                for key in order:
                    result = jobs[key]()
                    record(figures, key, result)
                    base.log(
                        f"  {key}: {result['tps']:,.0f} tasks/s, p50 "
                        f"{figures[f'{key}_p50'].values[-1]:.2f} ms"
                    )
        finally:
            os.chdir(cwd)
            base._stop_children()
            management.delete_all()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--icij-tasks", type=int, default=None)
    parser.add_argument("--skip-icij", action="store_true")
    parser.add_argument("--skip-celery", action="store_true")
    parser.add_argument(
        "--only", default=",".join(k for k, _ in SYSTEMS), help="systems to run"
    )
    parser.add_argument("--json", type=Path)
    options = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, base._on_sigterm)
    atexit.register(base._stop_children)
    params = {
        "tasks": options.tasks,
        "icij_tasks": options.icij_tasks or options.tasks,
        "repeats": options.repeats,
        "skip_icij": options.skip_icij,
        "skip_celery": options.skip_celery,
        "only": options.only.split(","),
        "processes": PROCESSES,
        "best_concurrency": BEST_CONCURRENCY,
        "celery_result_backend": "rpc://",
    }
    started = time.perf_counter()
    try:
        figures = run(params)
    except KeyboardInterrupt:
        base.log("interrupted: child processes stopped, vhosts deleted")
        return 130
    base.log(f"race took {time.perf_counter() - started:.1f}s")
    info = base.machine(base.Management().overview())
    print(report(figures, info, params), flush=True)
    if options.json is not None:
        payload = {
            "machine": info,
            "params": params,
            "figures": {k: f.as_dict() for k, f in figures.items() if f.values},
            "checks": verdicts(figures),
        }
        options.json.write_text(json.dumps(payload, indent=2) + "\n")
        base.log(f"results written to {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
