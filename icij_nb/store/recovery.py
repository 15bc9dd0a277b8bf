"""Recovery after a dead kernel: which managers are gone, and what their tasks become.

A manager registers itself in its store and beats a heartbeat there. When a manager
opens the store, :meth:`Store.recover <icij_nb.store.base.Store.recover>` looks for
managers that are gone (:func:`gone_managers`) and claims their unfinished tasks
(CREATED, QUEUED or RUNNING): it makes the opening manager their holder, and
nothing else. It never changes a task's state; it returns one :class:`Orphan` per
claimed task, with the decision this module takes (:func:`decide`):

- :class:`Adopt`: the broker keeps tasks (RabbitMQ), so their queue outlived their
  manager; the new manager tracks them as they are and applies their events;
- :class:`Lost`: the queue was in the dead process (memory broker); the task ends
  in ERROR, retryable, with a ``TaskLost`` record saying what happened.

The manager applies a decision through its one write path for task state:
``orphan.event()`` is the local event to apply (an :class:`~icij_nb.model.ErrorEvent`
for Lost, None for Adopt), and ``Task.apply`` of it gives ERROR with no attempts left.

Everything here is pure (no database), so every store kind shares these rules.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from icij_nb.model import ErrorEvent, ErrorRecord, Task, TaskState, utcnow

#: how often a manager writes its heartbeat in its store, even with nothing to write
MANAGER_HEARTBEAT_S: Final = 10.0
#: a manager of another machine silent for this long is taken for dead
STALE_AFTER: Final = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class ManagerRow:
    """A manager as its store registers it."""

    id: str
    host: str
    pid: int
    heartbeat_at: datetime


def pid_alive(pid: int) -> bool:
    """True while a process with that id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_gone(manager: ManagerRow, *, host: str, now: datetime) -> bool:
    """Whether a registered manager is dead.

    On this machine the process table is the truth: a manager busy for minutes
    without writing is alive, a killed kernel is not. A manager of another machine
    is judged by its heartbeat (:data:`STALE_AFTER`).
    """
    if manager.host == host:
        return not pid_alive(manager.pid)
    return now - manager.heartbeat_at > STALE_AFTER


def gone_managers(
    registered: Iterable[ManagerRow],
    unregistered: Iterable[str],
    *,
    me: str | None,
    host: str,
    now: datetime,
) -> set[str]:
    """The ids of the managers that are gone, never ``me``.

    Args:
        registered: every manager the store registers.
        unregistered: holders of unfinished tasks with no registration left (a
            manager closed without cleanup): gone by definition.
        me: the manager asking.
        host: this machine's name.
        now: the current time.
    """
    gone = {m.id for m in registered if m.id != me and is_gone(m, host=host, now=now)}
    gone.update(m for m in unregistered if m != me)
    return gone


@dataclass(frozen=True, slots=True)
class Adopt:
    """Keep the task as it is: the broker still holds its message."""

    #: the manager that held it (None: no manager was recorded)
    gone_manager: str | None


@dataclass(frozen=True, slots=True)
class Lost:
    """End the task in ERROR: its queue died with the manager that held it."""

    #: the manager that held it (None: no manager was recorded)
    gone_manager: str | None
    #: the state it was in when its manager went
    gone_state: TaskState


Decision = Adopt | Lost


def decide(task: Task, gone_manager: str | None, *, durable_broker: bool) -> Decision:
    """What becomes of an unfinished task of a gone manager."""
    if durable_broker:
        return Adopt(gone_manager)
    return Lost(gone_manager, task.state)


def lost_event(
    task: Task, *, gone_state: TaskState, at: datetime | None = None
) -> ErrorEvent:
    """The event that settles a lost task: a ``TaskLost`` error, no attempts left.

    ``task.apply(lost_event(task, gone_state=task.state))`` puts an unfinished task
    in ERROR, completed ``at`` (default: now), with the record appended to its
    errors and no attempts left, so ``tm.retry`` can run it again.
    """
    now = at if at is not None else utcnow()
    record = ErrorRecord(
        name="TaskLost",
        message=(
            f"the kernel that held this task stopped while it was {gone_state.value}; "
            f"its in-process queue went with it. Retry it with tm.retry({task.id!r})."
        ),
        created_at=now,
    )
    return ErrorEvent(task.id, record, attempts_left=0, created_at=now)


@dataclass(frozen=True, slots=True)
class Orphan:
    """An unfinished task of a gone manager, claimed by this one, and its decision.

    ``task`` is the record as stored: recovery did not change it.
    """

    task: Task
    decision: Decision

    def event(self, *, at: datetime | None = None) -> ErrorEvent | None:
        """The local event that applies the decision, or None when none is needed."""
        if isinstance(self.decision, Lost):
            return lost_event(self.task, gone_state=self.decision.gone_state, at=at)
        return None
