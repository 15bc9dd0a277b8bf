"""The runtime thread: blocking calls where they would deadlock, and Ctrl-C during a
blocking wait (in a real subprocess, with a real SIGINT).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

import icij_nb as nb


def test_blocking_call_inside_an_async_task_raises_instead_of_deadlocking(
    app, make_manager
):
    tm = make_manager(app)

    @app.task
    def inner() -> int:
        return 1

    @app.task
    async def outer() -> int:
        # A blocking call on the runtime thread would wait for itself forever.
        return tm.submit("inner").result(timeout_s=5)

    tm.start_pool(None, workers=1)
    handle = tm.submit("outer")

    with pytest.raises(nb.TaskFailed) as caught:
        handle.result(timeout_s=10)
    error = caught.value.error
    assert error is not None
    assert error.name == "IcijNbError"
    assert "blocking icij_nb call was made from the runtime thread" in error.message
    assert "use the *_async method with await" in error.message


def test_async_twin_inside_an_async_task_works(app, make_manager):
    tm = make_manager(app)

    @app.task
    def inner() -> int:
        return 1

    @app.task
    async def outer() -> int:
        handle = await tm.submit_async("inner")
        return await handle + 1

    tm.start_pool(None, workers=2)

    assert tm.submit("outer").result(timeout_s=10) == 2


def test_blocking_call_in_a_subscriber_raises_a_clear_error(app, make_manager):
    @app.task
    def fine() -> int:
        return 1

    tm = make_manager(app)
    caught: list[BaseException] = []

    def listener(tasks: list[nb.Task]) -> None:
        try:
            tm.frame()
        except nb.IcijNbError as exc:
            caught.append(exc)

    tm.subscribe(listener)
    tm.start_pool(None, workers=1)
    tm.submit("fine").result(timeout_s=5)

    assert caught
    assert "use the *_async method" in str(caught[0])


SCRIPT = """
import asyncio
import sys
import threading
import icij_nb as nb
from icij_nb.testing import wait_until

app = nb.App("interrupted")

@app.task
async def forever() -> None:
    await asyncio.sleep(3600)

def blocked_in_gather() -> bool:
    # True once the main thread waits inside TaskManager.gather: only then may the
    # test interrupt it (earlier, the interrupt would miss the try block).
    frame = sys._current_frames().get(threading.main_thread().ident)
    names = set()
    while frame is not None:
        names.add(frame.f_code.co_name)
        frame = frame.f_back
    return {{"gather", "result"}} <= names

def announce() -> None:
    wait_until(blocked_in_gather, timeout_s=10, interval_s=0.001)
    print("waiting", flush=True)

tm = nb.connect(app, store=":memory:")
tm.start_pool(None, workers=1)
handle = tm.submit("forever")
wait_until(lambda: handle.state is nb.TaskState.RUNNING, timeout_s=10)
threading.Thread(target=announce, daemon=True).start()
try:
    tm.gather([handle], timeout_s=60, cancel_on_interrupt={cancel})
except KeyboardInterrupt:
    print("interrupted", flush=True)
if {cancel}:
    wait_until(lambda: handle.done(), timeout_s=10, what="the cancel")
print("state", handle.state.value, flush=True)
tm.close(timeout_s=10)
print("closed", flush=True)
"""


@pytest.mark.parametrize(
    ("cancel_on_interrupt", "state"), [(False, "RUNNING"), (True, "CANCELLED")]
)
def test_ctrl_c_during_a_blocking_gather_stops_the_wait(cancel_on_interrupt, state):
    code = textwrap.dedent(SCRIPT).format(cancel=cancel_on_interrupt)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first == "waiting\n", proc.stderr.read() if proc.stderr else ""

        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert out.splitlines() == ["interrupted", f"state {state}", "closed"]
