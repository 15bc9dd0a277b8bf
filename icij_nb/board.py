"""TaskBoard: the live task table of a notebook, ``board = tm.board()``.

How it runs (see docs/board.md):

- **one thread owns it**: the board's state (a :class:`~icij_nb.board_table.BoardTable`,
  the filters, the sort, the page) lives on the runtime thread. The manager calls the
  board's listener there with snapshots of changed tasks; the listener only files
  them, and a timer on the runtime loop (``loop.call_later``) applies them and
  renders at most once every ``refresh_s``. Widgets are updated only by setting
  traits from that thread, so the board keeps moving while a cell blocks.
- **the public methods** (``set_filter``, ``sort``, ``frame``, ``cancel``...) run
  their work on the runtime thread and wait for it, so when they return the widgets
  show the result. Widget events (typing in a filter, clicking a button) arrive on
  the kernel's thread and are handed to the runtime thread without waiting.
- **where widgets cannot render** (nbviewer, GitHub, a papermill output notebook),
  the display bundle also carries static HTML and text of the last render. A
  blocking ``tm.gather``/``tm.wait``/``tm.result`` ends by refreshing every board of
  its manager and, from the kernel's main thread, updating the displayed output
  (``update_display``), so a notebook run to the end shows the final state.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final, TypeVar

import numpy as np
import pandas as pd

from icij_nb import board_html as H
from icij_nb.board_table import (
    KEEP,
    SORT_COLUMNS,
    BoardTable,
    Filters,
    check_board_options,
    check_int,
    filter_changes,
)
from icij_nb.board_widgets import CANCELLABLE, BoardRow, BoardWidgets
from icij_nb.errors import IcijNbError, InvalidFilter, InvalidTransition
from icij_nb.handles import TaskHandle
from icij_nb.model import Task, TaskState, utcnow
from icij_nb.view import TaskView

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: how often the board counts live workers (from their heartbeats)
_WORKERS_EVERY_S: Final = 2.0
EMPTY_MESSAGE: Final = "No tasks yet: submit some with tm.submit(...)"
#: task changes a timed refresh applies at most; a burst (a map of 100,000 tasks)
#: is applied over several refreshes, so the runtime loop is never held for long
_CHANGES_PER_REFRESH: Final = 2_000


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
        InvalidFilter: an unknown state or group (the message lists the valid ones),
            or a bad ``page_size``/``refresh_s``.

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
        self._refresh_s = float(refresh_s)
        self._table = BoardTable()
        self._filters = Filters()
        self._sort: tuple[str, bool] = ("created_at", True)
        self._page = 0
        self._view = np.zeros(0, dtype=np.int64)
        self._pending: dict[str, Task] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._last_refresh = float("-inf")
        self._workers: dict[str | None, int] | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._widget_event = False
        self._detail: Task | None = None
        self._closed = False
        self._loading = True  # changes wait in _pending until the first load
        self._unsubscribe: Callable[[], None] | None = None
        self._display_id = f"icij-nb-board-{uuid.uuid4().hex}"
        self._shown = False
        self._html = self._text = self._displayed_html = ""
        #: CPU seconds of the runtime thread per refresh (the last 1,000)
        self._refresh_cpu_s: collections.deque[float] = collections.deque(maxlen=1000)
        self._ui = BoardWidgets(page_size)
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
        ui.detail_close.on_click(lambda _: self._from_widget(self._hide_detail))
        ui.cancel_group_button.on_click(lambda _: self._group_action(cancel=True))
        ui.retry_group_button.on_click(lambda _: self._group_action(cancel=False))
        for row in ui.rows:
            row.cancel_button.on_click(self._row_action(row, "cancel"))
            row.retry_button.on_click(self._row_action(row, "retry"))
            row.detail_button.on_click(self._row_action(row, "detail"))

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
            self._report(exc)

    def _row_action(self, row: BoardRow, action: str) -> Callable[[Any], None]:
        def clicked(_: Any) -> None:
            task_id = row.task_id
            if task_id is None or self._closed:
                return
            if action == "cancel":
                self._spawn(self._cancel(task_id), f"cancel {task_id}")
            elif action == "retry":
                self._spawn(self._retry(task_id), f"retry {task_id}")
            else:
                self._spawn(self._show_detail(task_id), f"details of {task_id}")

        return clicked

    def _group_action(self, *, cancel: bool) -> None:
        group = self._filters.group
        if group is None or self._closed:
            return
        if cancel:
            self._spawn(self._cancel_group(group), f"cancel group {group}")
        else:
            self._spawn(self._retry_failed(group), f"retry failed of {group}")

    def _spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        """Run an action started by a click; its error goes to the status line."""

        def start() -> None:
            task = asyncio.ensure_future(coro)
            self._background.add(task)
            task.add_done_callback(lambda t: self._spawned_done(t, what))

        self._runtime.call_soon(start)

    def _spawned_done(self, task: asyncio.Task[Any], what: str) -> None:
        self._background.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.warning("board: %s failed: %s", what, exc)
            self._report(exc)

    def _report(self, exc: BaseException) -> None:
        if not self._closed:
            self._ui.report(exc)

    def _say(self, text: str) -> None:
        self._ui.say(text)

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
        self._loading = False
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
        for handle in (self._timer, self._tick_handle):
            if handle is not None:
                handle.cancel()
        self._timer = self._tick_handle = None
        self._discard()

    # -- changes from the manager (runtime thread) -------------------------------------

    def _on_tasks(self, tasks: list[Task]) -> None:
        if self._closed:
            return
        pending = self._pending
        for task in tasks:
            pending[task.id] = task
        if self._timer is None and not self._loading:
            delay = max(0.0, self._last_refresh + self._refresh_s - self._loop.time())
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        try:
            self._refresh_now(limit=_CHANGES_PER_REFRESH)
        except Exception:
            logger.exception("task board refresh failed")
        if self._pending and not self._closed:
            self._timer = self._loop.call_later(0, self._on_timer)  # the rest

    def _apply_pending(self, limit: int | None = None) -> bool:
        pending = self._pending
        if not pending:
            return False
        if limit is None or len(pending) <= limit:
            tasks, self._pending = list(pending.values()), {}
        else:  # the oldest changes first
            tasks = [pending.pop(k) for k in list(itertools.islice(pending, limit))]
        self._table.upsert(tasks)
        detail = self._detail
        if detail is not None:
            for task in tasks:
                if task.id == detail.id:
                    self._detail = task
                    self._ui.show_detail(H.detail_html(task))
        return True

    def _refresh_now(
        self, *, force_view: bool = False, limit: int | None = None
    ) -> None:
        cpu = time.thread_time()
        self._last_refresh = self._loop.time()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
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
        if group is not None and group not in self._known_groups():
            valid = ", ".join(repr(g) for g in self._known_groups()) or "none yet"
            msg = f"unknown group {group!r}; valid groups: {valid}"
            raise InvalidFilter(msg)
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
        return max(1, -(-len(self._view) // self._page_size))

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
        table = self._table
        self._page = min(self._page, self.page_count - 1)
        start = self._page * self._page_size
        visible = [
            table.row(int(r)) for r in self._view[start : start + self._page_size]
        ]
        counts_html, groups, counts, progress = self._render_counts()
        message = self._message()
        status = self._status_line(start, len(visible))
        ui, can_send = self._ui, self._can_send()
        ui.message_html.value = H.message_html(message) if message else ""
        ui.header_html.value = H.header_html(*self._sort)
        ui.show_page(
            visible,
            can_send=can_send,
            status=status,
            first=self._page == 0,
            last=self._page >= self.page_count - 1,
        )
        group = self._filters.group
        by_group = dict(zip(groups, counts, strict=True))
        ui.show_group_buttons(group, by_group.get(group), can_send=can_send)
        self._html = H.snapshot_html(
            counts_html, status, visible, message,
            sort_column=self._sort[0], ascending=self._sort[1],
        )  # fmt: skip
        self._text = H.snapshot_text(groups, counts, progress, status, visible, message)

    def _render_counts(
        self,
    ) -> tuple[str, list[str | None], list[list[int]], list[float]]:
        table = self._table
        all_counts = table.counts()
        all_progress = table.group_progress()
        groups = table.group_names()
        codes = [table.groups.find(g) for g in groups]
        counts = [all_counts[c].tolist() for c in codes if c is not None]
        progress = [float(all_progress[c]) for c in codes if c is not None]
        html = H.counts_html(groups, counts, progress, self._workers, stamp=utcnow())
        self._ui.counts_html.value = html
        self._ui.show_groups(self._known_groups())
        return html, groups, counts, progress

    def _can_send(self) -> bool:
        return self._manager.can_act

    def _count_workers(self) -> dict[str | None, int] | None:
        """Live workers per group, as ``tm.workers()`` counts them (None: none yet)."""
        self._workers = self._manager.live_workers()
        return self._workers

    def _message(self) -> str:
        if self._table.n == 0:
            return EMPTY_MESSAGE
        if len(self._view) == 0:
            return (
                f"No task matches the filters ({self._filters.describe()}); "
                f"{self._table.n} task(s) in all. Clear them with "
                "board.set_filter(group=None, states=None, name=None, text=None)."
            )
        return ""

    def _status_line(self, start: int, shown: int) -> str:
        total = len(self._view)
        rows = f"rows {start + 1}-{start + shown} of {total}" if shown else "no rows"
        filters = self._filters.describe() or "no filter"
        column, ascending = self._sort
        order = "▲" if ascending else "▼"
        return (
            f"page {self._page + 1}/{self.page_count} · {rows} · {filters} · "
            f"sorted by {column} {order}"
        )

    # -- actions (runtime thread) ------------------------------------------------------

    async def _cancel(self, task_id: str) -> None:
        self._check_open()
        await self._manager.cancel_async(task_id)
        self._refresh_now()
        self._say(f"cancel sent for {task_id}")

    async def _retry(self, task_id: str) -> None:
        self._check_open()
        await self._manager.retry_async(task_id)
        self._refresh_now()
        self._say(f"{task_id} queued again")

    async def _for_group(
        self, group: str | None, states: frozenset[TaskState], cancel: bool
    ) -> int:
        self._check_open()
        if group is not None and group not in self._known_groups():
            valid = ", ".join(repr(g) for g in self._known_groups()) or "none yet"
            msg = f"unknown group {group!r}; valid groups: {valid}"
            raise InvalidFilter(msg)
        self._apply_pending()
        done = 0
        for task_id in self._table.rows_in(group, states):
            try:
                if cancel:
                    await self._manager.cancel_async(task_id)
                else:
                    await self._manager.retry_async(task_id)
            except InvalidTransition:
                continue  # it moved on meanwhile (finished, or already retried)
            done += 1
        self._refresh_now(force_view=True)
        return done

    async def _cancel_group(self, group: str | None) -> int:
        done = await self._for_group(group, CANCELLABLE, cancel=True)
        self._say(f"cancel sent for {done} task(s) of {H.group_label(group)}")
        return done

    async def _retry_failed(self, group: str | None) -> int:
        done = await self._for_group(group, frozenset({TaskState.ERROR}), cancel=False)
        self._say(f"{done} failed task(s) of {H.group_label(group)} queued again")
        return done

    async def _show_detail(self, task_id: str) -> None:
        self._check_open()
        task = await self._manager.get_async(task_id)
        self._detail = task
        self._ui.show_detail(H.detail_html(task))

    def _hide_detail(self) -> None:
        self._detail = None
        self._ui.hide_detail()

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
            return self._table.frame(self._view)

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
        self._runtime.run(self._cancel(_task_id(task)))

    def retry(self, task: str | TaskHandle) -> None:
        """Run an ERROR or CANCELLED task again, as ``tm.retry`` does.

        Raises:
            InvalidTransition: the task is not ERROR or CANCELLED.
        """
        self._runtime.run(self._retry(_task_id(task)))

    def cancel_group(self, group: str | None) -> int:
        """Cancel every CREATED, QUEUED or RUNNING task of ``group``.

        Returns:
            How many cancels were sent.
        """
        return self._runtime.run(self._cancel_group(group))

    def retry_failed(self, group: str | None) -> int:
        """Queue again every ERROR task of ``group``; return how many."""
        return self._runtime.run(self._retry_failed(group))

    def show_detail(self, task: str | TaskHandle) -> None:
        """Show one task's fields, args, result and every error with its trace.

        Raises:
            UnknownTask: no task with that id.
        """
        self._runtime.run(self._show_detail(_task_id(task)))

    def hide_detail(self) -> None:
        """Close the detail view."""
        self._call(self._hide_detail)

    # -- display -----------------------------------------------------------------------

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> dict[str, Any]:
        if not self._closed and not self._runtime.in_runtime_thread():
            self.refresh()
        bundle: dict[str, Any] = {}
        if not self._closed:
            bundle.update(self.widget._repr_mimebundle_() or {})
        bundle["text/plain"] = self._text
        bundle["text/html"] = self._html
        return bundle

    def _ipython_display_(self) -> None:
        from IPython.display import display

        bundle = self._repr_mimebundle_()
        # IPython's display functions have no annotations.
        display(bundle, raw=True, display_id=self._display_id)  # type: ignore[no-untyped-call]
        self._shown = True
        self._displayed_html = self._html

    def _after_wait(self) -> None:
        """Called by the manager when a blocking wait ends: show the final state."""
        if self._closed or self._runtime.in_runtime_thread():
            return
        self.refresh()
        if not self._shown or threading.current_thread() is not threading.main_thread():
            return
        if self._html == self._displayed_html:
            return
        from IPython import get_ipython
        from IPython.display import update_display

        if get_ipython() is None:
            return
        bundle = self._repr_mimebundle_()
        # IPython's display functions have no annotations.
        update_display(bundle, raw=True, display_id=self._display_id)  # type: ignore[no-untyped-call]
        self._displayed_html = self._html


def _task_id(task: str | TaskHandle) -> str:
    return task.id if isinstance(task, TaskHandle) else task
