"""The timeline: who ran what, when, drawn from the task table as a static image.

``board.timeline()`` or ``nb.timeline(tm.frame())`` (the same from any frame with
the columns of ``tm.frame()``, for example one read back after a papermill run)
returns a :class:`Timeline`. Dask's task stream is the model:

- **one lane per worker** (the ``worker`` column), sorted by name;
- **one bar per task**, from ``started_at`` to ``completed_at`` (a RUNNING task:
  to now), coloured by its state (the board's colours), with the task's name on it
  when there are few enough bars and it fits; the legend gives the states;
- **throughput under it**: tasks that ended per second, in equal bins.

What the frame cannot say is left out and counted in the title: tasks that never
started (CREATED, QUEUED, cancelled while queued). The frame holds the times of a
task's *last* attempt only, so a task that ran several times shows one bar, marked
``xN``; earlier attempts are not stored with times (docs/output.md: their errors
keep the time they failed, their output when it started). Workers report a task
RUNNING only after a short grace period (0.1 s), so a shorter task has no start
time of its own: it shows as a thin bar at the moment it ended.

It renders with matplotlib (the ``notebook`` extra) through the Agg canvas, never
``pyplot``: nothing depends on the kernel's backend, nothing is shown twice, and
the PNG is what a papermill output keeps. :attr:`Timeline.bars` and
:attr:`Timeline.throughput` are the data drawn, as pandas objects.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from icij_nb.errors import InvalidArguments, MissingDependency
from icij_nb.handles import STATE_COLOURS
from icij_nb.model import TaskState

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: the columns of :attr:`Timeline.bars`
BAR_COLUMNS: Final = ("id", "name", "worker", "state", "attempts", "start", "end")
#: above this many bars, bars carry no name (they would not be readable)
MAX_LABELS: Final = 40
#: the narrowest bar that carries its name, as a fraction of the time span
LABEL_MIN: Final = 0.06
#: the thinnest bar drawn, as a fraction of the time span (a task shorter than
#: the workers' grace period has no start time of its own)
MIN_BAR: Final = 0.003
_NEEDED: Final = ("id", "name", "state", "attempts", "worker")
_TIMES: Final = ("started_at", "completed_at")


def timeline(
    frame: pd.DataFrame,
    *,
    title: str | None = None,
    bins: int = 40,
    width_in: float = 10.0,
    now: pd.Timestamp | None = None,
) -> Timeline:
    """The timeline of the tasks of ``frame`` (the columns of ``tm.frame()``).

    Args:
        frame: ``tm.frame()``, ``board.frame`` or a part of them.
        title: the figure's title (default: how many tasks it shows).
        bins: how many bins the throughput is counted in.
        width_in: the figure's width in inches (its height follows the lanes).
        now: where a RUNNING task's bar ends (default: the current time).

    Raises:
        InvalidArguments: ``frame`` lacks a needed column, or ``bins`` < 1.

    Example:
        nb.timeline(tm.frame())          # shows as an image under the cell
    """
    missing = [c for c in (*_NEEDED, *_TIMES) if c not in frame.columns]
    if missing:
        msg = f"the frame has no column {missing!r}; pass tm.frame() or board.frame"
        raise InvalidArguments(msg)
    if bins < 1:
        msg = f"bins must be at least 1, not {bins!r}"
        raise InvalidArguments(msg)
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    bars = _bars(frame, now)
    return Timeline(
        bars,
        _throughput(bars, bins),
        not_started=len(frame) - len(bars),
        title=title,
        width_in=width_in,
    )


def _bars(frame: pd.DataFrame, now: pd.Timestamp) -> pd.DataFrame:
    """One row per task that started: its lane, state, start and end."""
    started = frame[frame["started_at"].notna() & frame["worker"].notna()]
    end = started["completed_at"].copy()
    running = end.isna()
    end[running] = now
    bars = pd.DataFrame(
        {
            "id": started["id"].astype(object),
            "name": started["name"].astype(object),
            "worker": started["worker"].astype(object),
            "state": started["state"].astype(str),
            "attempts": started["attempts"].astype(np.int64),
            "start": started["started_at"],
            "end": end,
        },
        columns=list(BAR_COLUMNS),
    )
    return bars.sort_values(["worker", "start"], kind="stable").reset_index(drop=True)


def _throughput(bars: pd.DataFrame, bins: int) -> pd.Series:
    """Tasks that ended per second, per bin over the bars' span (bin starts)."""
    ended = bars.loc[bars["state"] != TaskState.RUNNING.value, "end"]
    if bars.empty:
        return pd.Series([], dtype=np.float64, name="tasks_per_s")
    first, last = bars["start"].min(), bars["end"].max()
    span_s = max((last - first).total_seconds(), 1e-3)
    edges_s = np.linspace(0.0, span_s, bins + 1)
    offsets = (ended - first).dt.total_seconds().to_numpy()
    counts, _ = np.histogram(offsets, bins=edges_s)
    starts = first + pd.to_timedelta(edges_s[:-1], unit="s")
    return pd.Series(
        counts / (span_s / bins), index=starts, dtype=np.float64, name="tasks_per_s"
    )


