"""The ``icij-nb`` command, run as a real subprocess against a fresh RabbitMQ vhost.

Each test writes a small app module into ``tmp_path`` and names it as
``path/to/module.py:app``; the test's own manager loads the same file, so both sides
know the same tasks. Long-running commands get their own process group, their output
in a log file, a deadline, and are killed at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from rabbit import Vhost

import icij_nb as nb
from icij_nb.testing import children_of, wait_until
from icij_nb.testing import process_alive as alive

pytestmark = pytest.mark.timeout(180)

CLI = [sys.executable, "-m", "icij_nb.cli"]
WAIT_S = 30.0
GRACE_S = 2.0

APP_SOURCE = """
import asyncio
import os
from pathlib import Path

import icij_nb as nb

app = nb.App("cli_tests")
not_an_app = 42


@app.task(group="cpu")
def whoami(x: int) -> dict:
    return {"x": x, "pid": os.getpid()}


@app.task(group="cpu")
async def hold(counter: str, release: str) -> int:
    with open(counter, "a", encoding="utf-8") as f:
        f.write(f"start {os.getpid()}\\n")
    while not Path(release).exists():
        await asyncio.sleep(0.02)
    with open(counter, "a", encoding="utf-8") as f:
        f.write(f"end {os.getpid()}\\n")
    return os.getpid()


@app.task(group="cpu")
def fail(why: str) -> None:
    raise ValueError(why)
"""


# -- helpers ---------------------------------------------------------------------


@dataclass
class AppFile:
    path: Path
    app: nb.App

    def spec(self, attr: str = "app") -> str:
        return f"{self.path}:{attr}"


@pytest.fixture
def app_file(tmp_path: Path) -> AppFile:
    """The app module, written to a file and loaded here under a unique name."""
    name = f"cli_app_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    path.write_text(APP_SOURCE, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return AppFile(path, module.app)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a short command to its end, with a deadline."""
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


class Service:
    """A long-running ``icij-nb workers start``, in its own process group."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log_path = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*CLI, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_running(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"icij-nb exited with {self.proc.returncode}; log:\n{self.log}"
            )

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=WAIT_S)


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def start(*args: str) -> Service:
        service = Service(list(args), tmp_path / f"service-{len(started)}.log")
        started.append(service)
        return service

    yield start
    for service in started:
        service.kill()


@pytest.fixture
def release(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "release"
    yield path
    path.touch()


@pytest.fixture
def make_manager_on(
    tmp_path: Path, release: Path
) -> Iterator[Callable[..., nb.TaskManager]]:
    made: list[nb.TaskManager] = []

    def make(
        app: nb.App, broker: str = "memory", store: object = None
    ) -> nb.TaskManager:
        tm = nb.connect(
            app, broker=broker, store=store or tmp_path / f"tasks-{len(made)}.sqlite3"
        )
        made.append(tm)
        return tm

    yield make
    release.touch()
    for tm in made:
        tm.close(timeout_s=60)


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{quote(password)}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{parts.password}@{parts.hostname}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def assert_one_clear_error(
    result: subprocess.CompletedProcess[str], *, secret: str | None = None
) -> str:
    """Exit status 2, one ``icij-nb: error:`` line last on stderr, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("icij-nb: error:")]
    assert len(errors) == 1, result.stderr
    assert lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert "Exception ignored" not in result.stderr
    if secret is not None:
        assert secret not in result.stderr + result.stdout
    return errors[0]


def executions(counter: Path) -> list[str]:
    return [line.split()[0] for line in counter.read_text().splitlines()]


# -- help --------------------------------------------------------------------------


