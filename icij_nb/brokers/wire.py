"""icij-worker's JSON messages: model objects to bodies (bytes) and back.

Pure Python (``json`` only): ``brokers/amqp.py`` moves the bytes, this module decides
what they say. The message shapes are icij-worker's (PROTOCOL.md §2):

- every body is a UTF-8 JSON object tagged with ``"@type"`` (``Task``,
  ``ProgressEvent``, ``ResultEvent``, ``ErrorEvent``, ``CancelledEvent``,
  ``CancelEvent``, ``ShutdownEvent``); keys are lowerCamelCase, nulls are left out,
  ``@type`` comes last and separators are compact, as icij-worker writes them;
- datetimes are aware UTC ISO-8601 strings as ``datetime.isoformat()`` prints them.

Encoding writes exactly what icij-worker writes, plus what its own peers need to stay
alive: ``maxRetries`` and ``retriesLeft`` in every Task (a task without them cannot
be retried, and an error for it crashes icij's manager), ``retriesLeft`` in every
ErrorEvent, and ``value`` in every result, even when it is None (PROTOCOL.md §7).

Decoding is lenient where icij-worker is strict and harmless to be lenient (either key
casing, unknown keys ignored, ``args`` as null or as a JSON string, any datetime form,
lower-case states) and strict where a wrong guess would corrupt a task (types of the
fields we use, progress in [0, 1], the ``@type`` tag). Anything that is not a valid
message raises :class:`~icij_nb.errors.WireError`, never another exception: a broker
can dead-letter it and go on. Nothing is ever unpickled or evaluated.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final, NoReturn

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

#: Bodies larger than this are refused before JSON parsing (and never sent).
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
#: Task args and results nest at most this deep (the bound of ``jsonvalues``), so
#: whatever we decode can be stored and sent again.
MAX_VALUE_DEPTH: Final = 200

#: What the decoders read: a message body, as aio-pika or a test hands it over.
Body = bytes | bytearray | memoryview

TYPE_KEY: Final = "@type"
TASK_TYPE: Final = "Task"
EVENT_TYPES: Final = ("ProgressEvent", "ResultEvent", "ErrorEvent", "CancelledEvent")
BROADCAST_TYPES: Final = ("CancelEvent", "ShutdownEvent")

_PREVIEW_BYTES = 48  # a bytes repr is at most 4 characters a byte: ~200 characters
_SHORT_TEXT = 60
_UNKNOWN_FRAME = "<unknown>"
# A JSON escape of a UTF-16 surrogate; only then can a decoded string hold a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# pydantic's rule for epoch numbers: beyond this many seconds they are milliseconds.
_EPOCH_MS_THRESHOLD = 2e10


# -- keys and datetimes ---------------------------------------------------------


def to_snake_case(key: str) -> str:
    """Convert an argument name the way icij-worker does before calling a task.

    An underscore goes before each upper-case letter, which is then lower-cased, and
    one leading underscore is dropped (icij's quirk, kept for compatibility: a
    leading ``_`` of the original name goes too).

    Example:
        >>> to_snake_case("nSteps"), to_snake_case("someHTTPArg")
        ('n_steps', 'some_h_t_t_p_arg')
    """
    snake = "".join("_" + c.lower() if c.isupper() else c for c in key)
    return snake[1:] if snake.startswith("_") else snake


def format_datetime(dt: datetime) -> str:
    """Write ``dt`` as icij-worker does: aware UTC ``isoformat()`` (naive is UTC).

    Raises:
        WireError: ``dt`` cannot be expressed in UTC (out of range).
    """
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC).isoformat()
    try:
        return dt.astimezone(UTC).isoformat()
    except (OverflowError, ValueError) as exc:
        msg = f"datetime {dt!r} cannot be expressed in UTC: {exc}"
        raise WireError(msg) from exc


def parse_datetime(value: object) -> datetime:
    """Read a wire datetime as an aware UTC datetime.

    Accepts ISO-8601 strings (``Z``, any offset, or naive, taken as UTC), epoch
    numbers (seconds, or milliseconds beyond 2e10, as pydantic reads them) and
    datetime objects.

    Raises:
        WireError: ``value`` is none of these, or out of range.
    """
    try:
        return _parse_datetime(value)
    except ValueError as exc:
        raise WireError(str(exc)) from None


def _parse_datetime(value: object) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = _parse_iso(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        parsed = _parse_epoch(value)
    else:
        msg = f"expected an ISO-8601 string or an epoch number, got {_describe(value)}"
        raise ValueError(msg)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        msg = f"datetime {_describe(value)} is out of range in UTC"
        raise ValueError(msg) from None


def _parse_iso(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        msg = f"expected an ISO-8601 datetime, got {_describe(value)}"
        raise ValueError(msg) from None


def _parse_epoch(value: float) -> datetime:
    try:
        seconds = value / 1000 if abs(value) > _EPOCH_MS_THRESHOLD else value
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        msg = f"epoch time {_describe(value)} is out of range"
        raise ValueError(msg) from None


# -- encoding -------------------------------------------------------------------


def encode_task(task: Task) -> bytes:
    """The Task message for ``task`` (PROTOCOL.md §2.4).

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
    """The message for a worker event (PROTOCOL.md §2.5-2.8).

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
    """The message for a cancel or shutdown broadcast (PROTOCOL.md §2.9-2.10)."""
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
        msg = f"{where} cannot be encoded as JSON: {_clip(str(exc))}"
        raise WireError(msg) from exc
    if len(body) > MAX_BODY_BYTES:
        msg = (
            f"{where} is {len(body)} bytes as JSON, over the {MAX_BODY_BYTES}-byte "
            "limit; pass a path or an id instead of the data."
        )
        raise WireError(msg)
    return body


# -- decoding: bytes to a JSON object -------------------------------------------


class _BadNumber(ValueError):
    """A number JSON allows but a message must not hold (NaN, infinity)."""


def _reject_constant(name: str) -> NoReturn:
    msg = f"{name} is not a JSON number"
    raise _BadNumber(msg)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        msg = f"the number {_clip(text)} is too large for a float"
        raise _BadNumber(msg)
    return value


def _parse_json(text: str) -> Any:
    """Parse JSON text; ValueError or RecursionError on anything wrong."""
    value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        msg = "a string holds a lone UTF-16 surrogate escape, which is not Unicode"
        raise ValueError(msg)
    return value


def _load_object(body: object, kind: str) -> _Fields:
    """The JSON object in ``body``, or WireError saying why there is none."""
    if not isinstance(body, bytes | bytearray | memoryview):
        msg = f"invalid {kind} message: the body must be bytes, got {type(body)}"
        raise WireError(msg)
    data = bytes(body)
    if len(data) > MAX_BODY_BYTES:
        msg = (
            f"invalid {kind} message: the body is {len(data)} bytes, over the "
            f"{MAX_BODY_BYTES}-byte limit"
        )
        raise WireError(msg)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = (
            f"invalid {kind} message: the body is not UTF-8 (bad byte at offset "
            f"{exc.start}); it starts with {_preview(data)}"
        )
        raise WireError(msg) from None
    try:
        value = _parse_json(text)
    except RecursionError:
        msg = f"invalid {kind} message: the JSON is nested too deeply to parse"
        raise WireError(msg) from None
    except ValueError as exc:
        msg = (
            f"invalid {kind} message: the body is not valid JSON "
            f"({_clip(str(exc), 120)}); "
            f"it starts with {_preview(data)}"
        )
        raise WireError(msg) from None
    if not isinstance(value, dict):
        msg = (
            f"invalid {kind} message: the body must be a JSON object, got "
            f"{_describe(value)}"
        )
        raise WireError(msg)
    deep = text.count("[") + text.count("{") > MAX_VALUE_DEPTH
    return _Fields(value, kind, deep=deep)


def _message_type(fields: _Fields, allowed: tuple[str, ...]) -> tuple[str, _Fields]:
    """The ``@type`` of the message, and its fields named after it in errors."""
    tag = fields.raw(TYPE_KEY)
    if isinstance(tag, str) and tag in allowed:
        return tag, fields.renamed(tag)
    expected = ", ".join(repr(a) for a in allowed)
    if tag is None:
        fields.missing(TYPE_KEY, f"one of {expected}")
    msg = (
        f"invalid {fields.kind} message: '@type' must be one of {expected}, got "
        f"{_describe(tag)}; was it published to the wrong exchange or queue?"
    )
    raise WireError(msg)


# -- decoding: typed fields -----------------------------------------------------


class _Fields:
    """Typed access to the keys of one JSON object; errors name the message and key.

    A key is looked up in lowerCamelCase, then in snake_case; null counts as absent
    (icij-worker leaves nulls out, so both mean "not set").
    """

    __slots__ = ("_deep", "_kind", "_obj", "_prefix")

    def __init__(
        self, obj: dict[str, Any], kind: str, prefix: str = "", *, deep: bool = True
    ) -> None:
        self._obj = obj
        self._kind = kind
        self._prefix = prefix
        # False when the body has too few brackets to nest too deep: skips a walk.
        self._deep = deep

    @property
    def kind(self) -> str:
        """What the message is ("Task", "ErrorEvent"...), as errors name it."""
        return self._kind

    def raw(self, key: str) -> Any:
        value = self._obj.get(key)
        if value is None:
            snake = to_snake_case(key)
            if snake != key:
                value = self._obj.get(snake)
        return value

    def fail(self, key: str, expected: str, value: Any) -> NoReturn:
        msg = (
            f"invalid {self._kind} message: {self._prefix + key!r} must be "
            f"{expected}, got {_describe(value)}"
        )
        raise WireError(msg)

    def missing(self, key: str, expected: str) -> NoReturn:
        msg = (
            f"invalid {self._kind} message: {self._prefix + key!r} is missing "
            f"(expected {expected})"
        )
        raise WireError(msg)

    def required(self, key: str, expected: str) -> Any:
        value = self.raw(key)
        if value is None:
            self.missing(key, expected)
        return value

    def text(self, key: str) -> str:
        value = self.required(key, "a string")
        if not isinstance(value, str):
            self.fail(key, "a string", value)
        return value

    def optional_text(self, key: str, default: str | None = None) -> str | None:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(key, "a string", value)
        return value

    def count(self, key: str) -> int | None:
        """A non-negative integer; a negative one reads as 0 (nothing left)."""
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(key, "an integer", value)
        return max(value, 0)

    def flag(self, key: str) -> bool:
        value = self.required(key, "true or false")
        if not isinstance(value, bool):
            self.fail(key, "true or false", value)
        return value

    def fraction(self, key: str) -> float | None:
        value = self.raw(key)
        if value is None:
            return None
        expected = "a number within [0, 1]"
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.fail(key, expected, value)
        if not 0 <= value <= 1:  # compared before float(): a huge int would overflow
            self.fail(key, expected, value)
        return float(value)

    def moment(self, key: str) -> datetime:
        value = self.required(key, "a datetime")
        try:
            return _parse_datetime(value)
        except ValueError as exc:
            msg = f"invalid {self._kind} message: {self._prefix + key!r}: {exc}"
            raise WireError(msg) from None

    def optional_moment(self, key: str) -> datetime | None:
        return None if self.raw(key) is None else self.moment(key)

    def child(self, key: str) -> _Fields:
        value = self.required(key, "an object")
        if not isinstance(value, dict):
            self.fail(key, "an object", value)
        return self.nested(key, value)

    def renamed(self, kind: str) -> _Fields:
        """The same fields, with errors naming the message ``kind``."""
        return _Fields(self._obj, kind, self._prefix, deep=self._deep)

    def nested(self, key: str, obj: dict[str, Any]) -> _Fields:
        """Fields of ``obj``, found under ``key`` of this object."""
        return _Fields(obj, self._kind, f"{self._prefix}{key}.", deep=self._deep)

    def json_value(self, key: str) -> Any:
        """An args or result value: any JSON, nested at most MAX_VALUE_DEPTH deep."""
        value = self.raw(key)
        if self._deep and _too_deep(value, MAX_VALUE_DEPTH):
            msg = (
                f"invalid {self._kind} message: {self._prefix + key!r} is nested "
                f"more than {MAX_VALUE_DEPTH} levels deep"
            )
            raise WireError(msg)
        return value


# -- decoding: messages ---------------------------------------------------------


def decode_task(body: Body) -> Task:
    """Read a Task message; the returned task has ``group=None``.

    The group is not on the wire: the caller sets it from the queue. Lenient as
    PROTOCOL.md §5.1.3 asks: either key casing, unknown keys ignored, ``args`` null
    or a JSON string, any datetime form, a state in any case (CREATED when absent).
    Without ``maxRetries`` the task may run once (or ``retriesLeft`` times), without
    ``retriesLeft`` it has all its attempts left.

    Raises:
        WireError: the body is not a valid Task message.
    """
    fields = _load_object(body, TASK_TYPE)
    _, fields = _message_type(fields, (TASK_TYPE,))
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
    PROTOCOL.md §7 #1) has the value None.

    Raises:
        WireError: the body is not a valid worker event.
    """
    fields = _load_object(body, "manager event")
    tag, fields = _message_type(fields, EVENT_TYPES)
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
    fields = _load_object(body, "worker broadcast")
    tag, fields = _message_type(fields, BROADCAST_TYPES)
    if tag == "ShutdownEvent":
        return ShutdownEvent(fields.moment("createdAt"))
    task_id = _identifier(fields, "taskId")
    return CancelEvent(task_id, fields.flag("requeue"), fields.moment("createdAt"))


