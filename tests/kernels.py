"""A real Jupyter kernel driven by jupyter_client, for tests that kill or restart it.

``started_kernel(cwd)`` starts a ``python3`` kernel and yields a :class:`Kernel`; on
the way out it stops the kernel and kills the processes the test listed in
``kernel.children`` (worker processes a failed test must not leave behind).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jupyter_client import BlockingKernelClient, KernelManager

from icij_nb.testing import process_alive

CELL_TIMEOUT_S = 90


class Kernel:
    def __init__(self, manager: KernelManager, client: BlockingKernelClient) -> None:
        self.manager, self.client = manager, client
        self.children: list[int] = []

    @property
    def pid(self) -> int:
        pid = getattr(self.manager.provisioner, "pid", None)
        assert isinstance(pid, int)
        return pid

    def run(self, code: str) -> list[Any]:
        """Execute ``code``; return the JSON lines it printed."""
        lines: list[str] = []

        def on_output(msg: dict[str, Any]) -> None:
            content = msg["content"]
            if msg["msg_type"] == "stream" and content["name"] == "stdout":
                lines.extend(content["text"].splitlines())

        reply = self.client.execute_interactive(
            code, timeout=CELL_TIMEOUT_S, output_hook=on_output
        )
        content = reply["content"]
        assert content["status"] == "ok", f"{content.get('ename')}: {content}"
        found = []
        for line in lines:
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)  # the kernel alone, not its group


@contextlib.contextmanager
def started_kernel(cwd: Path) -> Iterator[Kernel]:
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(cwd))
    client = manager.blocking_client()
    client.start_channels()
    kernel = Kernel(manager, client)
    try:
        client.wait_for_ready(timeout=CELL_TIMEOUT_S)
        yield kernel
    finally:
        client.stop_channels()
        with contextlib.suppress(Exception):
            if manager.has_kernel:
                manager.shutdown_kernel(now=True)
        for pid in kernel.children:
            with contextlib.suppress(ProcessLookupError):
                if process_alive(pid):
                    os.kill(pid, signal.SIGKILL)
