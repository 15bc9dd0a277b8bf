"""The app of tests/test_outbox.py, and an engine whose broker can be switched off.

:class:`SwitchableEngine` is the in-process broker's engine marked durable (as
RabbitMQ's is, so the manager uses its outbox), whose ``submit`` raises
``BrokerUnavailable`` while ``down``: a cluster no node of which answers. A module
of its own so that a child process (a manager to kill) imports the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import icij_nb as nb
from icij_nb.broker_engine import BrokerEngine
from icij_nb.brokers.memory import MemoryBroker
from icij_nb.errors import BrokerUnavailable
from icij_nb.model import Task

app = nb.App("outbox")
#: the x of each run of ``square``, in the order they ran (this process)
ran: list[int] = []


@app.task(group="cpu")
def square(x: int) -> int:
    ran.append(x)
    return x * x


class SwitchableEngine(BrokerEngine):
    """The in-process broker's engine, durable, that can be switched off."""

    def __init__(self, app: nb.App, *, down: bool = False) -> None:
        super().__init__(MemoryBroker(app))
        self.durable = True
        self.down = down
        #: task ids, in the order they went out
        self.published: list[str] = []

    async def submit(self, tasks: Sequence[Task]) -> None:
        if self.down:
            msg = "no broker node answers (switched off)"
            raise BrokerUnavailable(msg, not_queued=tuple(t.id for t in tasks))
        await super().submit(tasks)
        self.published += [t.id for t in tasks]


def start(store: str, *, down: bool) -> tuple[nb.TaskManager, SwitchableEngine]:
    """A started manager of :data:`app` on ``store`` with a switchable engine."""
    engine = SwitchableEngine(app, down=down)
    tm = nb.TaskManager(app, engine=engine, store=nb.TaskStore(store)).start()
    return tm, engine
