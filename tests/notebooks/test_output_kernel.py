"""Task output captured in a real IPython kernel, and widget messages during a wait.

A ``python3`` kernel driven by jupyter_client runs the cells below and prints JSON
lines the tests read:

- in-kernel pools: sync tasks (threads) and async tasks running at once on one loop,
  each printing and logging; every task's record holds its own lines only, and none
  of them reaches the cell (no cell waits with ``show_output``);
- ``show_output=True``: the lines come under the waiting cell, prefixed;
- a process pool (RabbitMQ): the output of a task whose process is killed mid-task
  is kept with that attempt;
- while a cell blocks in ``tm.gather``, a widget message (a button click sent as a
  ``comm_msg``, what the browser sends) runs its callback, which cancels the task,
  and the cell returns; a cell queued meanwhile runs after it, in order.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kernels import Kernel, started_kernel
from rabbit import Vhost, make_vhost, rabbitmq, rabbitmq_gate, vhost

__all__ = ["make_vhost", "rabbitmq", "rabbitmq_gate", "vhost"]

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(180)]

APP = """
import asyncio, json, logging, os, sys, time
import icij_nb as nb

app = nb.App("output_kernel")

@app.task(group="cpu")
def chatty(n: int) -> int:
    for i in range(3):
        print(f"sync {n} line {i}")
        time.sleep(0.01)
    logging.getLogger("tasks.chatty").warning("warned %d", n)
    sys.stderr.write(f"no newline {n}")
    return n

@app.task(group="io")
async def achatty(n: int) -> int:
    for i in range(5):
        print(f"async {n} line {i}")
        await asyncio.sleep(0.01)  # the others print in between
    return n

@app.task(group="cpu")
def sleepy(seconds: float) -> str:
    print("going to sleep", flush=True)
    time.sleep(seconds)
    return "woke"
"""


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    with started_kernel(tmp_path) as started:
        yield started


def test_each_in_kernel_task_keeps_its_own_output(kernel: Kernel) -> None:
    kernel.run(APP)
    cell_lines: list[str] = []

    def on_output(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            cell_lines.extend(msg["content"]["text"].splitlines())

    code = """
tm = nb.connect(app, store="store.db")
tm.start_pool("cpu", workers=3)
tm.start_pool("io", workers=4)
sync = tm.map("chatty", [{"n": n} for n in range(3)])
asyn = tm.map("achatty", [{"n": n} for n in range(4)])
tm.gather(sync + asyn)
print(json.dumps({h.id: h.output() for h in sync + asyn}))
"""
    reply = kernel.client.execute_interactive(code, timeout=60, output_hook=on_output)
    assert reply["content"]["status"] == "ok", reply["content"]
    outputs = json.loads(cell_lines[-1])
    assert not [line for line in cell_lines[:-1] if "line" in line]  # records only
    by_text = sorted(outputs.values())
    for n in range(4):
        assert "\n".join(f"[stdout] async {n} line {i}" for i in range(5)) in by_text
    for n in range(3):
        expected = "\n".join(
            [f"[stdout] sync {n} line {i}" for i in range(3)]
            + [f"[WARNING tasks.chatty] warned {n}", f"[stderr] no newline {n}"]
        )
        assert expected in by_text

    # The store keeps it: a new kernel reads it back.
    first = next(iter(outputs))
    kernel.run("tm.close()")
    kernel.manager.restart_kernel(now=True)
    kernel.client.wait_for_ready(timeout=60)
    kernel.run(APP)
    [again] = kernel.run(
        "tm = nb.connect(app, store='store.db')\n"
        f"print(json.dumps(tm.output({first!r})))"
    )
    assert again == outputs[first]


def test_show_output_prints_under_the_waiting_cell(kernel: Kernel) -> None:
    kernel.run(APP)
    lines: list[str] = []

    def on_output(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            lines.extend(msg["content"]["text"].splitlines())

    code = """
tm = nb.connect(app, store=":memory:")
tm.start_pool("io", workers=2)
h = tm.submit("achatty", {"n": 7}, task_id="loud")
tm.gather([h], show_output=True)
"""
    reply = kernel.client.execute_interactive(code, timeout=60, output_hook=on_output)
    assert reply["content"]["status"] == "ok", reply["content"]
    assert "[achatty loud] [stdout] async 7 line 4" in lines


def click_message(kernel: Kernel, comm_id: str) -> dict[str, Any]:
    session = kernel.client.session
    return session.msg(
        "comm_msg",
        {
            "comm_id": comm_id,
            "data": {"method": "custom", "content": {"event": "click"}},
        },
    )


def test_a_widget_click_is_handled_while_a_cell_blocks(kernel: Kernel) -> None:
    kernel.run(APP)
    [comm] = kernel.run(
        """
import ipywidgets as widgets
tm = nb.connect(app, store=":memory:")
tm.start_pool("cpu", workers=1)
h = tm.submit("sleepy", {"seconds": 60})
button = widgets.Button(description="cancel")
button.on_click(lambda _: h.cancel())
print(json.dumps(button.model_id))
"""
    )
    started = time.monotonic()
    blocked = kernel.client.execute(
        "t0 = time.monotonic()\n"
        "outcome = tm.gather([h], return_exceptions=True)\n"
        "print(json.dumps([type(outcome[0]).__name__, time.monotonic() - t0]))"
    )
    queued = kernel.client.execute("print(json.dumps('queued cell ran'))")
    time.sleep(1.5)  # the cell blocks now
    message = click_message(kernel, comm)
    kernel.client.shell_channel.send(message)
    printed: dict[str, list[Any]] = {blocked: [], queued: []}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(printed.values()):
        msg = kernel.client.get_iopub_msg(timeout=30)
        parent = msg["parent_header"].get("msg_id")
        if msg["msg_type"] == "stream" and parent in printed:
            printed[parent].append(json.loads(msg["content"]["text"]))
    [[name, waited_s]] = printed[blocked]
    assert name == "TaskCancelled"
    assert waited_s < 10
    assert printed[queued] == ["queued cell ran"]
    assert time.monotonic() - started < 20


@pytest.mark.rabbitmq
def test_a_killed_worker_process_keeps_the_output_it_wrote(
    kernel: Kernel, vhost: Vhost
) -> None:
    kernel.run(APP)
    [pids] = kernel.run(
        f"""
tm = nb.connect(app, broker={vhost.amqp_url!r}, store=":memory:")
pool = tm.start_pool("cpu", workers=1, processes=True)
h = tm.submit("sleepy", {{"seconds": 60}})
print(json.dumps(pool.pids))
"""
    )
    kernel.children += pids
    [running] = kernel.run(
        "from icij_nb.testing import wait_until\n"
        "wait_until(lambda: 'going to sleep' in tm.output(h), what='output', "
        "timeout_s=30)\n"
        "print(json.dumps(h.state.value))"
    )
    assert running == "RUNNING"
    os.kill(pids[0], signal.SIGKILL)
    [kept] = kernel.run(
        "time.sleep(1)\nprint(json.dumps(tm.output(h)))\npool.stop()\ntm.close()"
    )
    assert "[stdout] going to sleep" in kept
