"""The icij_nb app of the interop tests: ``icij_app.py``'s task names, on our side.

It runs in our virtualenv and imports ``icij_nb``, never ``icij_worker``. Two uses:

- ``test_interop_manager.py``: our manager submits these names to a real icij-worker
  pool, which runs ``icij_app.py``'s functions; ours are never called there, they
  only register the names, the group and the retry options.
- ``test_interop_worker.py``: ``icij-nb workers start tests/interop/nb_app.py:app``
  serves them to icij's own task manager; then these functions run, and behave as
  ``icij_app.py``'s do (same arguments, results and failures).

Retry options are given in icij_nb's terms: ``max_retries`` counts retries after the
first attempt, and our manager sends ``maxRetries = max_retries + 1`` on the wire.
``max_retries=2`` here is icij's ``max_retries=3``: three attempts in all.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import icij_nb as nb

app = nb.App("interop-nb")

GROUP = nb.TaskGroup("grp")


class Flaky(Exception):
    """A retryable failure (listed in ``recover_from``)."""


def _attempts_file(key: str) -> Path:
    # As icij_app.py: attempts are counted on disk, per key.
    state_dir = os.environ.get("ICIJ_NB_INTEROP_STATE_DIR") or tempfile.gettempdir()
    return Path(state_dir) / f"icij_nb_interop_flaky_{key}"


@app.task(max_retries=0)
def hello(greeted: str) -> str:
    return f"hello {greeted}"


@app.task(max_retries=2)
async def with_progress(
    n_steps: int, progress: Callable[[float], Awaitable[None]]
) -> int:
    for i in range(1, n_steps + 1):
        await progress(i / n_steps)
    return n_steps


@app.task(recover_from=(Flaky,), max_retries=2)
def flaky(fail_times: int, key: str) -> str:
    path = _attempts_file(key)
    with path.open("a") as f:
        f.write("attempt\n")
    attempt = len(path.read_text().splitlines())
    if attempt <= fail_times:
        raise Flaky(f"attempt {attempt} failed") from KeyError("root cause")
    return f"succeeded after {attempt - 1} failures"


@app.task(max_retries=2)
async def sleepy(duration: float) -> float:
    await asyncio.sleep(duration)
    return duration


@app.task(max_retries=2)
def returns_none() -> dict[str, None]:
    return {"none": None}


@app.task(max_retries=2)
def returns_nothing() -> None:
    """Not in icij_app.py: a None result, which icij's own worker cannot send."""


@app.task(max_retries=2, group=GROUP)
def grouped_hello(greeted: str) -> str:
    return f"hello {greeted}"
