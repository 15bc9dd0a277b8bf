"""HTML and text of the task board: rows, the counts header, the static snapshot.

Pure functions of plain values (a :meth:`BoardTable.row` dict, counts arrays), with
inline styles only, so the same HTML serves the live widgets and the static snapshot
that nbviewer, GitHub and papermill output notebooks show where widgets cannot
render. Every cell carries a class (``icij-nb-state``...) that tests and
browser automation can find.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from icij_nb.board_table import N_STATES, STATES, to_json
from icij_nb.handles import STATE_COLOURS
from icij_nb.model import ErrorRecord, Task, TaskState
from icij_nb.output import AttemptOutput

#: (key, title, width in px) of the row cells, in order
COLUMNS: Final = (
    ("id", "id", 130),
    ("name", "name", 90),
    ("group", "group", 64),
    ("state", "state", 86),
    ("progress", "progress", 108),
    ("attempts", "attempts", 84),
    ("worker", "worker", 96),
    ("created_at", "created", 72),
    ("started_at", "started", 72),
    ("completed_at", "completed", 84),
    ("duration_s", "duration", 70),
    ("preview", "result / error", 170),
)
#: the width of a row's cells, in px
ROW_WIDTH: Final = sum(width for _, _, width in COLUMNS) + 8
_CELL = (
    "display:inline-block;overflow:hidden;text-overflow:ellipsis;"
    "white-space:nowrap;vertical-align:middle;padding-right:6px;box-sizing:border-box"
)
_ROW = "display:flex;align-items:center;font-size:12px;line-height:26px"

#: previews are cut to this many characters (the frame keeps the whole value)
PREVIEW_CHARS: Final = 80
NO_GROUP: Final = "(no group)"
#: detail view: args and result are cut to this many characters
DETAIL_CHARS: Final = 20_000


def _json_chunks(value: Any, limit: int) -> Any:
    """JSON text of ``value`` in pieces, so a preview stops early on a big value."""
    if isinstance(value, dict):
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            yield ", " if i else ""
            yield to_json(str(key)[: limit + 1]) + ": "
            yield from _json_chunks(item, limit)
        yield "}"
    elif isinstance(value, list | tuple):
        yield "["
        for i, item in enumerate(value):
            yield ", " if i else ""
            yield from _json_chunks(item, limit)
        yield "]"
    elif isinstance(value, str):
        yield to_json(value[: limit + 1])
    else:
        yield to_json(value)


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """A one-line JSON text of a value, cut to ``limit`` characters with an ellipsis.

    Only the start of a big value is encoded; strings are shown as they are.
    """
    if isinstance(value, str):
        text = " ".join(value[: limit + 1].split())
    else:
        parts, size = [], 0
        for chunk in _json_chunks(value, limit):
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                break
        text = "".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def row_preview(row: dict[str, Any]) -> str:
    """A task's result, else its last error, cut short (empty when neither)."""
    result, error = row["result"], row["error"]
    if result is not None:
        return preview(result)
    if error is not None:
        return preview(error)
    return ""


def fmt_duration(seconds: float | None) -> str:
    """``0.25 s``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``; ``""`` for None."""
    if seconds is None or math.isnan(seconds):
        return ""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def group_label(group: str | None) -> str:
    return NO_GROUP if group is None else group


def _time(value: datetime | None) -> tuple[str, str]:
    if value is None:
        return "", ""
    return value.strftime("%H:%M:%S"), value.isoformat()


def bar(fraction: float, colour: str, width_px: int) -> str:
    """A CSS progress bar (no widget), for rows, groups and the snapshot."""
    pct = max(0.0, min(1.0, fraction)) * 100
    return (
        f'<span style="display:inline-block;width:{width_px}px;height:8px;'
        'background:#e9ecef;border-radius:4px;vertical-align:middle;overflow:hidden">'
        f'<span style="display:block;width:{pct:.1f}%;height:100%;'
        f'background:{colour}"></span></span>'
    )


def state_badge(state: TaskState) -> str:
    colour = STATE_COLOURS.get(state, "#888")
    return f'<b style="color:{colour}">{state.value}</b>'


