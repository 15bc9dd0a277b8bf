"""BoardDisplay: how a TaskBoard's page reaches the screen, live and static.

It owns the rendering of one page of a board (counts per group, the header, the
rows, the status line and the message) into the board's widgets, and the static
snapshot of that render (HTML and text) that the display bundle carries where
widgets cannot render (nbviewer, GitHub, a papermill output notebook). It also
owns the board's display id, so that a blocking wait that ends can update the
output a cell already shows (``update_display``).

The board decides *what* to show (its :class:`PageState`: filtered rows, page,
filters, sort) on the runtime thread and hands it here; nothing in this module
reads the manager or the task table's changes.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from icij_nb import board_html as H
from icij_nb.board_table import BoardTable, Filters
from icij_nb.board_widgets import BoardWidgets
from icij_nb.model import utcnow

EMPTY_MESSAGE: Final = "No tasks yet: submit some with tm.submit(...)"


def page_count(rows: int, page_size: int) -> int:
    """How many pages ``rows`` rows fill (at least 1)."""
    return max(1, -(-rows // page_size))


@dataclass(frozen=True)
class PageState:
    """What a board shows: its filtered, sorted rows and the page among them."""

    view: npt.NDArray[np.int64]
    page: int
    page_size: int
    filters: Filters
    sort: tuple[str, bool]

    @property
    def page_count(self) -> int:
        return page_count(len(self.view), self.page_size)


class BoardDisplay:
    """Renders a board's page into its widgets and keeps the static snapshot.

    Args:
        ui: the board's widgets.
    """

    def __init__(self, ui: BoardWidgets) -> None:
        self._ui = ui
        #: the static HTML and text of the last render
        self.html = ""
        self.text = ""
        self._display_id = f"icij-nb-board-{uuid.uuid4().hex}"
        self._shown = False
        self._displayed_html = ""

    # -- rendering (runtime thread) ----------------------------------------------------

    def render(
        self,
        table: BoardTable,
        state: PageState,
        *,
        workers: dict[str | None, int] | None,
        known_groups: list[str],
        can_send: bool,
        waiting_for_broker: int = 0,
    ) -> None:
        """Show ``state``'s page in the widgets and keep its static snapshot.

        ``waiting_for_broker``: how many CREATED tasks wait in the outbox.
        """
        start = state.page * state.page_size
        visible = [
            table.row(int(r)) for r in state.view[start : start + state.page_size]
        ]
        counts_html, groups, counts, progress = self._render_counts(
            table, workers, known_groups, waiting_for_broker
        )
        message = _message(table, state)
        status = _status_line(state, start, len(visible))
        ui = self._ui
        ui.message_html.value = H.message_html(message) if message else ""
        ui.header_html.value = H.header_html(*state.sort)
        ui.show_page(
            visible,
            can_send=can_send,
            status=status,
            first=state.page == 0,
            last=state.page >= state.page_count - 1,
        )
        group = state.filters.group
        by_group = dict(zip(groups, counts, strict=True))
        ui.show_group_buttons(group, by_group.get(group), can_send=can_send)
        self.html = H.snapshot_html(
            counts_html, status, visible, message,
            sort_column=state.sort[0], ascending=state.sort[1],
        )  # fmt: skip
        self.text = H.snapshot_text(
            groups, counts, progress, status, visible, message,
            waiting_for_broker=waiting_for_broker,
        )  # fmt: skip

    def _render_counts(
        self,
        table: BoardTable,
        workers: dict[str | None, int] | None,
        known_groups: list[str],
        waiting_for_broker: int,
    ) -> tuple[str, list[str | None], list[list[int]], list[float]]:
        all_counts = table.counts()
        all_progress = table.group_progress()
        groups = table.group_names()
        codes = [table.groups.find(g) for g in groups]
        counts = [all_counts[c].tolist() for c in codes if c is not None]
        progress = [float(all_progress[c]) for c in codes if c is not None]
        html = H.counts_html(
            groups, counts, progress, workers,
            stamp=utcnow(), waiting_for_broker=waiting_for_broker,
        )  # fmt: skip
        self._ui.counts_html.value = html
        self._ui.show_groups(known_groups)
        return html, groups, counts, progress

    # -- display (kernel thread) -------------------------------------------------------

    def bundle(self, widget_bundle: dict[str, Any] | None) -> dict[str, Any]:
        """The display bundle: the widget's own (if live), then the snapshot."""
        bundle: dict[str, Any] = dict(widget_bundle or {})
        bundle["text/plain"] = self.text
        bundle["text/html"] = self.html
        return bundle

    def show(self, bundle: dict[str, Any]) -> None:
        """Display ``bundle`` under the board's display id."""
        from IPython.display import display

        # IPython's display functions have no annotations.
        display(bundle, raw=True, display_id=self._display_id)  # type: ignore[no-untyped-call]
        self._shown = True
        self._displayed_html = self.html

    def update(self, make_bundle: Callable[[], dict[str, Any]]) -> None:
        """Update the displayed output if the snapshot changed since it was shown.

        Only from the kernel's main thread, in IPython, once the board was shown.
        """
        if not self._shown or threading.current_thread() is not threading.main_thread():
            return
        if self.html == self._displayed_html:
            return
        from IPython import get_ipython
        from IPython.display import update_display

        if get_ipython() is None:
            return
        bundle = make_bundle()
        # IPython's display functions have no annotations.
        update_display(bundle, raw=True, display_id=self._display_id)  # type: ignore[no-untyped-call]
        self._displayed_html = self.html


def _message(table: BoardTable, state: PageState) -> str:
    if table.n == 0:
        return EMPTY_MESSAGE
    if len(state.view) == 0:
        return (
            f"No task matches the filters ({state.filters.describe()}); "
            f"{table.n} task(s) in all. Clear them with "
            "board.set_filter(group=None, states=None, name=None, text=None)."
        )
    return ""


def _status_line(state: PageState, start: int, shown: int) -> str:
    total = len(state.view)
    rows = f"rows {start + 1}-{start + shown} of {total}" if shown else "no rows"
    filters = state.filters.describe() or "no filter"
    column, ascending = state.sort
    order = "▲" if ascending else "▼"
    return (
        f"page {state.page + 1}/{state.page_count} · {rows} · {filters} · "
        f"sorted by {column} {order}"
    )