def console_script() -> str:
    script = Path(sys.executable).parent / "icij-nb"
    assert script.exists(), f"the console script is not installed at {script}"
    return str(script)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["workers", "tasks"]),
        (["workers", "start"], ["APP", "--group", "--broker", "--grace-s"]),
        (["tasks", "list"], ["--store", "--state", "--group"]),
        (["tasks", "show"], ["TASK_ID", "--store"]),
        (["tasks", "cancel"], ["TASK_ID", "--broker", "--requeue"]),
    ],
)
def test_help_describes_each_command(args: list[str], expected: list[str]) -> None:
    result = subprocess.run(
        [console_script(), *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: icij-nb")
    for word in expected:
        assert word in result.stdout


# -- workers start -------------------------------------------------------------------


@pytest.mark.rabbitmq
def test_workers_start_serves_tasks_a_manager_submits(
    vhost: Vhost,
    app_file: AppFile,
    start_service: Callable[..., Service],
    make_manager_on: Callable[..., nb.TaskManager],
) -> None:
    service = start_service(
        "workers", "start", app_file.spec(), "-g", "cpu", "-n", "2",
        "--broker", vhost.amqp_url,
    )  # fmt: skip
    vhost.wait_until(
        lambda: service.check_running() or vhost.consumer_count("TASK.cpu") == 2,
        WAIT_S,
        what="2 worker processes consuming TASK.cpu",
    )
    tm = make_manager_on(app_file.app, vhost.amqp_url)

    results = tm.gather(
        tm.map("whoami", [{"x": i} for i in range(6)]), timeout_s=WAIT_S
    )

    assert [r["x"] for r in results] == list(range(6))
    workers = children_of(service.proc.pid)
    assert len(workers) == 2
    assert {r["pid"] for r in results} <= workers
    log = service.log
    assert re.search(r"consumes queue TASK\.cpu on amqp://guest:\*\*\*@", log), log
    assert "guest:guest@" not in log  # the password is masked everywhere
    assert vhost.name in log


@pytest.mark.rabbitmq
def test_sigterm_stops_the_pool_and_requeues_its_running_task(
    vhost: Vhost,
    tmp_path: Path,
    app_file: AppFile,
    release: Path,
    start_service: Callable[..., Service],
    make_manager_on: Callable[..., nb.TaskManager],
) -> None:
    service = start_service(
        "workers", "start", app_file.spec(), "-g", "cpu", "-n", "2",
        "--broker", vhost.amqp_url, "--grace-s", str(GRACE_S),
    )  # fmt: skip
    vhost.wait_until(
        lambda: service.check_running() or vhost.consumer_count("TASK.cpu") == 2,
        WAIT_S,
        what="2 consumers",
    )
    workers = children_of(service.proc.pid)
    tm = make_manager_on(app_file.app, vhost.amqp_url)
    counter = tmp_path / "executions.txt"
    handle = tm.submit("hold", {"counter": str(counter), "release": str(release)})
    wait_until(
        lambda: tm.get(handle).state is nb.TaskState.RUNNING,
        timeout_s=WAIT_S,
        what="the task to run",
    )

    service.proc.send_signal(signal.SIGTERM)

    # It exits 0 once the grace period is over (bounded here, not timed).
    assert service.proc.wait(timeout=GRACE_S + 20) == 0, service.log
    assert [pid for pid in workers if alive(pid)] == []
    # The running task went back to its queue: not lost, not run twice.
    wait_until(
        lambda: tm.get(handle).state is nb.TaskState.QUEUED,
        timeout_s=WAIT_S,
        what="the task to be requeued",
    )
    assert asyncio.run(vhost.message_count("TASK.cpu")) == 1
    assert executions(counter) == ["start"]

    tm.start_pool("cpu", workers=1)
    wait_until(lambda: len(executions(counter)) == 2, timeout_s=WAIT_S, what="rerun")
    release.touch()

    assert tm.result(handle, timeout_s=WAIT_S) == os.getpid()
    assert tm.get(handle).state is nb.TaskState.DONE
    assert executions(counter) == ["start", "start", "end"]


@pytest.mark.rabbitmq
@pytest.mark.parametrize("n", ["1", "2"])
def test_wrong_password_exits_2_naming_host_and_vhost(
    vhost: Vhost, app_file: AppFile, n: str
) -> None:
    secret = "not-the-password-4f1d"
    url = with_password(vhost.amqp_url, secret)

    result = run_cli(
        "workers", "start", app_file.spec(), "-g", "cpu", "-n", n, "--broker", url
    )

    line = assert_one_clear_error(result, secret=secret)
    assert "127.0.0.1" in line
    assert vhost.name in line
    assert "credentials" in line


@pytest.mark.rabbitmq
def test_closed_port_exits_2_naming_host_and_vhost(
    vhost: Vhost, app_file: AppFile
) -> None:
    url = with_port(vhost.amqp_url, 1)

    result = run_cli("workers", "start", app_file.spec(), "-g", "cpu", "--broker", url)

    line = assert_one_clear_error(result)
    assert "127.0.0.1:1" in line
    assert vhost.name in line
    assert "cannot connect" in line


@pytest.mark.rabbitmq
@pytest.mark.parametrize("n", ["1", "2"])
def test_unreachable_management_api_exits_2(
    vhost: Vhost, app_file: AppFile, n: str
) -> None:
    result = run_cli(
        "workers", "start", app_file.spec(), "-g", "cpu", "-n", n,
        "--broker", vhost.amqp_url,
        "--management-url", "http://guest:guest@127.0.0.1:1",
    )  # fmt: skip

    line = assert_one_clear_error(result, secret="guest:guest@")
    assert "management API" in line
    assert "127.0.0.1:1" in line


@pytest.mark.parametrize(
    ("make_spec", "expected"),
    [
        (lambda f: str(f.path), "APP must look like"),
        (lambda f: f"{f.path}:", "APP must look like"),
        (lambda f: "icij_nb_no_such_module_x:app", "cannot import"),
        (lambda f: f"{f.path.parent / 'missing.py'}:app", "no such file"),
        (lambda f: f"{f.path}:not_an_app", "names int, not an icij_nb.App"),
        (lambda f: f"{f.path}:nothing_here", "names nothing, not an icij_nb.App"),
    ],
    ids=["no-colon", "no-attr", "no-module", "no-file", "not-an-app", "no-attr-found"],
)
def test_bad_app_spec_exits_2_with_one_clear_line(
    app_file: AppFile, make_spec: Callable[[AppFile], str], expected: str
) -> None:
    spec = make_spec(app_file)

    # A closed port: were the spec accepted, connecting would fail differently.
    result = run_cli(
        "workers", "start", spec, "-g", "cpu", "--broker",
        "amqp://guest:guest@127.0.0.1:1/nowhere",
    )  # fmt: skip

    line = assert_one_clear_error(result)
    assert expected in line


def test_unknown_group_exits_2_naming_the_groups(app_file: AppFile) -> None:
    result = run_cli(
        "workers", "start", app_file.spec(), "-g", "gpu", "--broker",
        "amqp://guest:guest@127.0.0.1:1/nowhere",
    )  # fmt: skip

    line = assert_one_clear_error(result)
    assert "'gpu'" in line
    assert "'cpu'" in line


# -- tasks list / show / cancel --------------------------------------------------------


@pytest.fixture
def store_with_tasks(
    tmp_path: Path,
    app_file: AppFile,
    release: Path,
    make_manager_on: Callable[..., nb.TaskManager],
) -> tuple[Path, dict[str, str]]:
    """A store file a manager wrote: a DONE, an ERROR and a CANCELLED task."""
    store = tmp_path / "tasks.sqlite3"
    tm = make_manager_on(app_file.app, "memory", store)
    tm.start_pool("cpu", workers=2)
    done = tm.submit("whoami", {"x": 41})
    failed = tm.submit("fail", {"why": "the scanner jammed"}, max_retries=0)
    counter = tmp_path / "executions.txt"
    held = tm.submit("hold", {"counter": str(counter), "release": str(release)})
    tm.wait([done, failed], timeout_s=WAIT_S)
    wait_until(lambda: held.state is nb.TaskState.RUNNING, timeout_s=WAIT_S)
    tm.cancel(held)
    tm.wait([held], timeout_s=WAIT_S)
    tm.close()
    return store, {"done": done.id, "failed": failed.id, "cancelled": held.id}


def test_tasks_list_prints_the_tasks_of_a_store(
    store_with_tasks: tuple[Path, dict[str, str]],
) -> None:
    store, ids = store_with_tasks

    result = run_cli("tasks", "list", "--store", str(store))

    assert result.returncode == 0, result.stderr
    rows = {
        line.split()[0]: line for line in result.stdout.splitlines() if line.strip()
    }
    assert "DONE" in rows[ids["done"]]
    assert "ERROR" in rows[ids["failed"]]
    assert "the scanner jammed" in rows[ids["failed"]]
    assert "CANCELLED" in rows[ids["cancelled"]]
    assert result.stdout.rstrip().endswith("(3 task(s))")

    only_errors = run_cli("tasks", "list", "--store", str(store), "--state", "error")

    assert only_errors.returncode == 0, only_errors.stderr
    assert ids["failed"] in only_errors.stdout
    assert ids["done"] not in only_errors.stdout
    assert ids["cancelled"] not in only_errors.stdout
    assert only_errors.stdout.rstrip().endswith("(1 task(s))")


def test_tasks_show_prints_result_and_errors(
    store_with_tasks: tuple[Path, dict[str, str]],
) -> None:
    store, ids = store_with_tasks

    done = run_cli("tasks", "show", ids["done"], "--store", str(store))
    failed = run_cli("tasks", "show", ids["failed"], "--store", str(store))
    cancelled = run_cli("tasks", "show", ids["cancelled"], "--store", str(store))

    assert done.returncode == failed.returncode == cancelled.returncode == 0
    assert done.stdout.startswith(f"{ids['done']}  whoami  group=cpu  DONE")
    assert f"result={{'x': 41, 'pid': {os.getpid()}}}" in done.stdout
    assert "error 1" not in done.stdout
    assert failed.stdout.startswith(f"{ids['failed']}  fail  group=cpu  ERROR")
    assert "error 1:" in failed.stdout
    assert "ValueError" in failed.stdout
    assert "the scanner jammed" in failed.stdout
    assert "result=" not in failed.stdout
    assert "CANCELLED" in cancelled.stdout.splitlines()[0]


def test_tasks_show_unknown_id_or_store_exits_2(
    store_with_tasks: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    store, _ = store_with_tasks

    unknown = run_cli("tasks", "show", "no-such-task", "--store", str(store))
    no_store = run_cli("tasks", "list", "--store", str(tmp_path / "absent.sqlite3"))

    assert "no-such-task" in assert_one_clear_error(unknown)
    assert "absent.sqlite3" in assert_one_clear_error(no_store)
    assert not (tmp_path / "absent.sqlite3").exists()


@pytest.mark.rabbitmq
def test_tasks_cancel_stops_a_running_task(
    vhost: Vhost,
    tmp_path: Path,
    app_file: AppFile,
    release: Path,
    make_manager_on: Callable[..., nb.TaskManager],
) -> None:
    tm = make_manager_on(app_file.app, vhost.amqp_url)
    tm.start_pool("cpu", workers=1)
    counter = tmp_path / "executions.txt"
    handle = tm.submit("hold", {"counter": str(counter), "release": str(release)})
    wait_until(
        lambda: tm.get(handle).state is nb.TaskState.RUNNING,
        timeout_s=WAIT_S,
        what="the task to run",
    )

    result = run_cli("tasks", "cancel", handle.id, "--broker", vhost.amqp_url)

    assert result.returncode == 0, result.stderr
    assert handle.id in result.stdout
    assert "guest:guest@" not in result.stdout + result.stderr
    tm.wait([handle], timeout_s=WAIT_S)
    assert tm.get(handle).state is nb.TaskState.CANCELLED
    with pytest.raises(nb.TaskCancelled):
        tm.result(handle, timeout_s=WAIT_S)
    assert executions(counter) == ["start"]