def _identifier(fields: _Fields, key: str) -> str:
    value = fields.text(key)
    if not value:
        fields.fail(key, "a non-empty string", value)
    return value


def _task_state(fields: _Fields) -> TaskState:
    value = fields.optional_text("state")
    if value is None:
        return TaskState.CREATED
    try:
        return TaskState.parse(value)
    except ValueError:
        valid = ", ".join(s.value for s in TaskState)
        fields.fail("state", f"one of {valid}", value)


def _task_args(fields: _Fields) -> dict[str, Any]:
    value = fields.json_value("args")
    if value is None:
        return {}
    if isinstance(value, str):
        # icij accepts args as a JSON string holding the object.
        try:
            value = _parse_json(value)
        except (ValueError, RecursionError):
            fields.fail("args", "an object or a JSON string holding one", value)
        if _too_deep(value, MAX_VALUE_DEPTH):
            fields.fail("args", f"nested at most {MAX_VALUE_DEPTH} levels", value)
    if not isinstance(value, dict):
        fields.fail("args", "an object or a JSON string holding one", value)
    return value


def _attempts(fields: _Fields) -> tuple[int, int]:
    """(max_attempts, attempts_left) from ``maxRetries`` and ``retriesLeft``."""
    max_retries = fields.count("maxRetries")
    retries_left = fields.count("retriesLeft")
    if max_retries is None:
        # icij runs a task without maxRetries once: a failure is final.
        max_retries = 1 if retries_left is None else max(retries_left, 1)
    return max_retries, max_retries if retries_left is None else retries_left


