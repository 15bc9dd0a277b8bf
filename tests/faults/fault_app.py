"""The app of the fault suite, importable by the test process, a kernel and the CLI.

Every task notes each execution in a log file (``log``, one line per start and end,
written with ``O_APPEND`` so concurrent processes never mix lines), so a test counts
how often each task really ran, in which process, whatever the store says.

The CLI names it ``tests/faults/fault_app.py:app``; a kernel adds ``tests/faults`` to
``sys.path`` and imports it; forked worker processes inherit it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import icij_nb as nb

app = nb.App("faults", groups=(nb.TaskGroup("cpu"),))

#: the longest a held task waits for its release file before failing
HOLD_LIMIT_S = 120.0


def note(log: str, what: str, key: object) -> None:
    """Append ``<what> <key> <pid>`` to ``log`` (nothing when ``log`` is empty)."""
    if not log:
        return
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{what} {key} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


@app.task(group="cpu")
def square(x: int, log: str = "", delay_s: float = 0.0) -> int:
    note(log, "start", x)
    if delay_s:
        time.sleep(delay_s)
    note(log, "end", x)
    return x * x


@app.task(group="cpu")
def hold(x: int, log: str, release: str) -> int:
    """Run until the file ``release`` exists, then return ``x``."""
    note(log, "start", x)
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} never appeared")
        time.sleep(0.01)
    note(log, "end", x)
    return x


@app.task(group="cpu")
def poison(log: str) -> None:
    """Kill the process that runs it, every time (a poison pill)."""
    note(log, "start", "poison")
    os._exit(3)


@app.task(group="cpu")
def echo(value: Any) -> Any:
    return value


@app.task(group="cpu", max_retries=1, recover_from=(ValueError,))
def fail(why: str) -> None:
    raise ValueError(why)
