"""BoardActions: what a TaskBoard does to tasks, and the detail view it opens.

It owns the board's actions on the manager's tasks through the read-only
:class:`~icij_nb.view.TaskView` (cancel and retry of one row, cancel of a group,
retry of a group's failures), the detail view of one task, the buttons that start
them and the messages they leave on the status line.

The actions run on the runtime thread. A click arrives on the kernel's thread and
starts its action there as an asyncio task that is kept referenced until it ends;
its error goes to the log and the status line (:meth:`BoardActions.report`). The
board passes in what the actions need of it as :class:`BoardHooks`, so this module
reads nothing of the board but those.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from icij_nb import board_html as H
from icij_nb.board_table import BoardTable
from icij_nb.board_widgets import CANCELLABLE, BoardRow, BoardWidgets
from icij_nb.errors import InvalidFilter, InvalidTransition
from icij_nb.model import Task, TaskState
from icij_nb.runtime import Runtime
from icij_nb.view import TaskView

logger = logging.getLogger(__name__)


def check_group(group: str | None, known: list[str]) -> None:
    """Refuse a group the board does not know.

    Raises:
        InvalidFilter: ``group`` is not one of ``known``; the message lists them.
    """
    if group is not None and group not in known:
        valid = ", ".join(repr(g) for g in known) or "none yet"
        msg = f"unknown group {group!r}; valid groups: {valid}"
        raise InvalidFilter(msg)


@dataclass(frozen=True)
class BoardHooks:
    """What the actions ask of their board, all called on the runtime thread.

    Attributes:
        closed: whether the board is closed (clicks on a closed board do nothing).
        check_open: raise if the board is closed.
        refresh: apply changes and render now; ``True`` recomputes the rows shown.
        apply_pending: file the changes the manager sent into the table.
        known_groups: the groups the board knows, sorted.
        current_group: the group filter in force (the group buttons act on it).
    """

    closed: Callable[[], bool]
    check_open: Callable[[], None]
    refresh: Callable[[bool], None]
    apply_pending: Callable[[], object]
    known_groups: Callable[[], list[str]]
    current_group: Callable[[], str | None]


class BoardActions:
    """Cancel, retry and detail actions of a board, and the buttons that start them.

    Args:
        view: the manager's tasks, read-only, and its async actions.
        runtime: the runtime thread the actions run on.
        ui: the board's widgets.
        table: the board's task table (to find a group's rows).
        hooks: what the actions ask of the board.
    """

    def __init__(
        self,
        view: TaskView,
        runtime: Runtime,
        ui: BoardWidgets,
        table: BoardTable,
        hooks: BoardHooks,
    ) -> None:
        self._view = view
        self._runtime = runtime
        self._ui = ui
        self._table = table
        self._hooks = hooks
        self._background: set[asyncio.Task[Any]] = set()
        #: the task the detail view shows (None: the view is closed)
        self.detail: Task | None = None

    def connect(self) -> None:
        """Wire the row and group buttons to the actions."""
        ui = self._ui
        ui.cancel_group_button.on_click(lambda _: self._group_action(cancel=True))
        ui.retry_group_button.on_click(lambda _: self._group_action(cancel=False))
        for row in ui.rows:
            row.cancel_button.on_click(self._row_action(row, "cancel"))
            row.retry_button.on_click(self._row_action(row, "retry"))
            row.detail_button.on_click(self._row_action(row, "detail"))

    # -- the actions (runtime thread) --------------------------------------------------

    async def cancel(self, task_id: str) -> None:
        """Cancel one task, then say so on the status line."""
        self._hooks.check_open()
        await self._view.cancel_async(task_id)
        self._hooks.refresh(False)
        self._ui.say(f"cancel sent for {task_id}")

    async def retry(self, task_id: str) -> None:
        """Queue one ERROR or CANCELLED task again, then say so."""
        self._hooks.check_open()
        await self._view.retry_async(task_id)
        self._hooks.refresh(False)
        self._ui.say(f"{task_id} queued again")

    async def cancel_group(self, group: str | None) -> int:
        """Cancel every CREATED, QUEUED or RUNNING task of ``group``; say how many."""
        done = await self._for_group(group, CANCELLABLE, cancel=True)
        self._ui.say(f"cancel sent for {done} task(s) of {H.group_label(group)}")
        return done

    async def retry_failed(self, group: str | None) -> int:
        """Queue again every ERROR task of ``group``; say how many."""
        done = await self._for_group(group, frozenset({TaskState.ERROR}), cancel=False)
        self._ui.say(f"{done} failed task(s) of {H.group_label(group)} queued again")
        return done

    async def _for_group(
        self, group: str | None, states: frozenset[TaskState], cancel: bool
    ) -> int:
        self._hooks.check_open()
        check_group(group, self._hooks.known_groups())
        self._hooks.apply_pending()
        done = 0
        for task_id in self._table.rows_in(group, states):
            try:
                if cancel:
                    await self._view.cancel_async(task_id)
                else:
                    await self._view.retry_async(task_id)
            except InvalidTransition:
                continue  # it moved on meanwhile (finished, or already retried)
            done += 1
        self._hooks.refresh(True)
        return done

    async def show_detail(self, task_id: str) -> None:
        """Open the detail view on one task."""
        self._hooks.check_open()
        task = await self._view.get_async(task_id)
        self.detail = task
        self._ui.show_detail(H.detail_html(task))

    def hide_detail(self) -> None:
        """Close the detail view."""
        self.detail = None
        self._ui.hide_detail()

    def update_detail(self, tasks: Iterable[Task]) -> None:
        """Show the latest state of the task in the detail view, if it changed."""
        detail = self.detail
        if detail is None:
            return
        for task in tasks:
            if task.id == detail.id:
                self.detail = task
                self._ui.show_detail(H.detail_html(task))

    # -- clicks (kernel thread) -> runtime thread --------------------------------------

    def _row_action(self, row: BoardRow, action: str) -> Callable[[Any], None]:
        def clicked(_: Any) -> None:
            task_id = row.task_id
            if task_id is None or self._hooks.closed():
                return
            if action == "cancel":
                self._spawn(self.cancel(task_id), f"cancel {task_id}")
            elif action == "retry":
                self._spawn(self.retry(task_id), f"retry {task_id}")
            else:
                self._spawn(self.show_detail(task_id), f"details of {task_id}")

        return clicked

    def _group_action(self, *, cancel: bool) -> None:
        group = self._hooks.current_group()
        if group is None or self._hooks.closed():
            return
        if cancel:
            self._spawn(self.cancel_group(group), f"cancel group {group}")
        else:
            self._spawn(self.retry_failed(group), f"retry failed of {group}")

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
            self.report(exc)

    def report(self, exc: BaseException) -> None:
        """Show an action's error on the status line (not once the board is closed)."""
        if not self._hooks.closed():
            self._ui.report(exc)
