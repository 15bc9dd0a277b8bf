"""The task table as a DataFrame: its columns, their dtypes, and how it is built.

``tm.frame()`` (read from the store) and ``board.frame`` (read from the board's
columnar copy) are the same table, so both are built here: a source turns its own
representation into plain columns with the helpers below (states from names or
codes, times from ISO text or integer microseconds), and :func:`assemble_frame`
applies the dtypes, derives ``duration_s`` and puts the columns in order.

The columns, in order, are :data:`FRAME_COLUMNS` (documented in
docs/tasks-table.md):

- ``state``: an ordered categorical of :class:`~icij_nb.model.TaskState` values, in
  the enum's order (CREATED < QUEUED < RUNNING < ERROR < DONE < CANCELLED);
- ``progress``: float64; ``attempts`` and ``max_attempts``: int64;
- ``created_at``, ``started_at``, ``completed_at``: aware UTC timestamps
  (``datetime64[us, UTC]``, NaT when unknown); ``duration_s``: float64 seconds;
- ``id``, ``name``, ``group``, ``worker``, ``error``: text or None; ``args`` and
  ``result``: the JSON values themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from icij_nb.model import TaskState

FRAME_COLUMNS: Final = (
    "id",
    "name",
    "group",
    "state",
    "progress",
    "attempts",
    "max_attempts",
    "worker",
    "created_at",
    "started_at",
    "completed_at",
    "duration_s",
    "args",
    "result",
    "error",
)
#: the ``error`` of a CREATED task that waits in the outbox (no error recorded)
WAITING_FOR_BROKER: Final = (
    "BrokerUnavailable: waiting for the broker (in the outbox); "
    "published once a node answers"
)
#: the dtype of the ``state`` column: TaskState values, ordered as the enum
STATE_DTYPE: Final = pd.CategoricalDtype(
    categories=[s.value for s in TaskState], ordered=True
)
#: the dtype of the three time columns
TIME_DTYPE: Final = pd.DatetimeTZDtype(unit="us", tz="UTC")
TIME_COLUMNS: Final = ("created_at", "started_at", "completed_at")
#: the fields of one stored row, in order, that :func:`frame_from_rows` reads
ROW_FIELDS: Final = (
    "id",
    "name",
    "group",
    "state",
    "progress",
    "attempts",
    "max_attempts",
    "worker",
    "created_at",
    "started_at",
    "completed_at",
    "args",
    "result",
    "has_result",
    "error_name",
    "error_message",
)


def states_from_values(values: Iterable[str]) -> pd.Categorical[str]:
    """The ``state`` column from state names (``"DONE"``...)."""
    return pd.Categorical(list(values), dtype=STATE_DTYPE)


def states_from_codes(codes: npt.NDArray[np.integer[Any]]) -> pd.Categorical:
    """The ``state`` column from positions in ``tuple(TaskState)``."""
    return pd.Categorical.from_codes(codes.astype(np.int64), dtype=STATE_DTYPE)


def times_from_iso(values: Iterable[str | None]) -> pd.Series:
    """A time column from ISO 8601 text with an offset (None for unknown)."""
    parsed = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")
    return parsed.astype(TIME_DTYPE)


def times_from_us(values: npt.NDArray[np.int64]) -> pd.Series:
    """A time column from microseconds since the epoch (int64 min for unknown)."""
    return pd.Series(values.astype("datetime64[us]")).dt.tz_localize("UTC")


def assemble_frame(columns: Mapping[str, Any]) -> pd.DataFrame:
    """The task table from its columns, with the documented dtypes and order.

    Args:
        columns: every name of :data:`FRAME_COLUMNS` but ``duration_s`` (derived
            here), each a sequence of the same length; ``state`` as built by
            :func:`states_from_values` or :func:`states_from_codes`, times by
            :func:`times_from_iso` or :func:`times_from_us`.
    """
    times = {
        column: pd.Series(columns[column]).astype(TIME_DTYPE).array
        for column in TIME_COLUMNS
    }
    duration = (times["completed_at"] - times["started_at"]).total_seconds()
    data = {
        "id": _values(columns["id"]),
        "name": _values(columns["name"]),
        "group": _values(columns["group"]),
        "state": columns["state"],
        "progress": np.asarray(columns["progress"], dtype=np.float64),
        "attempts": np.asarray(columns["attempts"], dtype=np.int64),
        "max_attempts": np.asarray(columns["max_attempts"], dtype=np.int64),
        "worker": _values(columns["worker"]),
        **times,
        "duration_s": np.asarray(duration, dtype=np.float64),
        "args": _values(columns["args"]),
        "result": _values(columns["result"]),
        "error": _values(columns["error"]),
    }
    return pd.DataFrame(data, columns=list(FRAME_COLUMNS))


def mark_waiting(frame: pd.DataFrame, waits: Callable[[str], bool]) -> None:
    """Set ``error`` to :data:`WAITING_FOR_BROKER` where ``waits(id)`` (in place).

    Only rows without an error: a task waits in the outbox before any attempt.
    """
    if frame.empty:
        return
    mask = frame["id"].map(waits).astype(bool) & frame["error"].isna()
    if mask.any():
        frame.loc[mask, "error"] = WAITING_FOR_BROKER


def _values(values: Sequence[Any]) -> Sequence[Any] | npt.NDArray[np.object_]:
    # pandas infers the dtype (text columns become ``str``); an empty column,
    # with nothing to infer from, holds Python objects.
    return values if len(values) else np.array([], dtype=object)


def frame_from_rows(rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """The task table from stored rows laid out as :data:`ROW_FIELDS`.

    ``args`` and ``result`` are JSON text (``result`` counts only where
    ``has_result``); ``error_name`` and ``error_message`` are the last error's.
    """
    raw = dict(zip(ROW_FIELDS, zip(*rows, strict=True), strict=False))
    if not rows:
        raw = dict.fromkeys(ROW_FIELDS, ())
    return assemble_frame(
        {
            "id": raw["id"],
            "name": raw["name"],
            "group": raw["group"],
            "state": states_from_values(raw["state"]),
            "progress": raw["progress"],
            "attempts": raw["attempts"],
            "max_attempts": raw["max_attempts"],
            "worker": raw["worker"],
            **{column: times_from_iso(raw[column]) for column in TIME_COLUMNS},
            "args": [json.loads(a) for a in raw["args"]],
            "result": [
                json.loads(r) if h else None
                for r, h in zip(raw["result"], raw["has_result"], strict=True)
            ],
            "error": [
                f"{n}: {m}" if isinstance(n, str) else None
                for n, m in zip(raw["error_name"], raw["error_message"], strict=True)
            ],
        }
    )
