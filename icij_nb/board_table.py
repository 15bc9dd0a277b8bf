"""BoardTable: the task board's columnar copy of the task table, updated in place.

The board keeps one row per task in numpy arrays (state, group, progress, times as
integer microseconds...) and a few Python lists (ids, args, results, last error, a
lower-cased search text), indexed by task id. Changes arrive as task
snapshots (:meth:`BoardTable.upsert`); a refresh then costs a few vectorised passes
over the arrays, never a rebuild:

- :meth:`BoardTable.select` gives the rows that pass the filters (a boolean mask; the
  free-text part is cached and updated only for changed rows);
- :meth:`BoardTable.order` sorts those rows by one column, ties in creation order;
- :meth:`BoardTable.counts` and :meth:`BoardTable.group_progress` summarise groups;
- :meth:`BoardTable.frame` turns rows into the DataFrame of ``tm.frame()``, built
  by :mod:`icij_nb.frames` from the arrays.

It holds no widgets and no threads: the board calls it from the runtime thread only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from icij_nb.errors import InvalidFilter
from icij_nb.frames import assemble_frame, states_from_codes, times_from_us
from icij_nb.model import Task, TaskState

STATES: Final = tuple(TaskState)
STATE_CODE: Final = {state: code for code, state in enumerate(STATES)}
READY_CODES: Final = np.array(
    [STATE_CODE[s] for s in STATES if s.is_ready], dtype=np.int8
)
N_STATES: Final = len(STATES)
#: "no timestamp" in the integer-microsecond columns (numpy's NaT)
NAT: Final = np.iinfo(np.int64).min
#: the columns :meth:`BoardTable.order` sorts by
SORT_COLUMNS: Final = (
    "created_at",
    "id",
    "name",
    "group",
    "state",
    "progress",
    "attempts",
    "worker",
    "started_at",
    "completed_at",
    "duration_s",
)
#: free text searches this many characters of each task's args, result and error
SEARCH_CHARS: Final = 10_000

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def to_us(value: datetime | None) -> int:
    """An aware datetime as integer microseconds since the epoch (NAT for None)."""
    if value is None:
        return int(NAT)
    return (value - _EPOCH) // _ONE_US


def from_us(value: int) -> datetime | None:
    """The inverse of :func:`to_us`."""
    if value == NAT:
        return None
    return _EPOCH + timedelta(microseconds=int(value))


_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, default=str)


def to_json(value: Any) -> str:
    """Compact JSON text of a value, non-ASCII kept (anything else as str())."""
    return _ENCODER.encode(value)


def last_error(task: Task) -> str | None:
    """The last error of a task as ``Name: message``, like the frame's column."""
    if not task.errors:
        return None
    record = task.errors[-1]
    return f"{record.name}: {record.message}"


class _Codes:
    """Small integer codes for the few distinct values of a column (names, groups)."""

    def __init__(self) -> None:
        self.values: list[str | None] = []
        self._codes: dict[str | None, int] = {}

    def code(self, value: str | None) -> int:
        code = self._codes.get(value)
        if code is None:
            code = len(self.values)
            self.values.append(value)
            self._codes[value] = code
        return code

    def find(self, value: str | None) -> int | None:
        return self._codes.get(value)

    def ranks(self) -> IntArray:
        """Each code's rank in sorted order of the values (None last)."""
        keys = sorted(
            range(len(self.values)),
            key=lambda c: (self.values[c] is None, self.values[c] or ""),
        )
        ranks = np.empty(len(self.values), dtype=np.int64)
        ranks[keys] = np.arange(len(keys))
        return ranks


@dataclass(frozen=True)
class Filters:
    """What the board shows: None in a field means no filter on it."""

    group: str | None = None
    states: frozenset[TaskState] | None = None
    name: str | None = None
    text: str | None = None

    def describe(self) -> str:
        parts = []
        if self.group is not None:
            parts.append(f"group {self.group}")
        if self.states:
            parts.append(
                "state " + "|".join(s.value for s in STATES if s in self.states)
            )
        if self.name:
            parts.append(f"name ~ {self.name!r}")
        if self.text:
            parts.append(f"text ~ {self.text!r}")
        return ", ".join(parts)


