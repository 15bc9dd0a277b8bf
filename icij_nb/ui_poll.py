"""KernelPoll: widget messages handled while a cell blocks in a wait.

A Jupyter kernel reads the messages of its shell channel only between cells, so
while a cell blocks in ``tm.gather`` a click on the board (a ``comm_msg``) waits for
the cell to end. The approach of the ``jupyter-ui-poll`` package, done here for
ipykernel 7 (whose shell messages reach the main thread through an inproc socket
from the shell channel thread; ``jupyter-ui-poll`` 1.1 calls ``do_one_iteration``,
which ipykernel 7 no longer has) and ipykernel 6 (the shell socket itself):

- between two short waits on the result, :meth:`KernelPoll.poll` reads the messages
  waiting for the main thread, without blocking;
- a widget message (``comm_open``, ``comm_msg``, ``comm_close``) is handled at once,
  in the waiting thread, by the kernel's own handler for it (the board's callbacks
  run, and may themselves make blocking calls);
- any other message (a cell the user queued, a completion request) is held, in
  order, and handed back to the kernel when the wait ends: it runs after the cell,
  before every message that came later, as if nothing had been read.

Ctrl-C is unchanged: the interrupt raises in the waiting thread, the wait stops and
the held messages go back. Outside a kernel (a script, papermill's kernel has no
frontend but is a kernel, and works the same) :func:`current` returns None.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

logger = logging.getLogger(__name__)

#: the messages handled inside a wait; every other kind keeps its place
WIDGET_MESSAGES = frozenset({"comm_open", "comm_msg", "comm_close"})


class KernelPoll:
    """Reads the main thread's shell messages of one kernel during a wait.

    Args:
        kernel: the ipykernel ``Kernel`` (``get_ipython().kernel``).
    """

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        channel = getattr(kernel, "shell_channel_thread", None)
        if channel:  # ipykernel 7: the shell channel thread forwards to us
            pair = channel.manager.get_shell_channel_to_subshell_pair(None)
            self.socket = pair.to_socket
            self.seven = True
        else:  # ipykernel 6: the shell socket, read in this thread
            self.socket = kernel.shell_stream.socket
            self.seven = False
        self.held: list[Any] = []

    def poll(self) -> int:
        """Handle the widget messages waiting now; hold the others. Returns how many."""
        import zmq  # a kernel has it

        handled = 0
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return handled
            # Widget messages jump ahead of held ones, as ipykernel 7 lets them
            # during an awaiting cell; the others keep their order.
            if self._handle(frames):
                handled += 1
            else:
                self.held.append(frames)

    def _handle(self, frames: list[Any]) -> bool:
        session = self.kernel.session
        try:
            idents, body = session.feed_identities(frames, copy=False)
            header = session.deserialize(body, content=False, copy=False)["header"]
        except Exception:
            return False
        msg_type = header.get("msg_type")
        if msg_type not in WIDGET_MESSAGES:
            return False
        msg = session.deserialize(body, content=True, copy=False)
        handler = self.kernel.shell_handlers.get(msg_type)
        if handler is None:
            return True
        try:
            result = handler(self.kernel.shell_stream, idents, msg)
        except Exception:
            logger.exception("a widget message failed during a wait")
            return True
        if hasattr(result, "close"):  # a coroutine: comm handlers are sync
            result.close()
        return True

    def release(self) -> None:
        """Give the held messages back to the kernel, in order, after the cell."""
        held, self.held = self.held, []
        kernel = self.kernel
        for frames in held:
            if self.seven:
                kernel.io_loop.add_callback(kernel.shell_main, None, frames)
            else:
                kernel.schedule_dispatch(kernel.dispatch_shell, frames)


def current() -> KernelPoll | None:
    """A poll of this kernel when called on its main thread with widgets, else None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    kernel = getattr(shell, "kernel", None)
    if kernel is None or "comm_msg" not in getattr(kernel, "shell_handlers", {}):
        return None
    try:
        return KernelPoll(kernel)
    except Exception:  # an ipykernel this does not know: no polling
        logger.debug("no widget polling in this kernel", exc_info=True)
        return None
