"""The icij-worker app that the real icij peers run in the interop tests.

It runs in the icij-worker virtualenv (``scripts/icij_worker_venv.sh``), never in
ours: it imports ``icij_worker`` and not ``icij_nb``. Pools load it as
``icij_app.app`` with this directory on ``PYTHONPATH`` (see ``peers.py``). Our own
interop apps register the same names and groups, so that either side can drive the
other (docs/protocol.md §5.3).

icij-worker semantics to keep in mind (docs/protocol.md §3.3, §5.3):

- ``@app.task(...)`` (called) defaults ``max_retries`` to 3, and icij counts
  *attempts*: ``max_retries=3`` means three runs at most, so ``flaky`` with
  ``fail_times=2`` ends DONE and with ``fail_times=3`` ends ERROR.
- A bare ``@app.task`` sends no ``maxRetries``; an error in such a task kills the
  icij task manager (docs/protocol.md §6 #2). ``hello`` is bare (it never fails);
  ``bare_fatal`` is there to reproduce that defect on purpose.
- A ``None`` result kills the icij task manager (docs/protocol.md §6 #1), hence
  ``returns_none`` returns ``{"none": None}``.
"""

import asyncio
import os
import tempfile
from pathlib import Path

from icij_worker import AsyncApp, TaskGroup

app = AsyncApp("interop")

GROUP = TaskGroup(name="grp")


class Flaky(Exception):
    """A retryable failure (listed in ``recover_from``)."""


def _attempts_file(key: str) -> Path:
    # Retries may run in another worker process: count attempts on disk.
    state_dir = os.environ.get("ICIJ_NB_INTEROP_STATE_DIR") or tempfile.gettempdir()
    return Path(state_dir) / f"icij_nb_interop_flaky_{key}"


@app.task
def hello(greeted: str) -> str:
    return f"hello {greeted}"


@app.task(max_retries=3)
async def with_progress(n_steps: int, progress) -> int:
    for i in range(1, n_steps + 1):
        await progress(i / n_steps)
    return n_steps


@app.task(recover_from=(Flaky,), max_retries=3)
def flaky(fail_times: int, key: str) -> str:
    path = _attempts_file(key)
    with path.open("a") as f:
        f.write("attempt\n")
    attempt = len(path.read_text().splitlines())
    if attempt <= fail_times:
        raise Flaky(f"attempt {attempt} failed") from KeyError("root cause")
    return f"succeeded after {attempt - 1} failures"


@app.task(max_retries=3)
def fatal() -> None:
    raise ValueError("this task always fails")


@app.task
def bare_fatal() -> None:
    raise ValueError("this bare task always fails")


@app.task(max_retries=3)
async def sleepy(duration: float) -> float:
    await asyncio.sleep(duration)
    return duration


@app.task(max_retries=3)
def returns_none() -> dict[str, None]:
    return {"none": None}


@app.task(max_retries=3, group=GROUP)
def grouped_hello(greeted: str) -> str:
    return f"hello {greeted}"
