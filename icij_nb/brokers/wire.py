"""icij-worker's JSON messages: model objects to bodies (bytes) and back.

Pure Python (``json`` only): the ``brokers/amqp*.py`` modules move the bytes, this
module decides what they say. The message shapes are icij-worker's (docs/protocol.md
§2):

- every body is a UTF-8 JSON object tagged with ``"@type"`` (``Task``,
  ``ProgressEvent``, ``ResultEvent``, ``ErrorEvent``, ``CancelledEvent``,
  ``CancelEvent``, ``ShutdownEvent``); keys are lowerCamelCase, nulls are left out,
  ``@type`` comes last and separators are compact, as icij-worker writes them;
- datetimes are aware UTC ISO-8601 strings as ``datetime.isoformat()`` prints them.

Encoding writes exactly what icij-worker writes, plus what its own peers need to stay
alive: ``maxRetries`` and ``retriesLeft`` in every Task (a task without them cannot
be retried, and an error for it crashes icij's manager), ``retriesLeft`` in every
ErrorEvent, and ``value`` in every result, even when it is None
(docs/protocol.md §6).

Decoding is lenient where icij-worker is strict and harmless to be lenient (either key
casing, unknown keys ignored, ``args`` as null or as a JSON string, any datetime form,
lower-case states) and strict where a wrong guess would corrupt a task (types of the
fields we use, progress in [0, 1], the ``@type`` tag). Anything that is not a valid
message raises :class:`~icij_nb.errors.WireError`, never another exception: a broker
can dead-letter it and go on. Nothing is ever unpickled or evaluated.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Final

from icij_nb.brokers.jsonbody import (
    MAX_BODY_BYTES,
    MAX_VALUE_DEPTH,
    TYPE_KEY,
    Body,
    Fields,
    clip,
    format_datetime,
    load_object,
    message_type,
    parse_datetime,
    parse_json,
    to_snake_case,
    too_deep,
)
from icij_nb.errors import WireError
from icij_nb.jsonvalues import json_problem
from icij_nb.model import (
    CancelEvent,
    CancelledEvent,
    ErrorEvent,
    ErrorRecord,
    ManagerEvent,
    ProgressEvent,
    ResultEvent,
    ShutdownEvent,
    StackFrame,
    Task,
    TaskState,
    WorkerBroadcast,
    WorkerStatus,
)

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_VALUE_DEPTH",
    "TYPE_KEY",
    "Body",
    "decode_broadcast",
    "decode_event",
    "decode_heartbeat",
    "decode_task",
    "encode_broadcast",
    "encode_event",
    "encode_heartbeat",
    "encode_task",
    "format_datetime",
    "parse_datetime",
    "to_snake_case",
]

TASK_TYPE: Final = "Task"
EVENT_TYPES: Final = ("ProgressEvent", "ResultEvent", "ErrorEvent", "CancelledEvent")
BROADCAST_TYPES: Final = ("CancelEvent", "ShutdownEvent")
_UNKNOWN_FRAME = "<unknown>"

# -- encoding -------------------------------------------------------------------


def encode_task(task: Task) -> bytes:
    """The Task message for ``task`` (docs/protocol.md §2.4).

    ``state`` is ``task.state`` (CREATED on a first enqueue, QUEUED on a republish);
    ``progress`` is sent only with QUEUED, as icij's manager does; ``maxRetries`` and
    ``retriesLeft`` are always sent; the group and ``completedAt`` never are.

    Raises:
        WireError: the args cannot travel as JSON, or the body would be too large.
    """
    args: object = task.args  # typed as a dict, but it comes from users
    if not isinstance(args, dict):
        msg = f"task {task.id!r}: args must be a dict, got {type(args).__name__}"
        raise WireError(msg)
    _check_json(args, f"task {task.id!r}", "args")
    state = TaskState(task.state)
    message: dict[str, Any] = {
        "id": task.id,
        "name": task.name,
        "args": task.args,
        "state": state.value,
    }
    if state is TaskState.QUEUED:
        message["progress"] = _progress_out(task.progress, f"task {task.id!r}")
    message["createdAt"] = format_datetime(task.created_at)
    message["retriesLeft"] = task.attempts_left
    message["maxRetries"] = task.max_attempts
    message[TYPE_KEY] = TASK_TYPE
    return _dumps(message, f"task {task.id!r}")


def encode_event(event: ManagerEvent) -> bytes:
    """The message for a worker event (docs/protocol.md §2.5-§2.8).

    ``worker_id`` is not part of the body, and ``maxRetries`` never is (it crashes
    icij's manager). A ResultEvent always carries ``value``, an ErrorEvent always
    carries ``retriesLeft``.

    Raises:
        WireError: the event holds a value JSON cannot carry, or is not an event.
    """
    encoder = _EVENT_ENCODERS.get(type(event))
    if encoder is None:
        msg = f"not a manager event: {type(event).__name__}"
        raise WireError(msg)
    message = _event_head(event.task_id, event.created_at)
    message.update(encoder(event))
    message[TYPE_KEY] = type(event).__name__
    return _dumps(message, f"{type(event).__name__} of task {event.task_id!r}")


def encode_broadcast(event: WorkerBroadcast) -> bytes:
    """The message for a cancel or shutdown broadcast (docs/protocol.md §2.9-§2.10)."""
    kind: object = event  # typed as a broadcast, but checked: anything may come in
    if isinstance(kind, CancelEvent):
        message = _event_head(kind.task_id, kind.created_at)
        message["requeue"] = bool(kind.requeue)
    elif isinstance(kind, ShutdownEvent):
        message = {"createdAt": format_datetime(kind.created_at)}
    else:
        msg = f"not a worker broadcast: {type(event).__name__}"
        raise WireError(msg)
    message[TYPE_KEY] = type(event).__name__
    return _dumps(message, type(event).__name__)


def _event_head(task_id: str, created_at: datetime) -> dict[str, Any]:
    return {"taskId": task_id, "createdAt": format_datetime(created_at)}


def _progress_fields(event: ProgressEvent) -> dict[str, Any]:
    return {"progress": _progress_out(event.progress, f"task {event.task_id!r}")}


def _result_fields(event: ResultEvent) -> dict[str, Any]:
    _check_json(event.value, f"result of task {event.task_id!r}", "value")
    return {"result": {"value": event.value, TYPE_KEY: "TaskResult"}}


def _error_fields(event: ErrorEvent) -> dict[str, Any]:
    record = event.error
    error: dict[str, Any] = {"name": record.name, "message": record.message}
    if record.cause is not None:
        error["cause"] = record.cause
    error["stacktrace"] = [
        {"name": f.name, "file": f.file, "lineno": f.lineno} for f in record.stacktrace
    ]
    error[TYPE_KEY] = "TaskError"
    return {"retriesLeft": event.attempts_left, "error": error}


def _cancelled_fields(event: CancelledEvent) -> dict[str, Any]:
    return {"requeue": bool(event.requeue)}


_EVENT_ENCODERS: Final[dict[type, Callable[[Any], dict[str, Any]]]] = {
    ProgressEvent: _progress_fields,
    ResultEvent: _result_fields,
    ErrorEvent: _error_fields,
    CancelledEvent: _cancelled_fields,
}


def _progress_out(progress: float, where: str) -> float:
    value = float(progress)
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        msg = f"{where}: progress must be within [0, 1], got {progress!r}"
        raise WireError(msg)
    return value


def _check_json(value: Any, where: str, name: str) -> None:
    problem = json_problem(value, name)
    if problem:
        msg = f"{where} cannot be sent: {problem}"
        raise WireError(msg)


def _dumps(message: dict[str, Any], where: str) -> bytes:
    try:
        text = json.dumps(
            message, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        body = text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        # UnicodeEncodeError (a lone surrogate in a string) is a ValueError.
        msg = f"{where} cannot be encoded as JSON: {clip(str(exc))}"
        raise WireError(msg) from exc
    if len(body) > MAX_BODY_BYTES:
        msg = (
            f"{where} is {len(body)} bytes as JSON, over the {MAX_BODY_BYTES}-byte "
            "limit; pass a path or an id instead of the data."
        )
        raise WireError(msg)
    return body


# -- decoding: messages ---------------------------------------------------------


def decode_task(body: Body) -> Task:
    """Read a Task message; the returned task has ``group=None``.

    The group is not on the wire: the caller sets it from the queue. Lenient as
    docs/protocol.md §2.12 says: either key casing, unknown keys ignored, ``args`` null
    or a JSON string, any datetime form, a state in any case (CREATED when absent).
    Without ``maxRetries`` the task may run once (or ``retriesLeft`` times), without
    ``retriesLeft`` it has all its attempts left.

    Raises:
        WireError: the body is not a valid Task message.
    """
    fields = load_object(body, TASK_TYPE)
    _, fields = message_type(fields, (TASK_TYPE,))
    max_attempts, attempts_left = _attempts(fields)
    progress = fields.fraction("progress")
    return Task(
        id=_identifier(fields, "id"),
        name=_identifier(fields, "name"),
        group=None,
        args=_task_args(fields),
        state=_task_state(fields),
        progress=0.0 if progress is None else progress,
        max_attempts=max_attempts,
        attempts_left=attempts_left,
        created_at=fields.moment("createdAt"),
        completed_at=fields.optional_moment("completedAt"),
    )


def decode_event(body: Body) -> ManagerEvent:
    """Read a worker event; ``worker_id`` is None (it is not in the body).

    An ErrorEvent without ``retriesLeft`` has no attempts left: icij-worker's model
    would default it to 3, and a manager would then retry the task forever. A
    ResultEvent whose result has no ``value`` (icij-worker's way to send None,
    docs/protocol.md §6 #1) has the value None.

    Raises:
        WireError: the body is not a valid worker event.
    """
    fields = load_object(body, "manager event")
    tag, fields = message_type(fields, EVENT_TYPES)
    task_id = _identifier(fields, "taskId")
    created_at = fields.moment("createdAt")
    if tag == "ProgressEvent":
        progress = fields.fraction("progress")
        if progress is None:
            fields.missing("progress", "a number within [0, 1]")
        return ProgressEvent(task_id, progress, created_at)
    if tag == "ResultEvent":
        value = fields.child("result").json_value("value")
        return ResultEvent(task_id, value, created_at)
    if tag == "ErrorEvent":
        error = _error_record(fields.child("error"), created_at)
        attempts_left = fields.count("retriesLeft")
        return ErrorEvent(task_id, error, attempts_left or 0, created_at)
    return CancelledEvent(task_id, fields.flag("requeue"), created_at)


def decode_broadcast(body: Body) -> WorkerBroadcast:
    """Read a cancel or shutdown broadcast.

    Raises:
        WireError: the body is not a valid broadcast.
    """
    fields = load_object(body, "worker broadcast")
    tag, fields = message_type(fields, BROADCAST_TYPES)
    if tag == "ShutdownEvent":
        return ShutdownEvent(fields.moment("createdAt"))
    task_id = _identifier(fields, "taskId")
    return CancelEvent(task_id, fields.flag("requeue"), fields.moment("createdAt"))


def _identifier(fields: Fields, key: str) -> str:
    value = fields.text(key)
    if not value:
        fields.fail(key, "a non-empty string", value)
    return value


def _task_state(fields: Fields) -> TaskState:
    value = fields.optional_text("state")
    if value is None:
        return TaskState.CREATED
    try:
        return TaskState.parse(value)
    except ValueError:
        valid = ", ".join(s.value for s in TaskState)
        fields.fail("state", f"one of {valid}", value)


def _task_args(fields: Fields) -> dict[str, Any]:
    value = fields.json_value("args")
    if value is None:
        return {}
    if isinstance(value, str):
        # icij accepts args as a JSON string holding the object.
        try:
            value = parse_json(value)
        except (ValueError, RecursionError):
            fields.fail("args", "an object or a JSON string holding one", value)
        if too_deep(value, MAX_VALUE_DEPTH):
            fields.fail("args", f"nested at most {MAX_VALUE_DEPTH} levels", value)
    if not isinstance(value, dict):
        fields.fail("args", "an object or a JSON string holding one", value)
    return value


def _attempts(fields: Fields) -> tuple[int, int]:
    """(max_attempts, attempts_left) from ``maxRetries`` and ``retriesLeft``."""
    max_retries = fields.count("maxRetries")
    retries_left = fields.count("retriesLeft")
    if max_retries is None:
        # icij runs a task without maxRetries once: a failure is final.
        max_retries = 1 if retries_left is None else max(retries_left, 1)
    return max_retries, max_retries if retries_left is None else retries_left


def _error_record(fields: Fields, created_at: datetime) -> ErrorRecord:
    frames = fields.raw("stacktrace")
    if frames is None:
        frames = []
    if not isinstance(frames, list):
        fields.fail("stacktrace", "an array of frames", frames)
    return ErrorRecord(
        name=fields.text("name"),
        message=fields.text("message"),
        cause=fields.optional_text("cause"),
        stacktrace=tuple(_frame(fields, i, f) for i, f in enumerate(frames)),
        created_at=created_at,
    )


def _frame(fields: Fields, index: int, frame: Any) -> StackFrame:
    key = f"stacktrace[{index}]"
    if not isinstance(frame, dict):
        fields.fail(key, "an object {name, file, lineno}", frame)
    # A frame's details must not cost the whole error: missing ones are filled in.
    item = fields.nested(key, frame)
    return StackFrame(
        name=item.optional_text("name", _UNKNOWN_FRAME) or _UNKNOWN_FRAME,
        file=item.optional_text("file", _UNKNOWN_FRAME) or _UNKNOWN_FRAME,
        lineno=item.count("lineno") or 0,
    )


# -- icij_nb's own messages -------------------------------------------------------
# Worker heartbeats travel on an exchange of icij_nb's own: icij-worker peers never
# see them, so the icij protocol above stays untouched.

HEARTBEAT_TYPE: Final = "WorkerHeartbeat"


def encode_heartbeat(statuses: Iterable[WorkerStatus]) -> bytes:
    """A ``WorkerHeartbeat`` body listing the workers of one pool."""
    workers = []
    for status in statuses:
        entry: dict[str, Any] = {
            "workerId": status.worker_id,
            "app": status.app,
            "host": status.host,
            "pid": status.pid,
            "createdAt": format_datetime(status.created_at),
            "stopping": status.stopping,
        }
        if status.group is not None:
            entry["group"] = status.group
        if status.task_id is not None:
            entry["taskId"] = status.task_id
        workers.append(entry)
    return _dumps({"workers": workers, TYPE_KEY: HEARTBEAT_TYPE}, "heartbeat")


def decode_heartbeat(body: Body) -> list[WorkerStatus]:
    """The worker statuses of a ``WorkerHeartbeat`` body, or WireError."""
    _, fields = message_type(load_object(body, "heartbeat"), (HEARTBEAT_TYPE,))
    workers = fields.required("workers", "a list")
    if not isinstance(workers, list):
        fields.fail("workers", "a list", workers)
    statuses = []
    for index, item in enumerate(workers):
        if not isinstance(item, dict):
            fields.fail(f"workers[{index}]", "an object", item)
        entry = fields.nested(f"workers[{index}]", item)
        statuses.append(
            WorkerStatus(
                worker_id=entry.text("workerId"),
                group=entry.optional_text("group"),
                app=entry.text("app"),
                host=entry.text("host"),
                pid=entry.count("pid") or 0,
                task_id=entry.optional_text("taskId"),
                stopping=bool(entry.raw("stopping")),
                created_at=entry.moment("createdAt"),
            )
        )
    return statuses
