"""The task model: Task, TaskState, error records and the events that change a task.

Plain data, no transport: ``brokers/wire.py`` turns these into icij-worker's JSON
messages and back. The state rules are icij-worker's, and the last is icij_nb's own
(see docs/architecture.md):

- precedence, most advanced first:
  DONE > ERROR > CANCELLED > RUNNING > QUEUED > CREATED;
- a ready state (DONE, ERROR, CANCELLED) is only replaced by another ready state, and
  DONE is final; a manager never changes the state of a ready task on an event: it
  only keeps the late result or error record (:meth:`Task.apply`);
- QUEUED replaces RUNNING only when the update is newer (a retry or a requeue);
- a RUNNING task that starts over (progress 0.0) on another worker was redelivered
  because its worker died: it counts one more attempt and keeps a ``WorkerLost``
  error record, and its attempts left do not change (RabbitMQ's delivery limit
  bounds crashes).

Attempts: ``max_attempts`` is the number of times a task may run (1 + its retries).
On the wire it is icij-worker's ``maxRetries``, and ``attempts_left`` is
``retriesLeft``: icij-worker also counts attempts under those names.
"""

from __future__ import annotations

import enum
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (the wire needs aware datetimes)."""
    return datetime.now(UTC)


class TaskState(enum.StrEnum):
    """Where a task is in its life; the values are the wire's upper-case strings."""

    CREATED = "CREATED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    ERROR = "ERROR"
    DONE = "DONE"
    CANCELLED = "CANCELLED"

    @property
    def is_ready(self) -> bool:
        """True for the terminal states DONE, ERROR and CANCELLED."""
        return self in READY_STATES

    @classmethod
    def parse(cls, value: str) -> TaskState:
        """Read a state name, case-insensitively; the error lists the valid ones."""
        try:
            return cls(value.upper())
        except ValueError:
            valid = ", ".join(s.value for s in cls)
            msg = f"unknown task state {value!r}; valid states: {valid}"
            raise ValueError(msg) from None


READY_STATES: Final = frozenset({TaskState.DONE, TaskState.ERROR, TaskState.CANCELLED})

PRECEDENCE: Final[dict[TaskState, int]] = {
    TaskState.CREATED: 0,
    TaskState.QUEUED: 1,
    TaskState.RUNNING: 2,
    TaskState.CANCELLED: 3,
    TaskState.ERROR: 4,
    TaskState.DONE: 5,
}


def resolve_state(
    current: TaskState, incoming: TaskState, *, incoming_is_newer: bool = False
) -> TaskState:
    """The state a task ends in when ``incoming`` competes with ``current``.

    Args:
        current: the state on record.
        incoming: the state an update proposes.
        incoming_is_newer: the update is known to come after the one that set
            ``current`` (a retry or requeue after a RUNNING report).

    Returns:
        The winner under icij-worker's precedence rules.
    """
    if current is TaskState.DONE:
        return current
    if current.is_ready:
        if incoming.is_ready and PRECEDENCE[incoming] > PRECEDENCE[current]:
            return incoming
        return current
    if (
        current is TaskState.RUNNING
        and incoming is TaskState.QUEUED
        and incoming_is_newer
    ):
        return incoming
    if PRECEDENCE[incoming] >= PRECEDENCE[current]:
        return incoming
    return current


@dataclass(frozen=True, slots=True)
class StackFrame:
    """One frame of a stack trace: function name, file and line, outermost first."""

    name: str
    file: str
    lineno: int


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """What went wrong in one failed attempt (RFC 9457-like, as icij-worker has it)."""

    name: str
    message: str
    cause: str | None = None
    stacktrace: tuple[StackFrame, ...] = ()
    created_at: datetime = field(default_factory=utcnow)

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorRecord:
        """Describe ``exc``: class name, message, cause, and its traceback frames."""
        frames = tuple(
            StackFrame(name=f.name, file=f.filename, lineno=f.lineno or 0)
            for f in traceback.extract_tb(exc.__traceback__)
        )
        cause = exc.__cause__ if exc.__cause__ is not None else None
        return cls(
            name=type(exc).__name__,
            message=str(exc),
            cause=str(cause) if cause is not None else None,
            stacktrace=frames,
        )

    def format(self) -> str:
        """The error as a readable traceback-like text."""
        lines = ["Traceback (most recent call last):"]
        lines += [
            f'  File "{f.file}", line {f.lineno}, in {f.name}' for f in self.stacktrace
        ]
        lines.append(f"{self.name}: {self.message}")
        if self.cause:
            lines.append(f"caused by: {self.cause}")
        return "\n".join(lines)


