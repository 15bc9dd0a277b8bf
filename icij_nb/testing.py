"""Helpers for testing code built on icij_nb (ours and yours).

Tests must not sleep for a fixed time to let tasks progress: they wait for the
condition they need, with a deadline, so that a slow machine only makes them slower
and a bug makes them fail with a message instead of hanging.

- :func:`wait_until` polls a condition from a blocking test (or a notebook cell);
- :func:`wait_until_async` is its twin for ``async def`` tests and top-level ``await``;
- :func:`process_alive`, :func:`parent_of`, :func:`children_of` and
  :func:`wait_processes_gone` read the process table (Linux ``/proc``), to check
  that worker processes end with their pool or kernel (no orphans).

Both return the condition's first truthy value and raise AssertionError, naming what
they waited for, when the deadline passes.

Example:
    from icij_nb.testing import wait_until

    h = tm.submit("ocr", {"path": "a.pdf"})
    wait_until(lambda: h.state is nb.TaskState.RUNNING, what="ocr to start")
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

__all__ = [
    "children_of",
    "parent_of",
    "process_alive",
    "wait_processes_gone",
    "wait_until",
    "wait_until_async",
]


def wait_until(
    cond: Callable[[], T],
    *,
    timeout_s: float = 5.0,
    interval_s: float = 0.01,
    what: str = "condition",
) -> T:
    """Call ``cond()`` until it returns a truthy value, and return that value.

    Args:
        cond: a function of no arguments; its exceptions propagate at once.
        timeout_s: how long to keep trying.
        interval_s: the pause between two calls.
        what: what is awaited, for the failure message (``"task 3 to start"``).

    Returns:
        The first truthy value ``cond()`` returned.

    Raises:
        AssertionError: ``timeout_s`` passed first; the message names ``what`` and
            the last value seen.
    """
    _check_times(timeout_s, interval_s)
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(_gave_up(what, timeout_s, value))
        time.sleep(interval_s)


async def wait_until_async(
    cond: Callable[[], T | Awaitable[T]],
    *,
    timeout_s: float = 5.0,
    interval_s: float = 0.01,
    what: str = "condition",
) -> T:
    """Awaitable twin of :func:`wait_until`; ``cond`` may also be an async function.

    Example:
        await wait_until_async(lambda: h.done(), timeout_s=30, what="ocr to finish")
    """
    _check_times(timeout_s, interval_s)
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(_gave_up(what, timeout_s, value))
        await asyncio.sleep(interval_s)


def _check_times(timeout_s: float, interval_s: float) -> None:
    if not timeout_s > 0 or not interval_s > 0:
        msg = (
            f"timeout_s and interval_s must be positive, got timeout_s={timeout_s!r} "
            f"and interval_s={interval_s!r}"
        )
        raise ValueError(msg)


def _gave_up(what: str, timeout_s: float, value: object) -> str:
    shown = repr(value)
    if len(shown) > 200:
        shown = shown[:197] + "..."
    return f"gave up after {timeout_s:g}s waiting for {what}; last value: {shown}"


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return text.rsplit(")", 1)[1].split()


def process_alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie counts as gone)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def parent_of(pid: int) -> int | None:
    """The parent process id of ``pid``, or None when it is gone."""
    stat = _stat(pid)
    return int(stat[1]) if stat is not None else None


def children_of(pid: int) -> set[int]:
    """The live processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and int(stat[1]) == pid and stat[0] not in "ZX":
                found.add(int(entry.name))
    return found


def wait_processes_gone(pids: Iterable[int], *, timeout_s: float = 30.0) -> None:
    """Wait until none of ``pids`` runs; AssertionError naming them at the deadline."""
    waited = list(pids)
    wait_until(
        lambda: not [p for p in waited if process_alive(p)],
        timeout_s=timeout_s,
        interval_s=0.05,
        what=f"processes {waited} to end",
    )