#: "leave this filter as it is" in :func:`filter_changes`
KEEP: Final[Any] = object()


def check_int(what: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        msg = f"{what} must be an int, got {value!r}"
        raise InvalidFilter(msg)
    return value


def check_board_options(page_size: object, refresh_s: object) -> None:
    if check_int("page_size", page_size) < 1:
        msg = f"page_size must be >= 1, got {page_size!r}"
        raise InvalidFilter(msg)
    if (
        not isinstance(refresh_s, int | float)
        or isinstance(refresh_s, bool)
        or not refresh_s > 0
    ):
        msg = f"refresh_s must be a number of seconds > 0, got {refresh_s!r}"
        raise InvalidFilter(msg)


def filter_changes(**given: Any) -> dict[str, Any]:
    """Check filter values (before any work on the runtime thread).

    A value of :data:`KEEP` leaves that filter as it is; the result maps the
    filters to change to their new values.
    """
    wanted: dict[str, Any] = {}
    for key in ("group", "name", "text"):
        value = given[key]
        if value is KEEP:
            continue
        if value is not None and not isinstance(value, str):
            msg = f"{key} must be a string or None, got {value!r}"
            raise InvalidFilter(msg)
        wanted[key] = value.strip() or None if isinstance(value, str) else None
    states = given["states"]
    if states is not KEEP:
        wanted["states"] = parse_states(states)
    return wanted


def parse_states(
    states: Iterable[str | TaskState] | str | TaskState | None,
) -> frozenset[TaskState] | None:
    if states is None:
        return None
    if isinstance(states, str):  # TaskState is a str too
        states = [states]
    parsed = set()
    values: Iterable[object] = states
    for state in values:
        if not isinstance(state, str):
            valid = ", ".join(s.value for s in TaskState)
            msg = f"unknown task state {state!r}; valid states: {valid}"
            raise InvalidFilter(msg)
        try:
            parsed.add(TaskState.parse(state))
        except ValueError as exc:  # the model's error, as the board's filter error
            raise InvalidFilter(str(exc)) from None
    return frozenset(parsed) or None


_INT_COLUMNS: Final = (
    ("name", np.int32),
    ("group", np.int32),
    ("worker", np.int32),
    ("attempts", np.int32),
    ("max_attempts", np.int32),
    ("attempts_left", np.int32),
    ("created", np.int64),
    ("started", np.int64),
    ("completed", np.int64),
)


class BoardTable:
    """One row per task, columnar, indexed by task id (see the module docstring)."""

    def __init__(self, capacity: int = 1024) -> None:
        self.n = 0
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.args: list[Any] = []
        self.result: list[Any] = []
        self.error: list[str | None] = []
        self.search: list[str] = []
        self.names, self.groups, self.workers = _Codes(), _Codes(), _Codes()
        self.state = np.zeros(capacity, dtype=np.int8)
        self.progress = np.zeros(capacity, dtype=np.float64)
        self.cols: dict[str, npt.NDArray[Any]] = {
            name: np.zeros(capacity, dtype=dtype) for name, dtype in _INT_COLUMNS
        }
        #: bumped when rows are added; caches keyed on it
        self.rows_version = 0
        self._created_order: tuple[int, IntArray] | None = None
        self._id_ranks: tuple[int, IntArray] | None = None
        self._text_cache: tuple[str, BoolArray] | None = None

    @property
    def capacity(self) -> int:
        return len(self.state)

    def nbytes(self) -> int:
        """Bytes held by the arrays (allocated capacity, not only used rows)."""
        return (
            self.state.nbytes
            + self.progress.nbytes
            + sum(a.nbytes for a in self.cols.values())
        )

    def _grow(self, needed: int) -> None:
        capacity = max(needed, self.capacity + self.capacity // 4 + 1024)
        self.state = _resized(self.state, capacity)
        self.progress = _resized(self.progress, capacity)
        self.cols = {k: _resized(v, capacity) for k, v in self.cols.items()}

    # -- writes -------------------------------------------------------------------

    def upsert(self, tasks: list[Task]) -> list[int]:
        """Write task snapshots (newest wins); return the rows they touched."""
        rows = []
        for task in tasks:
            row = self.index.get(task.id)
            if row is None:
                row = self._append(task.id, task.args)
            self._set(row, task)
            rows.append(row)
        return rows

    def _append(self, task_id: str, args: Any) -> int:
        if self.n == self.capacity:
            self._grow(self.n + 1)
        row = self.n
        self.n += 1
        self.rows_version += 1
        self.index[task_id] = row
        self.ids.append(task_id)
        self.args.append(args)
        self.result.append(None)
        self.error.append(None)
        self.search.append(_search_text(args, None, None, has_result=False))
        if self._text_cache is not None:
            needle, mask = self._text_cache
            self._text_cache = (needle, np.append(mask, False))
        return row

    def _set(self, row: int, t: Task) -> None:
        cols = self.cols
        self.state[row] = STATE_CODE[t.state]
        self.progress[row] = t.progress
        cols["name"][row] = self.names.code(t.name)
        cols["group"][row] = self.groups.code(t.group)
        cols["worker"][row] = self.workers.code(t.worker_id)
        cols["attempts"][row] = t.attempts
        cols["max_attempts"][row] = t.max_attempts
        cols["attempts_left"][row] = t.attempts_left
        cols["created"][row] = to_us(t.created_at)
        cols["started"][row] = to_us(t.started_at)
        cols["completed"][row] = to_us(t.completed_at)
        result = t.result if t.has_result else None
        error = last_error(t)
        if result is self.result[row] and error == self.error[row]:
            return  # the search text is current
        self.result[row], self.error[row] = result, error
        self.search[row] = _search_text(
            self.args[row], result, error, has_result=t.has_result
        )
        if self._text_cache is not None:
            needle, mask = self._text_cache
            mask[row] = needle in self.search[row]

    def load_frame(self, frame: pd.DataFrame, live: dict[str, Task]) -> None:
        """Fill an empty table from a ``tm.frame()`` DataFrame, vectorised.

        ``live`` gives the manager's records of this session's tasks: their ids,
        args and results are shared rather than copied, and they give the one field
        the frame lacks (attempts left). Tasks of past sessions get it from their
        attempts.
        """
        n = len(frame)
        if n == 0:
            return
        if self.n:
            msg = "load_frame() fills an empty table only"
            raise ValueError(msg)
        self._grow(n)
        self.n, self.rows_version = n, self.rows_version + 1
        self.ids = frame["id"].tolist()
        self.args = frame["args"].tolist()
        self.result = frame["result"].tolist()
        self.state[:n] = frame["state"].cat.codes.to_numpy()
        self.progress[:n] = frame["progress"].to_numpy()
        cols = self.cols
        cols["name"][:n] = _factorize(frame["name"], self.names)
        cols["group"][:n] = _factorize(frame["group"], self.groups)
        cols["worker"][:n] = _factorize(frame["worker"], self.workers)
        cols["attempts"][:n] = frame["attempts"].to_numpy()
        cols["max_attempts"][:n] = frame["max_attempts"].to_numpy()
        for column, key in (
            ("created_at", "created"),
            ("started_at", "started"),
            ("completed_at", "completed"),
        ):
            cols[key][:n] = _us_array(frame[column])
        cols["attempts_left"][:n] = self._guess_attempts_left(n)
        self._share(live)
        errors = frame["error"].tolist()
        self.error = [e if isinstance(e, str) else None for e in errors]
        args, result, error = self.args, self.result, self.error
        self.search = [
            _search_text(args[r], result[r], error[r], has_result=True)
            for r in range(n)
        ]
        self.upsert([t for t in live.values() if not t.state.is_ready])

    def _share(self, live: dict[str, Task]) -> None:
        ids, args, result = self.ids, self.args, self.result
        left = self.cols["attempts_left"]
        index = self.index = {}
        for row, task_id in enumerate(ids):
            task = live.get(task_id)
            if task is not None:
                ids[row], args[row], left[row] = task.id, task.args, task.attempts_left
                if task.has_result:
                    result[row] = task.result
            index[ids[row]] = row

    def _guess_attempts_left(self, n: int) -> IntArray:
        # Past sessions' records do not keep it: a finished task had as many runs
        # left as it did not use, a failed one none.
        cols = self.cols
        left = cols["max_attempts"][:n] - np.maximum(cols["attempts"][:n] - 1, 0)
        left[self.state[:n] == STATE_CODE[TaskState.ERROR]] = 0
        result: IntArray = np.maximum(left, 0).astype(np.int64)
        return result

    # -- reads --------------------------------------------------------------------

    def group_names(self) -> list[str | None]:
        """Groups that have at least one row, sorted (None, the ungrouped, last)."""
        used = np.unique(self.cols["group"][: self.n])
        values = [self.groups.values[c] for c in used]
        return sorted(values, key=lambda g: (g is None, g or ""))

    def select(self, filters: Filters) -> BoolArray:
        """The rows that pass ``filters``, as a boolean mask of length ``n``."""
        n = self.n
        mask = np.ones(n, dtype=bool)
        if filters.group is not None:
            code = self.groups.find(filters.group)
            if code is None:
                return np.zeros(n, dtype=bool)
            mask &= self.cols["group"][:n] == code
        if filters.states:
            codes = [STATE_CODE[s] for s in filters.states]
            mask &= np.isin(self.state[:n], codes)
        if filters.name:
            needle = filters.name.lower()
            codes = [
                c
                for c, value in enumerate(self.names.values)
                if value is not None and needle in value.lower()
            ]
            mask &= np.isin(self.cols["name"][:n], codes)
        if filters.text:
            mask &= self._text_mask(filters.text.lower())
        return mask

    def _text_mask(self, needle: str) -> BoolArray:
        cached = self._text_cache
        if cached is None or cached[0] != needle:
            search = self.search
            mask = np.fromiter((needle in s for s in search), bool, count=len(search))
            cached = self._text_cache = (needle, mask)
        return cached[1]

    def created_order(self) -> IntArray:
        """Every row in creation order (ties in arrival order), cached."""
        cached = self._created_order
        if cached is None or cached[0] != self.rows_version:
            order = np.argsort(self.cols["created"][: self.n], kind="stable")
            cached = self._created_order = (self.rows_version, order)
        return cached[1]

    def order(self, mask: BoolArray, column: str, *, ascending: bool) -> IntArray:
        """The rows of ``mask`` sorted by ``column``.

        Ties keep creation order; missing values come last either way.
        """
        base = self.created_order()
        rows = base[mask[base]]
        if column == "created_at":
            return rows if ascending else rows[::-1].copy()
        key, missing = self._sort_key(column, rows)
        if not ascending:
            key = -key
        if missing is not None:
            key[missing] = np.inf
        return rows[np.argsort(key, kind="stable")]

    def _sort_key(
        self, column: str, rows: IntArray
    ) -> tuple[npt.NDArray[np.float64], BoolArray | None]:
        cols = self.cols
        if column in ("started_at", "completed_at"):
            raw = cols[column.removesuffix("_at")][rows]
            return raw.astype(np.float64), raw == NAT
        if column == "duration_s":
            started, completed = cols["started"][rows], cols["completed"][rows]
            missing = (started == NAT) | (completed == NAT)
            return (completed - started).astype(np.float64), missing
        if column == "id":
            return self._ranks_of_ids()[rows].astype(np.float64), None
        if column in ("name", "group", "worker"):
            codes = cols[column][rows]
            table = {"name": self.names, "group": self.groups, "worker": self.workers}
            values = table[column]
            key = values.ranks()[codes].astype(np.float64)
            none = values.find(None)
            return key, (codes == none) if none is not None else None
        if column == "state":
            return self.state[rows].astype(np.float64), None
        if column == "progress":
            return self.progress[rows].copy(), None
        return cols[column][rows].astype(np.float64), None

    def _ranks_of_ids(self) -> IntArray:
        cached = self._id_ranks
        if cached is None or cached[0] != self.rows_version:
            order = np.argsort(np.array(self.ids, dtype=object), kind="stable")
            ranks = np.empty(self.n, dtype=np.int64)
            ranks[order] = np.arange(self.n)
            cached = self._id_ranks = (self.rows_version, ranks)
        return cached[1]

    def counts(self) -> npt.NDArray[np.int64]:
        """Tasks per (group code, state code), a 2-D array."""
        n, width = self.n, len(self.groups.values)
        flat = self.cols["group"][:n].astype(np.int64) * N_STATES + self.state[:n]
        return np.bincount(flat, minlength=width * N_STATES).reshape(width, N_STATES)

    def group_progress(self) -> npt.NDArray[np.float64]:
        """Mean progress per group code.

        A finished task (DONE, ERROR, CANCELLED) counts whole.
        """
        n, width = self.n, len(self.groups.values)
        if width == 0:
            return np.zeros(0)
        groups = self.cols["group"][:n]
        ready = np.isin(self.state[:n], READY_CODES)
        weights = np.where(ready, 1.0, self.progress[:n])
        total = np.bincount(groups, weights=weights, minlength=width)
        count = np.bincount(groups, minlength=width)
        return np.divide(total, count, out=np.zeros(width), where=count > 0)

    def rows_in(self, group: str | None, states: frozenset[TaskState]) -> list[str]:
        """Ids of the tasks of ``group`` in one of ``states``, in creation order."""
        code = self.groups.find(group)
        if code is None:
            return []
        base = self.created_order()
        hit = (self.cols["group"][base] == code) & np.isin(
            self.state[base], [STATE_CODE[s] for s in states]
        )
        return [self.ids[row] for row in base[hit]]

    def row(self, row: int) -> dict[str, Any]:
        """One row's values, for rendering."""
        cols = self.cols
        started, completed = int(cols["started"][row]), int(cols["completed"][row])
        duration = (
            (completed - started) / 1e6 if NAT not in (started, completed) else None
        )
        return {
            "id": self.ids[row],
            "name": self.names.values[cols["name"][row]],
            "group": self.groups.values[cols["group"][row]],
            "state": STATES[self.state[row]],
            "progress": float(self.progress[row]),
            "attempts": int(cols["attempts"][row]),
            "max_attempts": int(cols["max_attempts"][row]),
            "retries_left": max(int(cols["attempts_left"][row]) - 1, 0),
            "worker": self.workers.values[cols["worker"][row]],
            "created_at": from_us(int(cols["created"][row])),
            "started_at": from_us(started),
            "completed_at": from_us(completed),
            "duration_s": duration,
            "result": self.result[row],
            "error": self.error[row],
        }

    def frame(self, rows: IntArray) -> pd.DataFrame:
        """The rows as a DataFrame with the columns and dtypes of ``tm.frame()``."""
        cols = self.cols
        names, groups = self.names.values, self.groups.values
        workers = self.workers.values
        index = rows.tolist()
        return assemble_frame(
            {
                "id": [self.ids[r] for r in index],
                "name": [names[c] for c in cols["name"][rows].tolist()],
                "group": [groups[c] for c in cols["group"][rows].tolist()],
                "state": states_from_codes(self.state[rows]),
                "progress": self.progress[rows],
                "attempts": cols["attempts"][rows],
                "max_attempts": cols["max_attempts"][rows],
                "worker": [workers[c] for c in cols["worker"][rows].tolist()],
                "created_at": times_from_us(cols["created"][rows]),
                "started_at": times_from_us(cols["started"][rows]),
                "completed_at": times_from_us(cols["completed"][rows]),
                "args": [self.args[r] for r in index],
                "result": [self.result[r] for r in index],
                "error": [self.error[r] for r in index],
            }
        )


def _resized(array: npt.NDArray[Any], capacity: int) -> npt.NDArray[Any]:
    grown = np.zeros(capacity, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


def _factorize(column: pd.Series, codes: _Codes) -> IntArray:
    found, uniques = pd.factorize(column, use_na_sentinel=True)
    lookup = np.array([codes.code(u) for u in uniques] + [codes.code(None)])
    # -1 (missing) indexes the last entry: the code of None
    return lookup[found]


def _us_array(column: pd.Series) -> IntArray:
    values = column.dt.tz_convert("UTC").dt.tz_localize(None)
    result: IntArray = values.to_numpy(dtype="datetime64[us]").astype(np.int64)
    return result


def _search_text(args: Any, result: Any, error: str | None, *, has_result: bool) -> str:
    parts = [to_json(args)[:SEARCH_CHARS]]
    if has_result and result is not None:
        parts.append(to_json(result)[:SEARCH_CHARS])
    if error is not None:
        parts.append(error[:SEARCH_CHARS])
    return "\n".join(parts).lower()
