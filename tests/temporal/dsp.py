"""The real datashare-python worker as a peer: its venv, our peer app, its process.

``dsp_python()`` builds (once, cached) the datashare-python virtualenv with
``scripts/datashare_python_venv.sh`` and installs ``tests/temporal/dsp_peer`` in it.
``DspWorker`` runs ``datashare-python worker start --queue Q`` against a server and
waits until it polls its queue.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_SCRIPT = ROOT / "scripts" / "datashare_python_venv.sh"
PEER = Path(__file__).resolve().parent / "dsp_peer"
#: the group (and task queue) datashare-python's deployment starts tasks on
DSP_GROUP = "datashare.workflows"


def dsp_python() -> str:
    """The python of the datashare-python venv, with the peer app installed."""
    done = subprocess.run(
        ["bash", str(VENV_SCRIPT)],
        capture_output=True,
        timeout=900,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    out = done.stdout.decode().strip()
    if done.returncode != 0 or not out:
        pytest.fail(
            "could not build the datashare-python venv: "
            + done.stderr.decode()[-3000:],
            pytrace=False,
        )
    python = out.splitlines()[-1]
    installed = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "--no-deps", "--force-reinstall", str(PEER)],
        capture_output=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    if installed.returncode != 0:
        pytest.fail(
            f"could not install the peer app: {installed.stderr.decode()[-3000:]}"
        )
    return python


async def queue_polled(address: str, namespace: str, queue: str) -> bool:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
    from temporalio.client import Client

    client = await Client.connect(address, namespace=namespace)
    kinds = (
        TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    )
    for kind in kinds:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=kind,
            )
        )
        if not response.pollers:
            return False
    return True


class DspWorker:
    """``datashare-python worker start`` on one queue, in its own process."""

    def __init__(
        self, python: str, address: str, namespace: str, queue: str, log: Path
    ):
        self.address, self.namespace, self.queue, self.log_path = (
            address,
            namespace,
            queue,
            log,
        )
        bin_dir = Path(python).parent
        env = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            "DS_WORKER_MIN_PROGRESS_INTERVAL_S": "0.2",
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
        }
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [str(bin_dir / "datashare-python"), "worker", "start", "--queue", queue,
                 "--workflows", "dsp[.].*", "--activities", "dsp-.*",
                 "-a", address, "-ns", namespace, "--skip-config-discovery"],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip

    def wait_polling(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not asyncio.run(queue_polled(self.address, self.namespace, self.queue)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"datashare-python worker not polling: {self.log()}")
            time.sleep(0.3)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
