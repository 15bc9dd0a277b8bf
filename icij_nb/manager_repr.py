"""The reprs of a task manager: one line of text, and a small HTML table.

Short, from live state, no I/O and no secret (the store's label and the engine's kind
only), as the style asks of every repr shown in a notebook.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Protocol

from icij_nb.model import TaskState


class _Shown(Protocol):
    """What a repr reads of a manager (its public names)."""

    @property
    def closed(self) -> bool: ...

    @property
    def counts(self) -> dict[TaskState, int]: ...

    @property
    def pools(self) -> Sequence[object]: ...

    @property
    def waiting_for_broker(self) -> int: ...


def manager_text(tm: _Shown, *, app: str, engine: str, store: str, tasks: int) -> str:
    """``<TaskManager 'app' broker=memory store=memory pools=1 tasks=3 done=3>``."""
    counts = " ".join(
        f"{s.value.lower()}={n}" for s, n in sorted(tm.counts.items()) if n
    )
    if tm.waiting_for_broker:
        counts += f" waiting_for_broker={tm.waiting_for_broker}"
    state = " closed" if tm.closed else ""
    return (
        f"<TaskManager {app!r}{state} broker={engine} store={store} "
        f"pools={len(tm.pools)} tasks={tasks}{' ' + counts if counts else ''}>"
    )


def manager_html(tm: _Shown, *, app: str, engine: str, store: str) -> str:
    """The counts per state in a one-row table, and the pools."""
    cells = "".join(
        f"<td>{s.value}: <b>{tm.counts.get(s, 0)}</b></td>" for s in TaskState
    )
    pools = ", ".join(repr(p) for p in tm.pools) or "none"
    waiting = (
        f"<div>{tm.waiting_for_broker} waiting for the broker (outbox)</div>"
        if tm.waiting_for_broker
        else ""
    )
    return (
        f"<div><b>TaskManager</b> <code>{app}</code> ({engine} broker, store "
        f"{store})<table><tr>{cells}</tr></table>{waiting}<small>pools: "
        f"{html.escape(pools)}</small></div>"
    )
