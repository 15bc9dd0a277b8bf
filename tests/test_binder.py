"""binder/ launches the repository on mybinder.org.

Docker is not available here, so the tests check the two halves apart:

- repo2docker accepts the configuration (``--no-build``), and the Dockerfile it would
  build installs our apt packages and requirements, runs postBuild and uses our start
  script;
- the scripts work as an unprivileged user on this machine: postBuild enables the
  management plugin (with ``python`` replaced by a stub that records the pip call),
  and start brings up a RabbitMQ broker on ports of its own (not the system broker's
  5672) that a Python client reaches, then runs the command it was given. The broker
  is stopped at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from icij_nb.testing import wait_until

REPO = Path(__file__).parents[1]
BINDER = REPO / "binder"
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
SCRIPT_TIMEOUT_S = 120
#: what the demos need at run time; each must be pinned in binder/requirements.txt
RUNTIME_PACKAGES = {
    "aio-pika",
    "aiohttp",
    "ipykernel",
    "ipywidgets",
    "matplotlib",
    "nbclient",
    "nbformat",
    "pandas",
    "papermill",
}

# The client that binder/start runs as its command, with the system's Python (the
# unprivileged user may not read this virtual environment): it waits for the AMQP
# port, checks the broker speaks AMQP 0-9-1, and reads the management API.
CLIENT = r"""
import base64, json, os, socket, sys, time, urllib.request

amqp_port, management_port = int(sys.argv[1]), int(sys.argv[2])
deadline = time.monotonic() + 90


def retry(call):
    while True:
        try:
            return call()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def connection_start():
    with socket.create_connection(("127.0.0.1", amqp_port), timeout=5) as conn:
        conn.sendall(b"AMQP\x00\x00\x09\x01")
        frame = b""
        while len(frame) < 11:
            chunk = conn.recv(11 - len(frame))
            if not chunk:
                raise ConnectionResetError("closed before connection.start")
            frame += chunk
        # A method frame (type 1) on channel 0: class 10, method 10 is connection.start
        return frame[0] == 1 and frame[7:11] == b"\x00\x0a\x00\x0a"


