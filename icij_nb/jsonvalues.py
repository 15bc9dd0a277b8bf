"""Checks that task arguments and results can travel as JSON, unchanged.

A value is JSON-compatible when ``json.loads(json.dumps(v)) == v`` holds without
surprises: dicts with string keys, lists, strings, finite floats, ints, bools and None.
Tuples are accepted as JSON arrays (they arrive as lists). Everything else is refused
with the path to the offending part, so the user sees ``args['docs'][3]`` rather than a
worker-side crash.
"""

from __future__ import annotations

import math
from typing import Any

from icij_nb.errors import InvalidArguments

_SCALARS = (str, int, bool, type(None))
_MAX_DEPTH = 200


def json_problem(value: Any, path: str = "value") -> str | None:
    """Say why ``value`` is not JSON-compatible, or return None when it is."""
    return _problem(value, path, 0)


def _problem(value: Any, path: str, depth: int) -> str | None:
    if isinstance(value, str) and not value.isascii():
        return _text_problem(value, path)
    if isinstance(value, _SCALARS):
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return (
            f"{path} is {value!r}; JSON has no NaN or infinity. Use None or a string."
        )
    if depth >= _MAX_DEPTH:
        return f"{path} is nested more than {_MAX_DEPTH} levels deep; flatten it."
    if isinstance(value, dict):
        return _dict_problem(value, path, depth)
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _problem(item, f"{path}[{index}]", depth + 1)
            if found:
                return found
        return None
    kind = type(value).__name__
    return (
        f"{path} is a {kind} ({_short_repr(value)}), which JSON cannot carry. "
        "Convert it to a str, number, bool, None, list or dict."
    )


def _dict_problem(value: dict[Any, Any], path: str, depth: int) -> str | None:
    for key, item in value.items():
        if not isinstance(key, str):
            return (
                f"{path} has the key {key!r} of type {type(key).__name__}; JSON "
                "object keys are strings. Convert the key with str()."
            )
        found = (
            _text_problem(key, f"a key of {path}") if not key.isascii() else None
        ) or _problem(item, f"{path}[{key!r}]", depth + 1)
        if found:
            return found
    return None


def _text_problem(value: str, path: str) -> str | None:
    # Messages are UTF-8: a lone surrogate (from bytes decoded with
    # "surrogateescape", say) has no encoding there.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"{path} holds {value[exc.start : exc.end]!r}, a lone surrogate that "
            "UTF-8 cannot encode; decode the source bytes with errors='replace', "
            "or send them as base64 text."
        )
    return None


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_args(args: Any, *, task_name: str) -> dict[str, Any]:
    """Return ``args`` if it is a JSON-compatible dict, else raise InvalidArguments."""
    if args is None:
        return {}
    if not isinstance(args, dict):
        msg = (
            f"arguments of task {task_name!r} must be a dict of keyword arguments, "
            f"got a {type(args).__name__}: {_short_repr(args)}"
        )
        raise InvalidArguments(msg)
    problem = json_problem(args, "args")
    if problem:
        msg = f"arguments of task {task_name!r} cannot be sent: {problem}"
        raise InvalidArguments(msg)
    return args
