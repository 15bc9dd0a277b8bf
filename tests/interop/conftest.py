"""Fixtures for the interop tests: the real icij-worker as a peer.

- ``rabbitmq``, ``vhost``, ``make_vhost`` and the ``rabbitmq`` marker gate: from
  ``tests/rabbit.py``, as in ``tests/brokers``.
- ``icij_venv`` (session): the python of a virtualenv holding icij-worker 0.20.2,
  made once by ``scripts/icij_worker_venv.sh`` (cached across runs). The test
  fails, with pip's output, when it cannot be built (no registry access): a broken
  peer must not pass for a missing broker.
- ``icij_pool``: ``icij_pool(group=None, n=1, wait=True, extra_env=None)`` starts
  ``icij-worker workers start icij_app.app`` in the test's vhost, waits until its
  workers consume, and stops it at teardown. Its log is
  ``tmp_path / "icij-pool-<k>.log"``; ``pool.log()`` returns its end.
- ``icij_manager``: ``icij_manager(scenario, timeout_s=120, check=True,
  extra_env=None)`` runs the real icij ``AMQPTaskManager`` on a scenario in the
  test's vhost and returns a ``peers.ManagerRun`` (see ``icij_manager_driver.py``
  for the scenario format).

Every interop test must be marked ``rabbitmq``: it needs the broker.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from peers import (
    ICIJ_APP,
    IcijPool,
    ManagerRun,
    run_icij_manager_script,
    start_icij_pool,
    stop,
)
from rabbit import Vhost, make_vhost, rabbitmq, rabbitmq_gate, vhost

# Re-exported: pytest registers the fixtures it finds in a conftest's namespace.
__all__ = ["make_vhost", "rabbitmq", "rabbitmq_gate", "vhost"]

VENV_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "icij_worker_venv.sh"
VENV_TIMEOUT_S = 900
OUTPUT_TAIL_CHARS = 4000


@pytest.fixture(scope="session")
def icij_venv(rabbitmq: object) -> str:
    """Path of the python of the icij-worker virtualenv (built once, cached).

    It asks for ``rabbitmq`` first, so that without a broker the tests skip before
    trying to build the peer.
    """
    try:
        done = subprocess.run(
            ["bash", str(VENV_SCRIPT)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=VENV_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{VENV_SCRIPT} ran over {VENV_TIMEOUT_S}s: {exc}", pytrace=False)
    out = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0 or not out:
        err = done.stderr.decode(errors="replace")[-OUTPUT_TAIL_CHARS:]
        pytest.fail(
            f"could not build the icij-worker virtualenv with {VENV_SCRIPT} "
            f"(status {done.returncode}); its output ends with:\n{err}",
            pytrace=False,
        )
    return out.splitlines()[-1]


@pytest.fixture
def icij_pool(
    icij_venv: str, vhost: Vhost, tmp_path: Path
) -> Iterator[Callable[..., IcijPool]]:
    """``icij_pool(group=None, n=1, wait=True, extra_env=None)``: an icij pool in
    ``vhost``, consuming (unless ``wait=False``) when returned; stopped at teardown.
    """
    pools: list[IcijPool] = []

    def start(
        group: str | None = None,
        n: int = 1,
        *,
        wait: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> IcijPool:
        pool = start_icij_pool(
            icij_venv,
            ICIJ_APP,
            vhost,
            group=group,
            n=n,
            log_path=tmp_path / f"icij-pool-{len(pools)}.log",
            state_dir=tmp_path,
            extra_env=extra_env,
        )
        pools.append(pool)
        if wait:
            pool.wait_consuming(vhost)
        return pool

    yield start
    for pool in reversed(pools):
        stop(pool)


@pytest.fixture
def icij_manager(
    icij_venv: str, vhost: Vhost, tmp_path: Path
) -> Callable[..., ManagerRun]:
    """``icij_manager(scenario, timeout_s=120, check=True)``: run the real icij
    task manager on ``scenario`` in ``vhost`` (see ``peers.run_icij_manager_script``).
    """
    runs = 0

    def run(
        scenario: Any,
        *,
        timeout_s: float = 120.0,
        check: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> ManagerRun:
        nonlocal runs
        runs += 1
        return run_icij_manager_script(
            icij_venv,
            scenario,
            vhost,
            log_path=tmp_path / f"icij-manager-{runs}.log",
            timeout_s=timeout_s,
            check=check,
            extra_env=extra_env,
        )

    return run
