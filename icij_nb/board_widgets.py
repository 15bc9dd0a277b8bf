"""BoardWidgets: the widget tree of a task board, and the trait values it shows.

Built once, in the thread that makes the board; afterwards only the runtime thread
sets traits (through the ``show_*`` methods), with values from
:mod:`icij_nb.board_html`. The tree, top to bottom::

    counts_html                         totals; per group: progress bar, counts, workers
    filters | states | sort | group actions
    status_html                         the outcome of the last action
    header_html, message_html, rows     the page: one BoardRow per slot (page_size)
    prev_button, page_label, next_button
    detail_box (detail_close, detail_html)

Every widget a test or a browser looks for carries a CSS class (``icij-nb-...``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import ipywidgets as widgets

from icij_nb import board_html as H
from icij_nb.board_table import SORT_COLUMNS, Filters
from icij_nb.model import TaskState

ALL_GROUPS: Final = ""
CANCELLABLE: Final = frozenset({TaskState.CREATED, TaskState.QUEUED, TaskState.RUNNING})
RETRYABLE: Final = frozenset({TaskState.ERROR, TaskState.CANCELLED})
_STATES: Final = list(TaskState)


def _button(description: str, css: str, tooltip: str, width: str) -> widgets.Button:
    button = widgets.Button(
        description=description,
        tooltip=tooltip,
        disabled=True,
        layout=widgets.Layout(width=width, height="24px", padding="0 4px"),
    )
    button.add_class(css)
    return button


class BoardRow:
    """The widgets of one row slot of the page: its cells and its three buttons.

    ``task_id`` is the task the slot shows now (None when the slot is unused).
    """

    def __init__(self) -> None:
        self.task_id: str | None = None
        self.html = widgets.HTML(
            layout=widgets.Layout(width=f"{H.ROW_WIDTH}px", flex="0 0 auto")
        )
        self.html.add_class("icij-nb-row-cells")
        self.cancel_button = _button("cancel", "icij-nb-cancel", "cancel", "56px")
        self.retry_button = _button("retry", "icij-nb-retry", "retry", "44px")
        self.detail_button = _button("details", "icij-nb-details", "details", "56px")
        for button in (self.cancel_button, self.retry_button, self.detail_button):
            button.style.font_size = "11px"
            button.layout.flex = "0 0 auto"
        self.box = widgets.HBox(
            [self.html, self.cancel_button, self.retry_button, self.detail_button],
            layout=widgets.Layout(display="none", flex_flow="row nowrap"),
        )
        self.box.add_class("icij-nb-row")

    def show(self, row: dict[str, Any] | None, *, can_send: bool) -> None:
        """Show a task (a :meth:`BoardTable.row` dict), or hide the slot (None)."""
        if row is None:
            self.task_id = None
            self.html.value = ""  # a hidden slot must not keep a stale row
            self.box.layout.display = "none"
            return
        state: TaskState = row["state"]
        self.task_id = row["id"]
        self.html.value = H.row_html(row)
        self.cancel_button.disabled = not (can_send and state in CANCELLABLE)
        self.retry_button.disabled = not (can_send and state in RETRYABLE)
        self.detail_button.disabled = False
        self.box.layout.display = "flex"

    @property
    def widgets(self) -> list[widgets.Widget]:
        return [
            self.html,
            self.cancel_button,
            self.retry_button,
            self.detail_button,
            self.box,
        ]


class BoardWidgets:
    """Every widget of a board (see the module docstring for the layout)."""

    #: the widgets a TaskBoard exposes as its own attributes
    PUBLIC: Final = frozenset(
        {
            "counts_html", "filter_group", "filter_states", "filter_name",
            "filter_text", "sort_by", "sort_order", "cancel_group_button",
            "retry_group_button", "status_html", "header_html", "message_html",
            "rows", "prev_button", "next_button", "page_label", "detail_html",
            "detail_close", "detail_box",
        }
    )  # fmt: skip

    def __init__(self, page_size: int) -> None:
        small = widgets.Layout(width="260px")
        self.counts_html = widgets.HTML()
        self.filter_group = widgets.Dropdown(
            options=[("all groups", ALL_GROUPS)], description="group", layout=small
        )
        self.filter_states = widgets.SelectMultiple(
            options=[s.value for s in TaskState],
            rows=6,
            description="states",
            layout=widgets.Layout(width="210px"),
        )
        self.filter_name = widgets.Text(
            description="name", placeholder="name contains…", layout=small
        )
        self.filter_text = widgets.Text(
            description="text", placeholder="in args, result, error…", layout=small
        )
        self.sort_by = widgets.Dropdown(
            options=list(SORT_COLUMNS), description="sort by", layout=small
        )
        self.sort_order = widgets.Dropdown(
            options=[("▲ ascending", True), ("▼ descending", False)],
            description="order",
            layout=small,
        )
        self.cancel_group_button = _button(
            "cancel group", "icij-nb-cancel-group", "", "260px"
        )
        self.retry_group_button = _button(
            "retry failed", "icij-nb-retry-group", "", "260px"
        )
        self.status_html = widgets.HTML()
        self.header_html = widgets.HTML()
        self.message_html = widgets.HTML()
        self.rows = [BoardRow() for _ in range(page_size)]
        self.prev_button = _button("◀ prev", "icij-nb-prev", "previous page", "80px")
        self.next_button = _button("next ▶", "icij-nb-next", "next page", "80px")
        self.page_label = widgets.HTML()
        self.detail_html = widgets.HTML()
        self.detail_close = _button("close", "icij-nb-detail-close", "", "60px")
        self.detail_close.disabled = False
        self.detail_box = widgets.VBox(
            [self.detail_close, self.detail_html],
            layout=widgets.Layout(display="none", border="1px solid #ddd"),
        )
        self._name_classes()
        self._lay_out()

    def _name_classes(self) -> None:
        for css, widget in (
            ("icij-nb-counts", self.counts_html),
            ("icij-nb-filter-group", self.filter_group),
            ("icij-nb-filter-states", self.filter_states),
            ("icij-nb-filter-name", self.filter_name),
            ("icij-nb-filter-text", self.filter_text),
            ("icij-nb-sort-by", self.sort_by),
            ("icij-nb-sort-order", self.sort_order),
            ("icij-nb-status", self.status_html),
            ("icij-nb-page", self.page_label),
            ("icij-nb-detail", self.detail_box),
        ):
            widget.add_class(css)

    def _lay_out(self) -> None:
        columns = [
            widgets.VBox([self.filter_group, self.filter_name, self.filter_text]),
            widgets.VBox([self.sort_by, self.sort_order]),
            widgets.VBox([self.cancel_group_button, self.retry_group_button]),
        ]
        controls = widgets.HBox(
            [columns[0], self.filter_states, columns[1], columns[2]]
        )
        table = widgets.VBox(
            [self.header_html, self.message_html, *(r.box for r in self.rows)],
            layout=widgets.Layout(overflow="auto"),
        )
        pager = widgets.HBox([self.prev_button, self.page_label, self.next_button])
        self.root = widgets.VBox(
            [
                self.counts_html,
                controls,
                self.status_html,
                table,
                pager,
                self.detail_box,
            ]
        )
        self.root.add_class("icij-nb-board")
        self._containers = [*columns, controls, table, pager, self.root]

    def all(self) -> list[widgets.Widget]:
        """Every widget, containers too (to close them)."""
        singles = [getattr(self, name) for name in sorted(self.PUBLIC - {"rows"})]
        return singles + [w for r in self.rows for w in r.widgets] + self._containers

    # -- filters and sort -------------------------------------------------------------

    def read(self) -> tuple[Filters, tuple[str, bool]]:
        """The filters and sort the widgets say (what a user typed or chose)."""
        states = frozenset(TaskState(v) for v in self.filter_states.value)
        filters = Filters(
            group=self.filter_group.value or None,
            states=states or None,
            name=self.filter_name.value.strip() or None,
            text=self.filter_text.value.strip() or None,
        )
        return filters, (self.sort_by.value, bool(self.sort_order.value))

    def show_filters(
        self, filters: Filters, sort: tuple[str, bool], groups: list[str]
    ) -> None:
        """Make the filter and sort widgets say what the board applies."""
        self.show_groups(groups)
        self.filter_group.value = filters.group or ALL_GROUPS
        self.filter_states.value = tuple(
            s.value for s in TaskState if filters.states and s in filters.states
        )
        self.filter_name.value = filters.name or ""
        self.filter_text.value = filters.text or ""
        self.sort_by.value, self.sort_order.value = sort

    def show_groups(self, groups: list[str]) -> None:
        """The group filter's choices (setting them would reset the choice)."""
        options = [("all groups", ALL_GROUPS)] + [(g, g) for g in groups]
        if list(self.filter_group.options) != options:
            value = self.filter_group.value
            self.filter_group.options = options
            self.filter_group.value = value if value in groups else ALL_GROUPS

    # -- the page -----------------------------------------------------------------

    def show_page(
        self,
        visible: Sequence[dict[str, Any]],
        *,
        can_send: bool,
        status: str,
        first: bool,
        last: bool,
    ) -> None:
        """Render the rows of the page, and the pager."""
        for index, slot in enumerate(self.rows):
            slot.show(
                visible[index] if index < len(visible) else None, can_send=can_send
            )
        self.page_label.value = (
            f'<span style="padding:0 8px;line-height:24px">{H.esc(status)}</span>'
        )
        self.prev_button.disabled = first
        self.next_button.disabled = last

    def show_group_buttons(
        self, group: str | None, counts: Sequence[int] | None, *, can_send: bool
    ) -> None:
        """Arm the group buttons for ``group`` (its counts per state), or not."""
        active = sum(counts[_STATES.index(s)] for s in CANCELLABLE) if counts else 0
        failed = counts[_STATES.index(TaskState.ERROR)] if counts else 0
        cancel, retry = self.cancel_group_button, self.retry_group_button
        if group is None:
            cancel.description, retry.description = "cancel group", "retry failed"
            tip = "choose a group in the group filter first"
            cancel.tooltip = retry.tooltip = tip
        else:
            cancel.description = f"cancel {active} queued/running of {group}"
            retry.description = f"retry {failed} failed of {group}"
            cancel.tooltip, retry.tooltip = cancel.description, retry.description
        cancel.disabled = not (can_send and active)
        retry.disabled = not (can_send and failed)

    # -- messages and details -------------------------------------------------------

    def say(self, text: str) -> None:
        self.status_html.value = f'<span style="color:#555">{H.esc(text)}</span>'

    def report(self, exc: BaseException) -> None:
        self.status_html.value = (
            f'<span class="icij-nb-error" style="color:#dc3545">'
            f"{H.esc(type(exc).__name__)}: {H.esc(exc)}</span>"
        )

    def show_detail(self, html: str) -> None:
        self.detail_html.value = html
        self.detail_box.layout.display = "flex"

    def hide_detail(self) -> None:
        self.detail_html.value = ""
        self.detail_box.layout.display = "none"