def overview():
    token = base64.b64encode(b"guest:guest").decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{management_port}/api/overview",
        headers={"Authorization": f"Basic {token}"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        return json.load(response)


speaks_amqp = retry(connection_start)
node = retry(overview)["node"]
print(json.dumps({
    "uid": os.getuid(),
    "speaks_amqp": speaks_amqp,
    "node": node,
    "amqp_url": os.environ.get("ICIJ_NB_AMQP_URL"),
}))
"""


# -- repo2docker ---------------------------------------------------------------------


def test_repo2docker_accepts_the_configuration_and_uses_every_binder_file() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "repo2docker", "--no-build", "--debug", str(REPO)],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        check=False,
    )

    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed
    assert "Building conda environment for python=3.11" in printed
    assert "apt-get install --yes --no-install-recommends rabbitmq-server" in printed
    assert 'pip install --no-cache-dir -r "binder/requirements.txt"' in printed
    assert "RUN ./binder/postBuild" in printed
    assert 'ENV R2D_ENTRYPOINT="${REPO_DIR}/binder/start"' in printed


def test_requirements_pin_every_runtime_package() -> None:
    lines = (BINDER / "requirements.txt").read_text().splitlines()
    pins = dict(
        line.split("==", 1) for line in lines if line.strip() and line[0] != "#"
    )

    assert set(pins) >= RUNTIME_PACKAGES
    assert all(version.strip() for version in pins.values())


# -- the scripts, as an unprivileged user ------------------------------------------


@dataclass
class User:
    """Who runs binder's scripts: ``nobody`` when the tests run as root."""

    name: str
    uid: int
    gid: int
    python: str


@pytest.fixture
def user() -> User:
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        reason = f"RabbitMQ is not installed ({RABBITMQ_BIN} is missing)"
        if os.environ.get("ICIJ_NB_REQUIRE_RABBITMQ") == "1":
            pytest.fail(f"{reason}, and ICIJ_NB_REQUIRE_RABBITMQ=1", pytrace=False)
        pytest.skip(reason)
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return User(me.pw_name, me.pw_uid, me.pw_gid, sys.executable)
    nobody = pwd.getpwnam("nobody")
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 for the unprivileged user")
    return User("nobody", nobody.pw_uid, nobody.pw_gid, python)


@pytest.fixture
def home(user: User) -> Iterator[Path]:
    """A HOME the user owns, outside pytest's root-only tmp dirs."""
    path = Path(tempfile.mkdtemp(prefix="icij-nb-binder-", dir="/tmp"))
    os.chown(path, user.uid, user.gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_user(
    user: User, argv: list[str], env: dict[str, str], cwd: Path
) -> subprocess.Popen[str]:
    prefix = ["runuser", "-u", user.name, "--"] if os.geteuid() == 0 else []
    assignments = [f"{key}={value}" for key, value in env.items()]
    return subprocess.Popen(
        [*prefix, "env", "-i", *assignments, *argv],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, to stop it all at the end
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=SCRIPT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
    return process.returncode, out, err


def free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_post_build_installs_the_package_and_enables_the_management_plugin(
    user: User, home: Path
) -> None:
    stub = home / "bin" / "python"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\necho "$@" >> {home}/pip-calls\n')
    stub.chmod(0o755)
    os.chown(stub.parent, user.uid, user.gid)

    process = as_user(
        user,
        ["bash", str(BINDER / "postBuild")],
        {"HOME": str(home), "PATH": f"{stub.parent}:/usr/bin:/bin"},
        cwd=home,
    )
    status, out, err = finish(process)

    assert status == 0, out + err
    assert (home / "pip-calls").read_text() == (
        "-m pip install --no-cache-dir -e .[amqp,notebook,temporal]\n"
    )
    plugins = home / ".rabbitmq" / "enabled_plugins"
    assert plugins.read_text().strip() == "[rabbitmq_management]."
    assert plugins.stat().st_uid == user.uid


@pytest.fixture
def broker_ports(home: Path) -> Iterator[dict[str, int]]:
    """Ports for the broker binder/start runs; the broker is stopped at teardown."""
    amqp, management, distribution = free_ports(3)
    ports = {"amqp": amqp, "management": management, "distribution": distribution}
    yield ports
    pid_file = home / ".rabbitmq" / "rabbitmq.pid"
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    if pid is not None and alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert not listening(amqp)


async def round_trip(url: str) -> str:
    import aio_pika

    connection = await aio_pika.connect(url, timeout=30)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await channel.default_exchange.publish(
            aio_pika.Message(b"hello from the test"), routing_key=queue.name
        )
        message = await queue.get(timeout=10)
        await message.ack()
        return message.body.decode()


def test_start_runs_rabbitmq_as_the_user_on_given_ports_then_the_command(
    user: User, home: Path, broker_ports: dict[str, int]
) -> None:
    (home / "client.py").write_text(CLIENT)
    node = f"icij_nb_binder_{uuid.uuid4().hex[:8]}@localhost"
    env = {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_PORT": str(broker_ports["amqp"]),
        "RABBITMQ_MANAGEMENT_PORT": str(broker_ports["management"]),
        "RABBITMQ_DIST_PORT": str(broker_ports["distribution"]),
    }
    command = [
        user.python,
        str(home / "client.py"),
        str(broker_ports["amqp"]),
        str(broker_ports["management"]),
    ]

    process = as_user(user, ["bash", str(BINDER / "start"), *command], env, cwd=home)
    status, out, err = finish(process)

    assert status == 0, out + err
    report = json.loads(out.strip().splitlines()[-1])
    assert report == {
        "uid": user.uid,
        "speaks_amqp": True,
        "node": node,
        "amqp_url": f"amqp://guest:guest@127.0.0.1:{broker_ports['amqp']}/",
    }
    # The broker outlives the command (Jupyter, on Binder): a client uses it.
    url = f"amqp://guest:guest@127.0.0.1:{broker_ports['amqp']}/"
    assert asyncio.run(round_trip(url)) == "hello from the test"
    data = home / ".rabbitmq"
    assert (data / "rabbitmq.conf").stat().st_uid == user.uid
    assert any((data / "mnesia").iterdir())
    wait_until(
        lambda: "RabbitMQ is up" in (data / "log" / "server.out").read_text(),
        timeout_s=30,
        what="binder/start to log that RabbitMQ is up",
    )
