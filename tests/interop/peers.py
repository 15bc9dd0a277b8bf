"""Start and drive the real icij-worker peers of the interop tests.

The peers run in the icij-worker virtualenv (``python`` below is its interpreter,
from the ``icij_venv`` fixture), in the test's vhost:

- :func:`start_icij_pool` runs ``python -m icij_worker workers start icij_app.app``
  (the ``icij-worker`` CLI) in its own process group, logging to a file;
  :func:`stop` ends it (SIGTERM to the group, SIGKILL after 5 s).
- :func:`run_icij_manager_script` runs ``icij_manager_driver.py``: a real
  ``AMQPTaskManager`` submits a scenario and reports every task's final state.

The interop ``conftest.py`` wraps both in fixtures that clean up (``icij_pool``,
``icij_manager``); tests import this module for the types and for ``ICIJ_APP``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rabbit import Vhost

INTEROP_DIR = Path(__file__).resolve().parent
ICIJ_APP = "icij_app.app"
DRIVER = INTEROP_DIR / "icij_manager_driver.py"
STOP_GRACE_S = 5.0
LOG_TAIL_CHARS = 4000


def icij_env(vhost: Vhost, *, state_dir: Path | None = None) -> dict[str, str]:
    """The environment of an icij peer: our environment without any ICIJ_APP_* or
    ICIJ_WORKER_* setting, plus the broker settings of ``vhost``.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ICIJ_APP_", "ICIJ_WORKER_", "PYTHON"))
    }
    broker = vhost.broker
    env.update(
        {
            "ICIJ_WORKER_TYPE": "amqp",
            "ICIJ_WORKER_RABBITMQ_HOST": broker.host,
            "ICIJ_WORKER_RABBITMQ_PORT": str(broker.port),
            "ICIJ_WORKER_RABBITMQ_MANAGEMENT_PORT": str(broker.management_port),
            "ICIJ_WORKER_RABBITMQ_USER": broker.user,
            "ICIJ_WORKER_RABBITMQ_PASSWORD": broker.password,
            # icij pastes the vhost into URLs as is: give it encoded.
            "ICIJ_WORKER_RABBITMQ_VHOST": quote(vhost.name, safe=""),
            "PYTHONPATH": str(INTEROP_DIR),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if state_dir is not None:
        env["ICIJ_NB_INTEROP_STATE_DIR"] = str(state_dir)
    return env


@dataclass
class IcijPool:
    """A running ``icij-worker workers start`` command."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    group: str | None
    n: int

    @property
    def queue(self) -> str:
        """The task queue this pool consumes (docs/protocol.md §1.2)."""
        return "TASK" if self.group is None else f"TASK.{self.group}"

    def log(self) -> str:
        """The end of the pool's log."""
        return _tail(self.log_path)

    def wait_consuming(self, vhost: Vhost, timeout_s: float = 60.0) -> None:
        """Wait until all ``n`` workers consume the pool's task queue.

        Raises AssertionError, with the log's end, if the pool exits first.
        """

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"icij pool exited with status {self.proc.returncode} before "
                    f"consuming {self.queue}; log {self.log_path}:\n{self.log()}"
                )
            return vhost.consumer_count(self.queue) >= self.n

        vhost.wait_until(ready, timeout_s, what=f"{self.n} consumers on {self.queue}")

    def __repr__(self) -> str:
        return f"<IcijPool pid={self.proc.pid} queue={self.queue} n={self.n}>"


def start_icij_pool(
    python: str | Path,
    app_path: str,
    vhost: Vhost,
    *,
    log_path: Path,
    group: str | None = None,
    n: int = 1,
    state_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> IcijPool:
    """Start ``icij-worker workers start APP_PATH -n N [-g GROUP]`` in ``vhost``.

    ``app_path`` is a dotted path importable from this directory (``ICIJ_APP``).
    The pool runs in a new session, so :func:`stop` can signal all its processes.
    """
    cmd = [str(python), "-m", "icij_worker", "workers", "start", app_path]
    cmd += ["-n", str(n)]
    if group is not None:
        cmd += ["-g", group]
    env = icij_env(vhost, state_dir=state_dir) | (extra_env or {})
    with log_path.open("ab") as log:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=INTEROP_DIR,
            start_new_session=True,
        )
    return IcijPool(proc=proc, log_path=log_path, group=group, n=n)


def stop(pool: IcijPool | subprocess.Popen[bytes]) -> int:
    """SIGTERM the process group, SIGKILL it after 5 s; return the exit status.

    The whole group, because the parent of a multi-worker pool only logs SIGTERM
    (docs/protocol.md §5.3). Returns once every process of the group is gone.
    """
    proc = pool.proc if isinstance(pool, IcijPool) else pool
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_GRACE_S)
    # Also kills the workers that outlive the parent (spawned pool processes).
    _signal_group(proc, signal.SIGKILL)
    status = proc.wait(STOP_GRACE_S)
    deadline = time.monotonic() + STOP_GRACE_S
    while _signal_group(proc, 0) and time.monotonic() < deadline:
        time.sleep(0.05)  # orphans wait to be reaped by init
    return status


