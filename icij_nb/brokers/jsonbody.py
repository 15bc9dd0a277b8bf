"""Reading message bodies: bytes to a JSON object, typed fields, datetimes.

What every decoder of :mod:`icij_nb.brokers.wire` shares: a body is refused before
parsing when it is too large, not UTF-8 or not JSON (NaN and Infinity included);
:class:`Fields` reads the keys of one object in either key casing, and its errors name
the message and the key; datetimes are read in every form icij-worker accepts and
written as it writes them. Every failure is a :class:`~icij_nb.errors.WireError`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final, NoReturn

from icij_nb.errors import WireError


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


#: Bodies larger than this are refused before JSON parsing (and never sent).
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
#: Task args and results nest at most this deep (the bound of ``jsonvalues``), so
#: whatever we decode can be stored and sent again.
MAX_VALUE_DEPTH: Final = 200

#: What the decoders read: a message body, as aio-pika or a test hands it over.
Body = bytes | bytearray | memoryview

TYPE_KEY: Final = "@type"

_PREVIEW_BYTES = 48  # a bytes repr is at most 4 characters a byte: ~200 characters
SHORT_TEXT = 60
# A JSON escape of a UTF-16 surrogate; only then can a decoded string hold a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# pydantic's rule for epoch numbers: beyond this many seconds they are milliseconds.
_EPOCH_MS_THRESHOLD = 2e10


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
        msg = f"expected an ISO-8601 string or an epoch number, got {describe(value)}"
        raise ValueError(msg)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        msg = f"datetime {describe(value)} is out of range in UTC"
        raise ValueError(msg) from None


def _parse_iso(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        msg = f"expected an ISO-8601 datetime, got {describe(value)}"
        raise ValueError(msg) from None


def _parse_epoch(value: float) -> datetime:
    try:
        seconds = value / 1000 if abs(value) > _EPOCH_MS_THRESHOLD else value
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        msg = f"epoch time {describe(value)} is out of range"
        raise ValueError(msg) from None


# -- decoding: bytes to a JSON object -------------------------------------------


class _BadNumber(ValueError):
    """A number JSON allows but a message must not hold (NaN, infinity)."""


def _reject_constant(name: str) -> NoReturn:
    msg = f"{name} is not a JSON number"
    raise _BadNumber(msg)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        msg = f"the number {clip(text)} is too large for a float"
        raise _BadNumber(msg)
    return value


def parse_json(text: str) -> Any:
    """Parse JSON text; ValueError or RecursionError on anything wrong."""
    value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    if _SURROGATE_ESCAPE.search(text) and has_lone_surrogate(value):
        msg = "a string holds a lone UTF-16 surrogate escape, which is not Unicode"
        raise ValueError(msg)
    return value


def load_object(body: object, kind: str) -> Fields:
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
            f"{exc.start}); it starts with {preview(data)}"
        )
        raise WireError(msg) from None
    try:
        value = parse_json(text)
    except RecursionError:
        msg = f"invalid {kind} message: the JSON is nested too deeply to parse"
        raise WireError(msg) from None
    except ValueError as exc:
        msg = (
            f"invalid {kind} message: the body is not valid JSON "
            f"({clip(str(exc), 120)}); "
            f"it starts with {preview(data)}"
        )
        raise WireError(msg) from None
    if not isinstance(value, dict):
        msg = (
            f"invalid {kind} message: the body must be a JSON object, got "
            f"{describe(value)}"
        )
        raise WireError(msg)
    deep = text.count("[") + text.count("{") > MAX_VALUE_DEPTH
    return Fields(value, kind, deep=deep)


def message_type(fields: Fields, allowed: tuple[str, ...]) -> tuple[str, Fields]:
    """The ``@type`` of the message, and its fields named after it in errors."""
    tag = fields.raw(TYPE_KEY)
    if isinstance(tag, str) and tag in allowed:
        return tag, fields.renamed(tag)
    expected = ", ".join(repr(a) for a in allowed)
    if tag is None:
        fields.missing(TYPE_KEY, f"one of {expected}")
    msg = (
        f"invalid {fields.kind} message: '@type' must be one of {expected}, got "
        f"{describe(tag)}; was it published to the wrong exchange or queue?"
    )
    raise WireError(msg)


# -- decoding: typed fields -----------------------------------------------------


class Fields:
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
            f"{expected}, got {describe(value)}"
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

    def child(self, key: str) -> Fields:
        value = self.required(key, "an object")
        if not isinstance(value, dict):
            self.fail(key, "an object", value)
        return self.nested(key, value)

    def renamed(self, kind: str) -> Fields:
        """The same fields, with errors naming the message ``kind``."""
        return Fields(self._obj, kind, self._prefix, deep=self._deep)

    def nested(self, key: str, obj: dict[str, Any]) -> Fields:
        """Fields of ``obj``, found under ``key`` of this object."""
        return Fields(obj, self._kind, f"{self._prefix}{key}.", deep=self._deep)

    def json_value(self, key: str) -> Any:
        """An args or result value: any JSON, nested at most MAX_VALUE_DEPTH deep."""
        value = self.raw(key)
        if self._deep and too_deep(value, MAX_VALUE_DEPTH):
            msg = (
                f"invalid {self._kind} message: {self._prefix + key!r} is nested "
                f"more than {MAX_VALUE_DEPTH} levels deep"
            )
            raise WireError(msg)
        return value


# -- helpers --------------------------------------------------------------------


def too_deep(value: Any, limit: int) -> bool:
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


def has_lone_surrogate(value: Any) -> bool:
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


def describe(value: Any) -> str:
    """A short account of a JSON value for error messages (never the whole body)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        try:
            return f"the number {clip(repr(value))}"
        except ValueError:  # an int beyond sys.get_int_max_str_digits()
            return "a huge integer"
    if isinstance(value, str):
        # Clipped before repr(): a body may hold a string of many megabytes.
        return f"the string {clip(repr(value[: SHORT_TEXT + 1]))}"
    if isinstance(value, dict):
        return f"an object ({plural(len(value), 'key')})"
    if isinstance(value, list):
        return f"an array ({plural(len(value), 'item')})"
    return f"a {type(value).__name__}"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def clip(text: str, limit: int = SHORT_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def preview(data: bytes) -> str:
    head = repr(data[:_PREVIEW_BYTES])
    return head + ("..." if len(data) > _PREVIEW_BYTES else "")
