"""Task output as data: the chunks workers send, and the bounded tail of an attempt.

A task's output is what it writes to stdout and stderr and what it logs while it
runs. It is not the task's state: it never goes through the ledger's state rules, and
it travels beside the events, coalesced like progress. Each line is tagged with its
stream, so the plain text reads in order:

    [stdout] loading 3 files
    [WARNING pipeline.ocr] page 2 is empty
    [stderr] Traceback (most recent call last): ...

Bounds (so that a task printing a gigabyte, with no newline, or binary junk, costs the
kernel a few kilobytes):

- an attempt keeps the **last** :data:`TAIL_CHARS` characters of its output (64 KiB
  of text); what was cut before them is counted and shown as one marker line
  ``[... N characters cut ...]``;
- one line longer than :data:`LINE_CHARS` keeps its last :data:`LINE_CHARS`
  characters, marked the same way;
- text is made printable: invalid UTF-8 (lone surrogates) and NUL become U+FFFD, and
  a carriage return keeps what follows it (a terminal progress bar keeps its last
  state).

Plain data and pure functions, no transport and no I/O.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from icij_nb.model import utcnow

#: characters of output an attempt keeps (its tail); older ones are cut and counted
TAIL_CHARS: Final = 65_536
#: characters one line keeps (its tail)
LINE_CHARS: Final = 8_192
#: the streams a line can come from (``log`` lines carry their level and logger)
STREAMS: Final = ("stdout", "stderr", "log")

_UNPRINTABLE = re.compile("[\x00\ud800-\udfff]")


def cut_marker(chars: int) -> str:
    """The line that stands for ``chars`` characters cut from an output."""
    return f"[... {chars:,} characters cut ...]"


def clean(text: str) -> str:
    """``text`` made printable: no lone surrogate, no NUL, no carriage return.

    A carriage return keeps only what follows it, as a terminal shows it.
    """
    if "\r" in text:
        text = text.rstrip("\r").rpartition("\r")[2]
    return _UNPRINTABLE.sub("\ufffd", text)


def tag(stream: str, text: str) -> str:
    """One output line as stored: ``[stdout] text``."""
    return f"[{stream}] {text}"


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """Lines one attempt of a task wrote since the last chunk (worker to manager).

    Attributes:
        task_id: the task.
        run: the attempt's id, unique per worker run (``<worker_id>:<n>``).
        worker_id: the worker running it.
        started_at: when the worker started this attempt.
        lines: tagged lines (see :func:`tag`), oldest first.
        cut: characters dropped in the worker before these lines (over the bound).
        final: the attempt ended: no more chunks will come for this run.
    """

    task_id: str
    run: str
    worker_id: str
    started_at: datetime
    lines: tuple[str, ...] = ()
    cut: int = 0
    final: bool = False
    created_at: datetime = field(default_factory=utcnow)


@dataclass(slots=True)
class AttemptOutput:
    """The kept output of one attempt of a task: its bounded tail, and what was cut.

    Attributes:
        task_id: the task.
        run: the attempt's id (see :class:`OutputChunk`).
        worker_id: the worker that ran it.
        started_at: when it started (attempts are ordered by it).
        lines: the kept tail, oldest first.
        cut: characters cut before the tail.
        final: the worker said the attempt ended (a killed worker never does).
    """

    task_id: str
    run: str
    worker_id: str
    started_at: datetime
    lines: deque[str] = field(default_factory=deque)
    cut: int = 0
    final: bool = False
    chars: int = 0

    @classmethod
    def of(cls, chunk: OutputChunk) -> AttemptOutput:
        """An empty record for the attempt ``chunk`` belongs to."""
        return cls(chunk.task_id, chunk.run, chunk.worker_id, chunk.started_at)

    def add(self, chunk: OutputChunk) -> None:
        """Append a chunk's lines, keeping at most :data:`TAIL_CHARS` characters."""
        self.cut += chunk.cut
        self.final = self.final or chunk.final
        for line in chunk.lines:
            self.lines.append(line)
            self.chars += len(line) + 1
        while self.chars > TAIL_CHARS and len(self.lines) > 1:
            dropped = self.lines.popleft()
            self.chars -= len(dropped) + 1
            self.cut += len(dropped) + 1

    @property
    def text(self) -> str:
        """The tail as plain text, the cut marked on its first line."""
        lines = list(self.lines)
        if self.cut:
            lines.insert(0, cut_marker(self.cut))
        return "\n".join(lines)

    def copy(self) -> AttemptOutput:
        """A copy later chunks do not change."""
        return AttemptOutput(
            self.task_id,
            self.run,
            self.worker_id,
            self.started_at,
            deque(self.lines),
            self.cut,
            self.final,
            self.chars,
        )


def as_text(attempts: list[AttemptOutput], *, headers: bool = True) -> str:
    """Attempts' output as one text; with several, each under a header line."""
    if len(attempts) == 1 or not headers:
        return "\n".join(a.text for a in attempts if a.text)
    parts = []
    for number, attempt in enumerate(attempts, start=1):
        parts.append(f"--- attempt {number} on {attempt.worker_id} ---")
        if attempt.text:
            parts.append(attempt.text)
    return "\n".join(parts)


def pick_text(attempts: list[AttemptOutput], attempt: int | None) -> str:
    """The text of every attempt (None), or of one: 1 is the first, -1 the last."""
    if attempt is None or not attempts:
        return as_text(attempts)
    index = attempt - 1 if attempt > 0 else attempt
    return as_text(attempts[index : index + 1 or None])