@dataclass
class ManagerRun:
    """What ``icij_manager_driver.py`` printed: one dict per task, in input order."""

    tasks: list[dict[str, Any]]
    tm_error: str | None
    timed_out: bool
    log_path: Path
    by_id: dict[str, dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {t["id"]: t for t in self.tasks}

    def log(self) -> str:
        return _tail(self.log_path)


def run_icij_manager_script(
    python: str | Path,
    scenario: list[dict[str, Any]] | dict[str, Any],
    vhost: Vhost,
    *,
    log_path: Path,
    timeout_s: float = 120.0,
    check: bool = True,
    extra_env: dict[str, str] | None = None,
) -> ManagerRun:
    """Run the real icij ``AMQPTaskManager`` on ``scenario`` in ``vhost``.

    ``scenario`` is the driver's input (a list of task items, or an object: see
    ``icij_manager_driver.py``); when it sets no ``timeout_s``, the driver gets
    ``timeout_s - 20`` so that it reports before this call gives up.

    With ``check`` (the default), a TM whose event loop died or that timed out
    raises AssertionError with the log's end; pass ``check=False`` to test those.
    ``extra_env`` adds settings, e.g. ``{"ICIJ_APP_LATE_ACK": "false"}`` (the TM
    and the workers must agree on it, docs/protocol.md §5.3).
    """
    if isinstance(scenario, list):
        scenario = {"tasks": scenario}
    scenario = {"timeout_s": max(timeout_s - 20, 5)} | scenario
    cmd = [str(python), str(DRIVER), json.dumps(scenario)]
    with log_path.open("ab") as log:
        try:
            done = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=icij_env(vhost) | (extra_env or {}),
                cwd=INTEROP_DIR,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"icij manager driver still running after {timeout_s}s; "
                f"log {log_path}:\n{_tail(log_path)}"
            ) from exc
    lines = [json.loads(line) for line in done.stdout.decode().splitlines() if line]
    if done.returncode != 0 or not lines or "summary" not in lines[-1]:
        raise AssertionError(
            f"icij manager driver failed (status {done.returncode}); "
            f"log {log_path}:\n{_tail(log_path)}"
        )
    summary = lines[-1]["summary"]
    run = ManagerRun(lines[:-1], summary["tm_error"], summary["timed_out"], log_path)
    if check and (run.tm_error or run.timed_out):
        raise AssertionError(
            f"icij task manager: tm_error={run.tm_error}, timed_out={run.timed_out};"
            f" tasks: {run.tasks}; log {log_path}:\n{run.log()}"
        )
    return run


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> bool:
    """Signal the process group of ``proc``; False when the group is gone."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return False
    return True


def _tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return text[-LOG_TAIL_CHARS:]