class Timeline:
    """A drawn timeline; shows as a PNG in a notebook, and keeps its data.

    Attributes:
        bars: one row per task drawn (:data:`BAR_COLUMNS`), by worker then start.
        throughput: tasks that ended per second, indexed by each bin's start.
        not_started: tasks of the frame that have no bar (they never started).
    """

    def __init__(
        self,
        bars: pd.DataFrame,
        throughput: pd.Series,
        *,
        not_started: int,
        title: str | None,
        width_in: float,
    ) -> None:
        self.bars = bars
        self.throughput = throughput
        self.not_started = not_started
        self._title = title
        self._width_in = width_in
        self._figure: Figure | None = None

    @property
    def workers(self) -> list[str]:
        """The lanes, top to bottom."""
        return sorted(set(self.bars["worker"]))

    @property
    def figure(self) -> Figure:
        """The matplotlib figure (made on first use)."""
        if self._figure is None:
            self._figure = self._draw()
        return self._figure

    def png(self, *, dpi: int = 100) -> bytes:
        """The figure as PNG bytes."""
        out = io.BytesIO()
        self.figure.savefig(out, format="png", dpi=dpi, bbox_inches="tight")
        return out.getvalue()

    def save(self, path: str | Path, *, dpi: int = 100) -> Path:
        """Write the figure to ``path`` (the format follows the suffix)."""
        path = Path(path)
        self.figure.savefig(path, dpi=dpi, bbox_inches="tight")
        return path

    def _repr_png_(self) -> bytes:
        return self.png()

    def __repr__(self) -> str:
        return (
            f"<Timeline tasks={len(self.bars)} workers={len(self.workers)} "
            f"not_started={self.not_started}>"
        )

    # -- drawing -----------------------------------------------------------------------

    @property
    def title(self) -> str:
        """The figure's title: the one given, else how many tasks it shows."""
        if self._title is not None:
            return self._title
        text = f"{len(self.bars)} tasks on {len(self.workers)} workers"
        if self.not_started:
            text += f" ({self.not_started} not started, not drawn)"
        return text

    def _draw(self) -> Figure:
        try:
            from matplotlib.figure import Figure
            from matplotlib.patches import Patch
        except ImportError as exc:
            msg = "the timeline needs matplotlib: pip install 'icij_nb[notebook]'"
            raise MissingDependency(msg) from exc
        lanes = self.workers
        height = 1.6 + 0.35 * max(len(lanes), 1) + 1.2
        figure = Figure(figsize=(self._width_in, height), layout="constrained")
        top, bottom = figure.subplots(
            2, 1, sharex=True, height_ratios=[max(len(lanes), 1) * 0.35 + 0.6, 1.2]
        )
        figure.suptitle(self.title, fontsize=11)
        if self.bars.empty:
            top.text(0.5, 0.5, "no task started yet", ha="center", va="center")
            top.set_yticks([])
            bottom.set_xlabel("seconds")
            return figure
        origin = self.bars["start"].min()
        self._draw_bars(top, lanes, origin)
        states = [s for s in TaskState if s.value in set(self.bars["state"])]
        handles = [Patch(color=STATE_COLOURS[s], label=s.value) for s in states]
        top.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        self._draw_throughput(bottom, origin)
        bottom.set_xlabel(f"seconds since {origin:%Y-%m-%d %H:%M:%S} UTC")
        return figure

    def _draw_bars(self, ax: Axes, lanes: list[str], origin: pd.Timestamp) -> None:
        start = (self.bars["start"] - origin).dt.total_seconds().to_numpy()
        end = (self.bars["end"] - origin).dt.total_seconds().to_numpy()
        span = max(float(end.max()), 1e-3)
        width = np.maximum(end - start, span * MIN_BAR)
        lane = self.bars["worker"].map({w: i for i, w in enumerate(lanes)}).to_numpy()
        colours = self.bars["state"].map(_colour_of).to_numpy()
        ax.barh(
            lane,
            width,
            left=start,
            height=0.7,
            color=colours,
            edgecolor="white",
            linewidth=0.5,
        )
        if len(self.bars) <= MAX_LABELS:
            self._label(ax, start, width, lane, span)
        ax.set_yticks(range(len(lanes)), [_short(w) for w in lanes], fontsize=8)
        ax.set_ylim(len(lanes) - 0.5, -0.5)
        ax.set_xlim(0, span * 1.01)
        ax.set_ylabel("worker")

    def _label(self, ax: Axes, start: Any, width: Any, lane: Any, span: float) -> None:
        rows = zip(self.bars["name"], self.bars["attempts"], strict=True)
        for i, (name, attempts) in enumerate(rows):
            if width[i] < span * LABEL_MIN:
                continue  # a name on a thin bar would hide its neighbours
            text = f"{name} x{attempts}" if attempts > 1 else str(name)
            ax.text(
                start[i] + width[i] / 2,
                lane[i],
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="white",
                clip_on=True,
            )

    def _draw_throughput(self, ax: Axes, origin: pd.Timestamp) -> None:
        series = self.throughput
        left = (pd.DatetimeIndex(series.index) - origin).total_seconds().to_numpy()
        step = float(left[1] - left[0]) if len(left) > 1 else 1.0
        ax.bar(left, series.to_numpy(), width=step, align="edge", color="#6c757d")
        ax.set_ylabel("tasks/s")


def _colour_of(state: str) -> str:
    return STATE_COLOURS.get(TaskState(state), "#888888")


def _short(worker: str, limit: int = 24) -> str:
    return worker if len(worker) <= limit else "…" + worker[-(limit - 1) :]
