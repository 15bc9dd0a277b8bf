"""TextProgress: one progress line per group while a cell or a script blocks in a wait.

For places without widgets (a papermill run, a plain Python script, the CLI), a
blocking wait that lasts longer than :data:`DELAY_S` shows, for each group of the
tasks it waits for, one line in tqdm's style, never one bar per task::

    cpu  ██████████░░░░░░░░░░  52%  52/100  [00:04<00:03, 12.4 tasks/s]

- in a notebook kernel: a display updated in place (``text/plain``), so the saved
  notebook holds the last state, and no widget is needed;
- in a terminal (stderr is a TTY): the lines are rewritten in place on stderr;
- anywhere else (output piped to a file, a CI log): nothing.

It reads task records without I/O, from the waiting thread, at most every
:data:`EVERY_S`.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, Final, TextIO

#: a wait shorter than this shows nothing
DELAY_S: Final = 0.5
#: the least time between two redraws
EVERY_S: Final = 0.5
_WIDTH: Final = 20

#: per group: (finished, total)
Counts = dict[str | None, tuple[int, int]]


def progress_line(group: str | None, done: int, total: int, elapsed_s: float) -> str:
    """One group's line: bar, percent, done/total, elapsed<ETA, rate."""
    fraction = done / total if total else 1.0
    filled = round(fraction * _WIDTH)
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else None
    bar = "█" * filled + "░" * (_WIDTH - filled)
    label = group if group is not None else "(no group)"
    return (
        f"{label}  {bar} {fraction:4.0%}  {done}/{total}  "
        f"[{_clock(elapsed_s)}<{_clock(eta)}, {rate:.1f} tasks/s]"
    )


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class TextProgress:
    """The progress lines of one blocking wait.

    Args:
        counts: finished and total tasks per group, now.
        kernel: True in a notebook kernel (a display updated in place).
        stream: the terminal to write to otherwise (None: show nothing).
    """

    def __init__(
        self,
        counts: Callable[[], Counts],
        *,
        kernel: bool,
        stream: TextIO | None,
    ) -> None:
        self._counts = counts
        self._kernel, self._stream = kernel, stream
        self._started = time.monotonic()
        self._next = self._started + DELAY_S
        self._display_id: str | None = None
        self._lines = 0

    @classmethod
    def for_here(cls, counts: Callable[[], Counts]) -> TextProgress | None:
        """A progress for this place: a kernel, a terminal, or None."""
        ipython = sys.modules.get("IPython")
        shell = ipython.get_ipython() if ipython is not None else None
        if getattr(shell, "kernel", None) is not None:
            return cls(counts, kernel=True, stream=None)
        stream = sys.__stderr__
        if stream is not None and stream.isatty():
            return cls(counts, kernel=False, stream=stream)
        return None

    def tick(self) -> None:
        """Redraw if it is time."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + EVERY_S
        self._draw(now)

    def close(self) -> None:
        """Draw the last state (only if anything was shown)."""
        if self._display_id is not None or self._lines:
            self._draw(time.monotonic())
        if self._stream is not None and self._lines:
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, now: float) -> None:
        elapsed = now - self._started
        counts = self._counts()
        lines = [
            progress_line(group, done, total, elapsed)
            for group, (done, total) in sorted(counts.items(), key=_group_key)
        ]
        if not lines:
            return
        text = "\n".join(lines)
        if self._kernel:
            self._show(text)
        elif self._stream is not None:
            up = f"\x1b[{self._lines - 1}F" if self._lines > 1 else "\r"
            self._stream.write((up if self._lines else "") + "\x1b[J" + text)
            self._stream.flush()
            self._lines = len(lines)

    def _show(self, text: str) -> None:
        from IPython.display import display, update_display

        bundle: dict[str, Any] = {"text/plain": text}
        show: Any = display if self._display_id is None else update_display
        if self._display_id is None:
            self._display_id = f"icij-nb-progress-{uuid.uuid4().hex}"
        # Marked, so that readers of a saved notebook can tell it from the
        # cell's own output.
        show(bundle, raw=True, metadata=PROGRESS_METADATA, display_id=self._display_id)


#: the metadata of a progress display in a notebook's outputs
PROGRESS_METADATA: Final = {"icij_nb": {"progress": True}}


def _group_key(item: tuple[str | None, Any]) -> str:
    return item[0] or ""