def _cells(row: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Each column's (inner HTML, title) for one row."""
    state: TaskState = row["state"]
    progress = row["progress"]
    attempts = f"{row['attempts']}/{row['max_attempts']}"
    if state is not TaskState.DONE:
        attempts += f" · {row['retries_left']} left"
    shown = row_preview(row)
    cells = {
        "id": (esc(row["id"]), row["id"]),
        "name": (esc(row["name"]), row["name"]),
        "group": (esc(group_label(row["group"])), ""),
        "state": (state_badge(state), ""),
        "progress": (
            bar(progress, STATE_COLOURS.get(state, "#888"), 56) + f" {progress:.0%}",
            "",
        ),
        "attempts": (
            esc(attempts),
            "attempts made / allowed · retries left",
        ),
        "worker": (esc(row["worker"] or ""), row["worker"] or ""),
        "duration_s": (esc(fmt_duration(row["duration_s"])), ""),
        "preview": (esc(shown), (row["error"] or shown)[:500]),
    }
    for key in ("created_at", "started_at", "completed_at"):
        text, title = _time(row[key])
        cells[key] = (text, title)
    if row["error"] and state is not TaskState.DONE:
        text, title = cells["preview"]
        cells["preview"] = (f'<span style="color:#dc3545">{text}</span>', title)
    return cells


def row_html(row: dict[str, Any]) -> str:
    """One task as a line of fixed-width cells."""
    cells = _cells(row)
    parts = [
        f'<div class="icij-nb-cells" data-task-id="{esc(row["id"])}" style="{_ROW}">'
    ]
    for key, _title, width in COLUMNS:
        inner, title = cells[key]
        title_attr = f' title="{esc(title)}"' if title else ""
        parts.append(
            f'<span class="icij-nb-{key.removesuffix("_at").removesuffix("_s")}"'
            f'{title_attr} style="{_CELL};width:{width}px">{inner}</span>'
        )
    parts.append("</div>")
    return "".join(parts)


def header_html(sort_column: str, ascending: bool) -> str:
    """The column titles; the sorted column shows an arrow."""
    parts = [f'<div class="icij-nb-header" style="{_ROW};font-weight:bold">']
    for key, title, width in COLUMNS:
        arrow = (" ▲" if ascending else " ▼") if key == sort_column else ""
        parts.append(
            f'<span style="{_CELL};width:{width}px">{esc(title)}{arrow}</span>'
        )
    parts.append("</div>")
    return "".join(parts)


def counts_html(
    groups: Sequence[str | None],
    counts: Sequence[Sequence[int]],
    progress: Sequence[float],
    workers: dict[str | None, int] | None,
    *,
    stamp: datetime,
    waiting_for_broker: int = 0,
) -> str:
    """The header: totals, then one line per group.

    A group's line has its progress bar, counts per state and live workers
    (``workers`` None: the broker does not tell, shown as "?"). The totals say
    how many CREATED tasks wait in the outbox for the broker, if any.
    """
    totals = [sum(c[s] for c in counts) for s in range(N_STATES)]
    total = sum(totals)
    summary = " · ".join(
        f'<span style="color:{STATE_COLOURS[s]}">{s.value} {n}</span>'
        for s, n in zip(STATES, totals, strict=True)
        if n
    )
    head = (
        f'<div class="icij-nb-summary" style="font-size:13px;margin-bottom:4px">'
        f"<b>{total} task{'s' if total != 1 else ''}</b>"
        f"{' · ' + summary if summary else ''}"
        f"{_waiting_html(waiting_for_broker)}"
        f' <span style="color:#888;font-size:11px">(as of '
        f"{stamp.strftime('%H:%M:%S')} UTC)</span></div>"
    )
    if not groups:
        return head
    th = 'style="text-align:right;padding:0 6px"'
    cells = "".join(
        f'<th {th}><span style="color:{STATE_COLOURS[s]}">{s.value}</span></th>'
        for s in STATES
    )
    lines = [
        '<table class="icij-nb-groups" style="font-size:12px;border-collapse:collapse">'
        f'<tr><th style="text-align:left;padding:0 6px">group</th>'
        f'<th style="text-align:left;padding:0 6px">progress</th>{cells}'
        f"<th {th}>total</th><th {th}>workers</th></tr>"
    ]
    for group, row, fraction in zip(groups, counts, progress, strict=True):
        numbers = "".join(
            f'<td style="text-align:right;padding:0 6px">'
            f"{n if n else '<span style=color:#ccc>·</span>'}</td>"
            for n in row
        )
        alive = "?" if workers is None else str(workers.get(group, 0))
        colour = _group_colour(row)
        lines.append(
            f'<tr class="icij-nb-group" data-group="{esc(group_label(group))}">'
            f'<td style="padding:0 6px"><b>{esc(group_label(group))}</b></td>'
            f'<td style="padding:0 6px">{bar(fraction, colour, 160)} '
            f"{fraction:.0%}</td>{numbers}"
            f'<td style="text-align:right;padding:0 6px">{sum(row)}</td>'
            f'<td style="text-align:right;padding:0 6px">{alive}</td></tr>'
        )
    lines.append("</table>")
    return head + "".join(lines)


def waiting_text(waiting_for_broker: int) -> str:
    """``"700 waiting for the broker"``, or "" when none waits."""
    if not waiting_for_broker:
        return ""
    return f"{waiting_for_broker} waiting for the broker"


def _waiting_html(waiting_for_broker: int) -> str:
    if not waiting_for_broker:
        return ""
    title = (
        "CREATED, recorded in the store's outbox: no broker node took them; "
        "published once one answers"
    )
    return (
        f' · <span class="icij-nb-waiting" style="color:#b26a00" '
        f'title="{esc(title)}">⏳ {waiting_text(waiting_for_broker)}</span>'
    )


def _group_colour(row: Sequence[int]) -> str:
    by_state = dict(zip(STATES, row, strict=True))
    if by_state[TaskState.ERROR]:
        return STATE_COLOURS[TaskState.ERROR]
    if any(by_state[s] for s in STATES if not s.is_ready):
        return STATE_COLOURS[TaskState.RUNNING]
    return STATE_COLOURS[TaskState.DONE]


def message_html(text: str) -> str:
    style = "color:#666;padding:8px 0"
    return f'<div class="icij-nb-message" style="{style}">{esc(text)}</div>'


def snapshot_html(
    counts: str,
    status: str,
    rows: Sequence[dict[str, Any]],
    message: str,
    *,
    sort_column: str,
    ascending: bool,
) -> str:
    """The whole board as static HTML (what shows where widgets cannot render)."""
    body = message_html(message) if message else "".join(row_html(r) for r in rows)
    return (
        '<div class="icij-nb-board-static" style="overflow-x:auto">'
        f"{counts}"
        f'<div style="font-size:12px;color:#555;margin:4px 0">{esc(status)}</div>'
        f"{header_html(sort_column, ascending)}{body}</div>"
    )


def snapshot_text(
    groups: Sequence[str | None],
    counts: Sequence[Sequence[int]],
    progress: Sequence[float],
    status: str,
    rows: Sequence[dict[str, Any]],
    message: str,
    *,
    waiting_for_broker: int = 0,
) -> str:
    """The board as plain text, for consoles and ``text/plain``."""
    totals = [sum(c[s] for c in counts) for s in range(N_STATES)]
    summary = " ".join(
        f"{s.value}={n}" for s, n in zip(STATES, totals, strict=True) if n
    )
    waiting = waiting_text(waiting_for_broker)
    summary += f" ({waiting})" if waiting else ""
    lines = [f"TaskBoard: {sum(totals)} tasks {summary}".rstrip()]
    for group, row, fraction in zip(groups, counts, progress, strict=True):
        states = " ".join(
            f"{s.value}={n}" for s, n in zip(STATES, row, strict=True) if n
        )
        lines.append(f"  {group_label(group):<12} {fraction:>4.0%}  {states}")
    lines.append(status)
    if message:
        lines.append(message)
    for r in rows:
        lines.append(
            f"  {r['id'][:40]:<40} {r['name'][:16]:<16} {r['state'].value:<9} "
            f"{r['progress']:>4.0%}  {row_preview(r)[:40]}".rstrip()
        )
    return "\n".join(lines)


def _pre(text: str) -> str:
    return (
        '<pre style="white-space:pre-wrap;max-height:320px;overflow:auto;'
        f'background:#f8f9fa;padding:6px;font-size:12px">{esc(text)}</pre>'
    )


def _capped_json(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if len(text) > DETAIL_CHARS:
        text = (
            text[:DETAIL_CHARS]
            + f"\n… cut at {DETAIL_CHARS:,} of {len(text):,} characters; the "
            "whole value is in board.frame and tm.result(task_id)"
        )
    return text


def detail_html(task: Task, output: Sequence[AttemptOutput] = ()) -> str:
    """Everything about one task: fields, args, result, output, errors and traces."""
    fields = [
        ("name", task.name),
        ("group", group_label(task.group)),
        ("progress", f"{task.progress:.0%}"),
        ("attempts", f"{task.attempts} of {task.max_attempts} allowed"),
        ("worker", task.worker_id or ""),
        ("created", task.created_at.isoformat()),
        ("started", task.started_at.isoformat() if task.started_at else ""),
        ("completed", task.completed_at.isoformat() if task.completed_at else ""),
        ("duration", fmt_duration(task.duration_s)),
    ]
    rows = "".join(
        f'<tr><th style="text-align:left;padding-right:12px">{esc(k)}</th>'
        f"<td>{esc(v)}</td></tr>"
        for k, v in fields
    )
    parts = [
        '<div class="icij-nb-detail-body" style="font-size:12px">',
        f"<b>Task <code>{esc(task.id)}</code></b> {state_badge(task.state)}",
        f'<table style="font-size:12px">{rows}</table>',
        "<b>args</b>",
        _pre(_capped_json(task.args)),
    ]
    if task.has_result:
        parts += ["<b>result</b>", _pre(_capped_json(task.result))]
    for number, attempt in enumerate(output, 1):
        parts.append(
            f"<b>output of attempt {number}</b> on {esc(attempt.worker_id)}"
            f"{'' if attempt.final else ' (so far)'}"
        )
        parts.append(_pre(attempt.text or "(nothing)"))
    if task.errors:
        parts.append(f"<b>errors ({len(task.errors)}, oldest first)</b>")
        parts += [_error_block(i, e) for i, e in enumerate(task.errors, 1)]
    else:
        parts.append('<div style="color:#666">no error recorded</div>')
    parts.append("</div>")
    return "".join(parts)


def _error_block(number: int, error: ErrorRecord) -> str:
    return (
        f'<div class="icij-nb-error">attempt {number}, '
        f"{esc(error.created_at.isoformat())}: "
        f'<b style="color:#dc3545">{esc(error.name)}</b> {esc(error.message)}'
        f"{_pre(error.format())}</div>"
    )
