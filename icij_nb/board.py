"""TaskBoard: the live task table of a notebook, ``board = tm.board()``.

How it runs (see docs/board.md):

- **one thread owns it**: the board's state (a :class:`~icij_nb.board_table.BoardTable`,
  the filters, the sort, the page) lives on the runtime thread. The manager calls the
  board's listener there with snapshots of changed tasks; the listener files them
  (:mod:`icij_nb.board_changes`), and a timer applies them and renders at most once
  every ``refresh_s``. Widgets are updated only by setting traits from that thread,
  so the board keeps moving while a cell blocks.
- **the public methods** (``set_filter``, ``sort``, ``frame``, ``cancel``...) run
  their work on the runtime thread and wait for it, so when they return the widgets
  show the result. Widget events are handed to the runtime thread without waiting.
- **what it is made of**: this module owns the state and the threading; the
  actions on tasks and the detail view are :mod:`icij_nb.board_actions`, the
  rendering, the static snapshot (nbviewer, papermill) and the update after a
  blocking ``tm.gather``/``tm.wait``/``tm.result`` are :mod:`icij_nb.board_display`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar

import numpy as np
import pandas as pd

from icij_nb.board_actions import BoardActions, BoardHooks, check_group
from icij_nb.board_changes import PendingChanges
from icij_nb.board_display import EMPTY_MESSAGE as EMPTY_MESSAGE
from icij_nb.board_display import BoardDisplay, PageState, page_count
from icij_nb.board_table import (
    KEEP,
    SORT_COLUMNS,
    BoardTable,
    Filters,
    check_board_options,
    check_int,
    filter_changes,
)
from icij_nb.board_widgets import BoardWidgets
from icij_nb.errors import IcijNbError, InvalidFilter
from icij_nb.frames import mark_waiting
from icij_nb.handles import TaskHandle
from icij_nb.model import Task, TaskState
from icij_nb.timeline import Timeline, timeline
from icij_nb.view import TaskView

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: how often the board counts live workers (from their heartbeats)
_WORKERS_EVERY_S: Final = 2.0


class TaskBoard:
    """A live view of a manager's tasks, with actions on them.

    It shows counts and progress per group, a filtered, sorted and paged table,
    per-task and per-group actions, and a detail view. Make one with
    ``tm.board(...)`` and show it as a cell's last expression.

    Args:
        manager: the task manager to watch.
        group: show only this group's tasks.
        states: show only tasks in these states (names or TaskState values).
        name: show only tasks whose name contains this (case-insensitive).
        text: show only tasks whose args, result or error contain this.
        page_size: rows per page; only the page is sent to the browser.
        refresh_s: the least time between two refreshes.

    Raises:
        InvalidFilter: an unknown state or group (the message lists the valid ones).
        InvalidFilter: a bad ``page_size`` or ``refresh_s``.

    Example:
        board = tm.board(group="cpu", states=["RUNNING", "ERROR"])
        board                               # shows it; it updates by itself
        board.frame                         # a DataFrame of what it shows
    """

    def __init__(
        self,
        manager: TaskView,
        *,
        group: str | None = None,
        states: Iterable[str | TaskState] | str | TaskState | None = None,
        name: str | None = None,
        text: str | None = None,
        page_size: int = 20,
        refresh_s: float = 0.3,
    ) -> None:
        check_board_options(page_size, refresh_s)
        wanted = filter_changes(group=group, states=states, name=name, text=text)
        self._manager = manager
        self._runtime = manager.runtime
        self._page_size = page_size
        self._table = BoardTable()
        self._filters = Filters()
        self._sort: tuple[str, bool] = ("created_at", True)
        self._page = 0
        self._view = np.zeros(0, dtype=np.int64)
        self._pending = PendingChanges(
            float(refresh_s), lambda limit: self._refresh_now(limit=limit)
        )
        self._workers: dict[str | None, int] | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._widget_event = False
        self._closed = False
        self._unsubscribe: Callable[[], None] | None = None
        #: CPU seconds of the runtime thread per refresh (the last 1,000)
        self._refresh_cpu_s: collections.deque[float] = collections.deque(maxlen=1000)
        self._ui = BoardWidgets(page_size)
        self._display = BoardDisplay(self._ui)
        self._actions = BoardActions(
            manager,
            self._runtime,
            self._ui,
            self._table,
            BoardHooks(
                closed=lambda: self._closed,
                check_open=self._check_open,
                refresh=lambda force_view: self._refresh_now(force_view=force_view),
                apply_pending=self._apply_pending,
                known_groups=self._known_groups,
                current_group=lambda: self._filters.group,
            ),
        )
        #: the root widget (a VBox); the others are attributes too (see __getattr__)
        self.widget = self._ui.root
        self._connect_widgets()
        try:
            self._runtime.run(self._start(wanted))
        except BaseException:
            self._discard()
            raise
        self._remove_hook = manager.on_wait_end(self._after_wait)

    # -- widgets -----------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # The widgets (board.counts_html, board.rows, board.filter_states...) read
        # as the board's own attributes: tests and users inspect their traits.
        if name in BoardWidgets.PUBLIC and "_ui" in self.__dict__:
            return getattr(self._ui, name)
        msg = f"{type(self).__name__!r} object has no attribute {name!r}"
        raise AttributeError(msg)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *BoardWidgets.PUBLIC})

    def _connect_widgets(self) -> None:
        ui = self._ui
        for widget in (
            ui.filter_group,
            ui.filter_states,
            ui.filter_name,
            ui.filter_text,
            ui.sort_by,
            ui.sort_order,
        ):
            widget.observe(self._on_widget_value, names="value")
        ui.prev_button.on_click(lambda _: self._from_widget(self._turn, -1))
        ui.next_button.on_click(lambda _: self._from_widget(self._turn, 1))
        actions = self._actions
        ui.detail_close.on_click(lambda _: self._from_widget(actions.hide_detail))
        actions.connect()

    # -- widget events (kernel thread) -> runtime thread -------------------------------

    def _on_widget_value(self, change: dict[str, Any]) -> None:
        if self._runtime.in_runtime_thread() or self._closed:
            return  # our own render set it
        if not self._widget_event:
            self._widget_event = True
            self._runtime.call_soon(self._apply_widget_values)

    def _from_widget(self, fn: Callable[..., Any], *args: Any) -> None:
        if not self._closed:
            self._runtime.call_soon(self._guarded, fn, *args)

    def _guarded(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self._actions.report(exc)

    # -- calls from any thread ---------------------------------------------------------

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the runtime thread and return its value."""
        if self._runtime.in_runtime_thread():
            return fn(*args)

        async def call() -> T:
            return fn(*args)

        return self._runtime.run(call())

    def _check_open(self) -> None:
        if self._closed:
            msg = "this board is closed; make a new one with tm.board()"
            raise IcijNbError(msg)

    # -- life (runtime thread) ---------------------------------------------------------

    async def _start(self, wanted: dict[str, Any]) -> None:
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = self._manager.subscribe(self._on_tasks)
        frame = await self._manager.frame_async()
        # This session's records: the table shares their ids, args and results.
        live = {t.id: t for t in self._manager.live_tasks()}
        self._table.load_frame(frame, live)
        self._pending.start(self._loop)
        self._filters = self._checked_filters(wanted)
        self._apply_pending()
        self._ui.show_filters(self._filters, self._sort, self._known_groups())
        self._refresh_now(force_view=True)
        self._tick_handle = self._loop.call_later(_WORKERS_EVERY_S, self._tick)

    def _tick(self) -> None:
        """Render again when the live workers change (no task event tells)."""
        if self._closed:
            return
        self._tick_handle = self._loop.call_later(_WORKERS_EVERY_S, self._tick)
        try:
            workers = self._workers
            if self._count_workers() != workers:
                self._refresh_now()
        except Exception:
            logger.exception("task board: counting workers failed")

    def _discard(self) -> None:
        self._closed = True
        self._pending.close()
        if self._unsubscribe is not None:
            self._unsubscribe()
        for widget in self._ui.all():
            widget.close()

    def close(self) -> None:
        """Stop updating and close the widgets; safe to call twice."""
        if self._closed:
            return
        self._remove_hook()
        self._call(self._close)

    def _close(self) -> None:
        if self._closed:
            return
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        self._actions.close()
        self._discard()

    # -- changes from the manager (runtime thread) -------------------------------------

    def _on_tasks(self, tasks: list[Task]) -> None:
        if not self._closed:
            self._pending.add(tasks)

    def _apply_pending(self, limit: int | None = None) -> bool:
        tasks = self._pending.take(limit)
        if not tasks:
            return False
        self._table.upsert(tasks)
        self._actions.update_detail(tasks)
        return True

    def _refresh_now(
        self, *, force_view: bool = False, limit: int | None = None
    ) -> None:
        cpu = time.thread_time()
        self._pending.refreshed(self._loop.time())
        self._count_workers()
        if self._apply_pending(limit) or force_view:
            mask = self._table.select(self._filters)
            column, ascending = self._sort
            self._view = self._table.order(mask, column, ascending=ascending)
        self._render()
        self._refresh_cpu_s.append(time.thread_time() - cpu)

    # -- filters, sort, paging (runtime thread) ----------------------------------------

    def _known_groups(self) -> list[str]:
        groups = set(self._manager.app.groups) | {
            g for g in self._table.group_names() if g is not None
        }
        return sorted(groups)

    def _checked_filters(self, wanted: dict[str, Any]) -> Filters:
        group = wanted.get("group", self._filters.group)
        check_group(group, self._known_groups())
        old = self._filters
        return Filters(
            group=group,
            states=wanted.get("states", old.states),
            name=wanted.get("name", old.name),
            text=wanted.get("text", old.text),
        )

    def _set_filters(self, wanted: dict[str, Any]) -> None:
        self._check_open()
        self._filters = self._checked_filters(wanted)
        self._page = 0
        self._ui.show_filters(self._filters, self._sort, self._known_groups())
        self._refresh_now(force_view=True)

    def _apply_widget_values(self) -> None:
        self._widget_event = False
        if self._closed:
            return
        self._filters, self._sort = self._ui.read()
        self._page = 0
        self._refresh_now(force_view=True)

    def _set_sort(self, column: str, ascending: bool) -> None:
        self._check_open()
        self._sort = (column, ascending)
        self._ui.show_filters(self._filters, self._sort, self._known_groups())
        self._refresh_now(force_view=True)

    @property
    def page_count(self) -> int:
        """How many pages the filtered rows fill (at least 1)."""
        return page_count(len(self._view), self._page_size)

    def _turn(self, step: int) -> int:
        self._page = min(max(self._page + step, 0), self.page_count - 1)
        self._refresh_now()
        return self._page

    def _goto(self, page: int) -> None:
        self._check_open()
        if not 0 <= page < self.page_count:
            msg = f"page {page} does not exist; pages are 0 to {self.page_count - 1}"
            raise InvalidFilter(msg)
        self._page = page
        self._refresh_now()

    # -- rendering (runtime thread) ----------------------------------------------------

    def _render(self) -> None:
        self._page = min(self._page, self.page_count - 1)
        state = PageState(
            self._view, self._page, self._page_size, self._filters, self._sort
        )
        self._display.render(
            self._table,
            state,
            workers=self._workers,
            known_groups=self._known_groups(),
            can_send=self._manager.can_act,
            waiting_for_broker=self._manager.waiting_for_broker,
        )

    def _count_workers(self) -> dict[str | None, int] | None:
        """Live workers per group, as ``tm.workers()`` counts them (None: none yet)."""
        self._workers = self._manager.live_workers()
        return self._workers

    # -- public API --------------------------------------------------------------------

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return (
            f"<TaskBoard{state} {self._manager.app.name!r} tasks={self._table.n} "
            f"shown={len(self._view)} page={self._page + 1}/{self.page_count}"
            f"{' ' + self._filters.describe() if self._filters.describe() else ''}>"
        )

    @property
    def frame(self) -> pd.DataFrame:
        """What the board shows, as a DataFrame: filtered and sorted, every page.

        Its columns are those of ``tm.frame()`` (:data:`icij_nb.FRAME_COLUMNS`);
        reading it first applies pending changes, so it matches the widgets.
        """

        def read() -> pd.DataFrame:
            if not self._closed and self._pending:
                self._refresh_now()
            frame = self._table.frame(self._view)
            if self._manager.waiting_for_broker:
                mark_waiting(frame, self._manager.waits_for_broker)
            return frame

        return self._call(read)

    @property
    def filters(self) -> Filters:
        """The filters in force."""
        return self._filters

    @property
    def page(self) -> int:
        """The page shown, counted from 0."""
        return self._page

    @page.setter
    def page(self, page: int) -> None:
        self._call(self._goto, check_int("page", page))

    def next_page(self) -> int:
        """Show the next page (the last one stays); return the page shown."""
        self._check_open()
        return self._call(self._turn, 1)

    def prev_page(self) -> int:
        """Show the previous page (the first one stays); return the page shown."""
        self._check_open()
        return self._call(self._turn, -1)

    def set_filter(
        self,
        *,
        group: str | None = KEEP,
        states: Iterable[str | TaskState] | str | TaskState | None = KEEP,
        name: str | None = KEEP,
        text: str | None = KEEP,
    ) -> None:
        """Change some filters; the others stay. None clears one.

        Raises:
            InvalidFilter: an unknown state or group; the message lists valid ones.

        Example:
            board.set_filter(states=["ERROR"], text="timeout")
        """
        wanted = filter_changes(group=group, states=states, name=name, text=text)
        self._call(self._set_filters, wanted)

    def sort(self, column: str, ascending: bool = True) -> None:
        """Sort the rows by ``column`` (ties keep creation order; missing last).

        Raises:
            InvalidFilter: not a sortable column; the message lists them.
        """
        if column not in SORT_COLUMNS:
            valid = ", ".join(SORT_COLUMNS)
            msg = f"cannot sort by {column!r}; sortable columns: {valid}"
            raise InvalidFilter(msg)
        self._call(self._set_sort, column, bool(ascending))

    def refresh(self) -> None:
        """Apply pending changes and render now (the board also does it by itself)."""
        self._check_open()
        self._call(self._refresh_now)

    def cancel(self, task: str | TaskHandle) -> None:
        """Cancel one task, as ``tm.cancel`` does.

        Raises:
            InvalidTransition: the task is already DONE, ERROR or CANCELLED.
        """
        self._runtime.run(self._actions.cancel(_task_id(task)))

    def retry(self, task: str | TaskHandle) -> None:
        """Run an ERROR or CANCELLED task again, as ``tm.retry`` does.

        Raises:
            InvalidTransition: the task is not ERROR or CANCELLED.
        """
        self._runtime.run(self._actions.retry(_task_id(task)))

    def cancel_group(self, group: str | None) -> int:
        """Cancel every CREATED, QUEUED or RUNNING task of ``group``.

        Returns:
            How many cancels were sent.
        """
        return self._runtime.run(self._actions.cancel_group(group))

    def retry_failed(self, group: str | None) -> int:
        """Queue again every ERROR task of ``group``; return how many."""
        return self._runtime.run(self._actions.retry_failed(group))

    def show_detail(self, task: str | TaskHandle) -> None:
        """Show one task's fields, args, result and every error with its trace.

        Raises:
            UnknownTask: no task with that id.
        """
        self._runtime.run(self._actions.show_detail(_task_id(task)))

    def hide_detail(self) -> None:
        """Close the detail view."""
        self._call(self._actions.hide_detail)

    def timeline(self, **options: Any) -> Timeline:
        """The timeline of what the board shows (its filters), as a static image.

        The options are those of :func:`icij_nb.timeline` (docs/board.md).
        """
        return timeline(self.frame, **options)

    # -- display -----------------------------------------------------------------------

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> dict[str, Any]:
        if not self._closed and not self._runtime.in_runtime_thread():
            self.refresh()
        live = None if self._closed else self.widget._repr_mimebundle_()
        return self._display.bundle(live)

    def _ipython_display_(self) -> None:
        self._display.show(self._repr_mimebundle_())

    def _after_wait(self) -> None:
        """Called by the manager when a blocking wait ends: show the final state."""
        if self._closed or self._runtime.in_runtime_thread():
            return
        self.refresh()
        self._display.update(self._repr_mimebundle_)


def _task_id(task: str | TaskHandle) -> str:
    return task.id if isinstance(task, TaskHandle) else task
