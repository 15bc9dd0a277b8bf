"""What the contract tests know of a backend: ``Backend``, ``WAIT_S``, ``xfail_on``.

The backends themselves (how each one connects) are listed in ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

import icij_nb as nb
from icij_nb.testing import process_alive

#: the longest a contract test waits for one thing; a pass never waits this long
WAIT_S = 30.0

Connect = Callable[..., nb.TaskManager]


@dataclass
class Backend:
    """One backend under the contract: a connect factory and what it can do.

    Call it as ``backend(app, **connect_kwargs)`` for a started manager (``store``
    defaults to ``":memory:"``); every manager is closed at teardown.
    """

    name: str
    connect: Connect
    #: ``start_pool(..., processes=True)`` works (worker processes of this machine)
    processes: bool = False
    #: ready messages in a group's queue, exact; None when the backend cannot tell
    queued: Callable[[str | None], int] | None = None
    made: list[nb.TaskManager] = field(default_factory=list)

    def __call__(self, app: nb.App, **kwargs: Any) -> nb.TaskManager:
        kwargs.setdefault("store", ":memory:")
        tm = self.connect(app, **kwargs)
        self.made.append(tm)
        return tm

    def close_all(self) -> None:
        """Close every manager, killing the worker processes a failed test left."""
        for tm in reversed(self.made):
            pids = [pid for pool in tm.pools for pid in getattr(pool, "pids", [])]
            tm.close(timeout_s=60)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    if process_alive(pid):
                        os.kill(pid, signal.SIGKILL)


def xfail_on(
    request: pytest.FixtureRequest, backend: Backend, name: str, reason: str
) -> None:
    """Mark the running test as an expected failure (strict) on backend ``name``."""
    if backend.name == name:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