def _error_record(fields: _Fields, created_at: datetime) -> ErrorRecord:
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


def _frame(fields: _Fields, index: int, frame: Any) -> StackFrame:
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


# -- helpers --------------------------------------------------------------------


def _too_deep(value: Any, limit: int) -> bool:
    """True when ``value`` nests more than ``limit`` arrays and objects deep."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _has_lone_surrogate(value: Any) -> bool:
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _describe(value: Any) -> str:
    """A short account of a JSON value for error messages (never the whole body)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        try:
            return f"the number {_clip(repr(value))}"
        except ValueError:  # an int beyond sys.get_int_max_str_digits()
            return "a huge integer"
    if isinstance(value, str):
        # Clipped before repr(): a body may hold a string of many megabytes.
        return f"the string {_clip(repr(value[: _SHORT_TEXT + 1]))}"
    if isinstance(value, dict):
        return f"an object ({_plural(len(value), 'key')})"
    if isinstance(value, list):
        return f"an array ({_plural(len(value), 'item')})"
    return f"a {type(value).__name__}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _clip(text: str, limit: int = _SHORT_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _preview(data: bytes) -> str:
    head = repr(data[:_PREVIEW_BYTES])
    return head + ("..." if len(data) > _PREVIEW_BYTES else "")


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
    _, fields = _message_type(_load_object(body, "heartbeat"), (HEARTBEAT_TYPE,))
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