# Events: workers send ManagerEvents; managers broadcast WorkerBroadcasts.
# ``worker_id`` says which worker sent an event; it is not part of icij-worker's
# event bodies (the AMQP codec carries it in a message property).


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """A worker reports progress in [0, 1]; the first one (0.0) means RUNNING."""

    task_id: str
    progress: float
    created_at: datetime = field(default_factory=utcnow)
    worker_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResultEvent:
    """A task returned ``value`` (a JSON-compatible value, None included)."""

    task_id: str
    value: Any
    created_at: datetime = field(default_factory=utcnow)
    worker_id: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """An attempt failed; ``attempts_left`` > 0 means the manager retries it."""

    task_id: str
    error: ErrorRecord
    attempts_left: int
    created_at: datetime = field(default_factory=utcnow)
    worker_id: str | None = None


@dataclass(frozen=True, slots=True)
class CancelledEvent:
    """A worker stopped a task on request; ``requeue`` puts it back in the queue."""

    task_id: str
    requeue: bool
    created_at: datetime = field(default_factory=utcnow)
    worker_id: str | None = None


@dataclass(frozen=True, slots=True)
class CancelEvent:
    """Broadcast to every worker: stop this task if you run it, never start it."""

    task_id: str
    requeue: bool
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class ShutdownEvent:
    """Broadcast to every worker: stop."""

    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One worker's heartbeat: who it is, what it serves, what it runs now.

    Not part of icij-worker's protocol: pools send these on an exchange of their
    own, which icij-worker peers never see.
    """

    worker_id: str
    group: str | None
    app: str
    host: str
    pid: int
    task_id: str | None = None
    stopping: bool = False
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """A manager queued a task (a submit, or an adoption of a task seen queued)."""

    task_id: str


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """A user asked for an ERROR or CANCELLED task to run again, as a new attempt."""

    task_id: str


ManagerEvent = ProgressEvent | ResultEvent | ErrorEvent | CancelledEvent
#: what the ledger applies: what workers report, and what managers decide
LedgerEvent = ManagerEvent | QueuedEvent | RetryEvent
WorkerBroadcast = CancelEvent | ShutdownEvent


class Effect(enum.Enum):
    """What applying an event asks of the manager, besides the new record."""

    NONE = "none"
    CHANGED = "changed"
    REPUBLISH = "republish"
    #: a worker started a task that ended CANCELLED while queued (it never heard
    #: the cancel): the record stays, and the worker must be told to stop
    STOP = "stop"


@dataclass(slots=True)
class Task:
    """The record of one task: what to run, where it is, and how it went.

    Attributes:
        id: unique id, ``<name>-<hex>`` by default.
        name: the registered task name.
        group: the task group (queue) it runs in; None for the ungrouped queue.
        args: keyword arguments, a JSON-compatible dict.
        state: the current :class:`TaskState`.
        progress: 0.0 to 1.0.
        max_attempts: how many times it may run (1 + retries).
        attempts_left: runs still allowed, counting the current one.
        attempts: how many times a worker started it.
        created_at / started_at / completed_at: aware UTC datetimes (or None).
        worker_id: the worker that ran (or runs) it last.
        result: the returned value once DONE (``has_result`` tells None from unset).
        errors: one :class:`ErrorRecord` per failed attempt, oldest first.
    """

    id: str
    name: str
    group: str | None
    args: dict[str, Any]
    state: TaskState = TaskState.CREATED
    progress: float = 0.0
    max_attempts: int = 1
    attempts_left: int = 1
    attempts: int = 0
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    worker_id: str | None = None
    result: Any = None
    has_result: bool = False
    errors: list[ErrorRecord] = field(default_factory=list)

    def snapshot(self) -> Task:
        """A copy that later events do not change (args and result are shared)."""
        return Task(
            id=self.id,
            name=self.name,
            group=self.group,
            args=self.args,
            state=self.state,
            progress=self.progress,
            max_attempts=self.max_attempts,
            attempts_left=self.attempts_left,
            attempts=self.attempts,
            created_at=self.created_at,
            started_at=self.started_at,
            completed_at=self.completed_at,
            worker_id=self.worker_id,
            result=self.result,
            has_result=self.has_result,
            errors=list(self.errors),
        )

    def message(self) -> Task:
        """The copy a broker hands to a worker: what to run, without history."""
        return Task(
            id=self.id,
            name=self.name,
            group=self.group,
            args=self.args,
            state=self.state,
            progress=self.progress,
            max_attempts=self.max_attempts,
            attempts_left=self.attempts_left,
            created_at=self.created_at,
        )

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to completion (or None while not both known)."""
        if self.started_at is None or self.completed_at is None:
            return None
        return (self.completed_at - self.started_at).total_seconds()

    def apply(self, event: LedgerEvent) -> Effect:
        """Apply an event under icij-worker's rules, in place.

        Worker events follow the precedence rules above. Of the managers' own
        decisions, a :class:`QueuedEvent` moves only a CREATED task (a worker may
        have answered already), and a :class:`RetryEvent` starts an ERROR or
        CANCELLED task over (attempts left reset, error history kept).

        Args:
            event: the event to apply; its ``task_id`` must be this task's.

        Returns:
            Whether the record changed, and whether the task must be queued again.
        """
        if self.state.is_ready:
            if isinstance(event, RetryEvent | QueuedEvent):
                return self._apply_decision(event)
            return self._apply_late(event)
        if isinstance(event, ProgressEvent):
            return self._apply_progress(event)
        if isinstance(event, ResultEvent):
            self._ran_unseen(event)
            self.result, self.has_result = event.value, True
            self.state, self.progress = TaskState.DONE, 1.0
            self.completed_at = event.created_at
            self._seen_worker(event.worker_id)
            return Effect.CHANGED
        if isinstance(event, ErrorEvent):
            return self._apply_error(event)
        if isinstance(event, CancelledEvent):
            return self._apply_cancelled(event)
        return self._apply_decision(event)

    def _apply_decision(self, event: QueuedEvent | RetryEvent) -> Effect:
        if isinstance(event, QueuedEvent):
            if self.state is not TaskState.CREATED:
                return Effect.NONE
            self.state = TaskState.QUEUED
            return Effect.CHANGED
        if self.state not in (TaskState.ERROR, TaskState.CANCELLED):
            return Effect.NONE
        self.progress, self.completed_at = 0.0, None
        self.attempts_left = self.max_attempts
        self.state = TaskState.QUEUED
        return Effect.REPUBLISH

    def _apply_late(self, event: ManagerEvent) -> Effect:
        # A ready task keeps its state; a late result or error is still recorded.
        if isinstance(event, ProgressEvent) and self.state is TaskState.CANCELLED:
            return Effect.STOP
        if isinstance(event, ResultEvent) and not self.has_result:
            self.result, self.has_result = event.value, True
            return Effect.CHANGED
        if isinstance(event, ErrorEvent):
            self.errors.append(event.error)
            return Effect.CHANGED
        return Effect.NONE

    def _apply_progress(self, event: ProgressEvent) -> Effect:
        if self.state is not TaskState.RUNNING:
            self.state = TaskState.RUNNING
            self.attempts += 1
            self.started_at = event.created_at
        elif self._restarted_by(event):
            self._record_lost_attempt(event)
        self.progress = event.progress
        self._seen_worker(event.worker_id)
        return Effect.CHANGED

    def _apply_error(self, event: ErrorEvent) -> Effect:
        self._ran_unseen(event)
        self.errors.append(event.error)
        self.attempts_left = min(self.attempts_left, event.attempts_left)
        self._seen_worker(event.worker_id)
        if self.attempts_left > 0:
            self.state, self.progress = TaskState.QUEUED, 0.0
            return Effect.REPUBLISH
        self.state = TaskState.ERROR
        self.completed_at = event.created_at
        return Effect.CHANGED

    def _apply_cancelled(self, event: CancelledEvent) -> Effect:
        self._seen_worker(event.worker_id)
        if event.requeue:
            # The broker gives a requeued delivery back by itself (late ack).
            self.state, self.progress = TaskState.QUEUED, 0.0
            return Effect.CHANGED
        self.state = TaskState.CANCELLED
        self.completed_at = event.created_at
        return Effect.CHANGED

    def _ran_unseen(self, event: ResultEvent | ErrorEvent) -> None:
        # Workers report RUNNING only for tasks still running after a grace period:
        # a worker's outcome on a task never seen RUNNING is an attempt that ran,
        # briefly (the manager's own errors, without a worker, are not attempts).
        if self.state is not TaskState.RUNNING and event.worker_id is not None:
            self.attempts += 1
            self.started_at = event.created_at

    def _restarted_by(self, event: ProgressEvent) -> bool:
        # A RUNNING task starting over (0.0) on another worker: the broker gave it
        # again because the first worker died holding it (a redelivery).
        return (
            event.progress == 0.0
            and event.worker_id is not None
            and self.worker_id is not None
            and event.worker_id != self.worker_id
        )

    def _record_lost_attempt(self, event: ProgressEvent) -> None:
        lost = ErrorRecord(
            name="WorkerLost",
            message=(
                f"worker {self.worker_id} stopped while running attempt "
                f"{self.attempts} (killed or crashed, or its connection was lost); "
                f"the broker gave the task to worker {event.worker_id}"
            ),
            created_at=event.created_at,
        )
        self.errors.append(lost)
        self.attempts += 1
        self.started_at = event.created_at

    def _seen_worker(self, worker_id: str | None) -> None:
        if worker_id is not None:
            self.worker_id = worker_id
