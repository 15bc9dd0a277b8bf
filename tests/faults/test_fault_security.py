"""Security: nothing from the wire runs, secrets stay secret, refusals are clear.

- pickle payloads sent to a running manager and a worker process are dead-lettered,
  never unpickled;
- a full run with a dedicated RabbitMQ user whose password is distinctive: the
  password appears in no repr, log, error, board, saved notebook, CLI output or
  store file (the test greps every one of them, and checks that the masked URL
  does appear, so that the grep means something);
- a wrong password, a user without access to the vhost, and a user that may not
  configure, write or read there each get one clear error naming the vhost (and
  the permission), at once, not a retry loop;
- the store file is readable by its owner only.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import stat
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nbformat
import pytest
from fault_app import app
from faultkit import HERE, WAIT_S
from nbclient import NotebookClient

import icij_nb as nb
from icij_nb.process_pool import ProcessPool
from icij_nb.testing import wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(240)]

PASSWORD = f"Pa55-{uuid.uuid4().hex[:10]}-s3cr3t"


class Trap:
    """Unpickling this creates ``path``: proof that someone ran pickle.loads."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def with_user(url: str, user: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{quote(user)}:{quote(password)}@{rest.split('@', 1)[1]}"


@pytest.fixture
def user(private_rabbit, vhost) -> str:
    """A user of the vhost with a distinctive password (policymaker: it may set
    icij-worker's policies through the management API)."""
    name = f"fault-{uuid.uuid4().hex[:8]}"
    private_rabbit.create_user(name, PASSWORD, "policymaker")
    private_rabbit.grant(vhost, name)
    return name


# -- nothing from the wire is executed ------------------------------------------------


def test_pickles_sent_to_a_manager_and_a_worker_process_are_never_unpickled(
    managers, vhost, raw, scratch, figures
):
    trap = scratch / "unpickled"
    payloads = [
        pickle.dumps(Trap(trap), protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)
    ]
    tm = managers(app, store=scratch / "tasks.sqlite3")
    pool = tm.start_pool("cpu", workers=1, processes=True)
    assert isinstance(pool, ProcessPool)
    vhost.wait_until(lambda: vhost.consumer_count("TASK.cpu") == 1, WAIT_S)

    for body in payloads:
        raw.publish("exchangeManagerEvents", "routingKeyManagerEvents", body)
        raw.publish("exchangeMainTasks", "cpu", body)

    wait_until(
        lambda: (
            (raw.ready("MANAGER_EVENT_DLQ"), raw.ready("TASK_DLQ"))
            == (len(payloads), len(payloads))
        ),
        timeout_s=WAIT_S,
        what="every pickle in a dead-letter queue",
    )
    assert tm.submit("square", {"x": 3}).result(timeout_s=WAIT_S) == 9
    assert sorted(raw.take("MANAGER_EVENT_DLQ")) == sorted(payloads)
    assert sorted(raw.take("TASK_DLQ")) == sorted(payloads)
    assert not trap.exists()
    log = pool.log_files[0].read_text()
    assert log.count("set aside") == len(payloads)
    figures.record(
        "9a-pickle-payloads",
        payloads=2 * len(payloads),
        dead_lettered=2 * len(payloads),
        unpickled=int(trap.exists()),
    )


# -- secrets -----------------------------------------------------------------------

NOTEBOOK_CELLS = [
    "import os, sys\nsys.path.insert(0, os.environ['FAULT_DIR'])\n"
    "import icij_nb as nb\nfrom fault_app import app",
    "tm = nb.connect(app, broker=os.environ['FAULT_URL'], "
    "store=os.environ['FAULT_STORE'], management_url=os.environ['FAULT_MGMT'])\n"
    "tm",
    "tm.broker",
    "pool = tm.start_pool('cpu', workers=1, processes=True)\npool",
    "h = tm.submit('square', {'x': 4})\nh.result(timeout_s=60)\nh",
    "try:\n    tm.submit('fail', {'why': 'on purpose'}).result(timeout_s=60)\n"
    "except nb.TaskFailed as exc:\n    print(exc)",
    "try:\n    nb.connect(app, broker=os.environ['FAULT_URL'], store=':memory:', "
    "management_url=os.environ['FAULT_MGMT'].rsplit(':', 1)[0] + ':1')\n"
    "except nb.BrokerUnavailable as exc:\n    print(exc)",
    "board = tm.board()\nboard",
    "tm.frame()",
    "tm.workers()",
    "tm.close()",
]


def run_notebook(path: Path, env: dict[str, str], cwd: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in NOTEBOOK_CELLS]
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(
            notebook,
            kernel_name="python3",
            timeout=120,
            resources={"metadata": {"path": str(cwd)}},
        ).execute()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    nbformat.write(notebook, path)


def every_file(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.notebook
def test_the_password_appears_in_no_output_of_a_full_run(
    vhost, user, scratch, cli_pool, caplog, figures
):
    url = with_user(vhost.amqp_url, user, PASSWORD)
    management = with_user(vhost.management_url + "/", user, PASSWORD).rstrip("/")
    store = scratch / "tasks.sqlite3"
    caplog.set_level(logging.DEBUG)
    shown: dict[str, str] = {}

    # A manager here, with a process pool, a CLI pool and a board.
    tm = nb.connect(app, broker=url, store=store, management_url=management)
    try:
        pool = tm.start_pool("cpu", workers=1, processes=True)
        cli = cli_pool("-g", "cpu", "-n", "2", url=url, management_url=management)
        vhost.wait_until(lambda: vhost.consumer_count("TASK.cpu") == 3, WAIT_S)
        done = tm.map("square", [{"x": x} for x in range(10)])
        failed = tm.submit("fail", {"why": "on purpose"})
        assert done.results(timeout_s=WAIT_S) == [x * x for x in range(10)]
        with pytest.raises(nb.TaskFailed) as failure:
            failed.result(timeout_s=WAIT_S)
        board = tm.board()
        board.refresh()
        board.show_detail(failed)
        shown |= {
            "manager repr": repr(tm) + tm._repr_html_(),
            "broker repr": repr(tm.broker),
            "pool repr": repr(pool) + pool._repr_html_(),
            "handle repr": repr(failed) + failed._repr_html_(),
            "task failure": str(failure.value),
            "board": repr(board) + json.dumps(board._repr_mimebundle_(), default=str),
            "frame": tm.frame().to_string() + tm.frame().to_html(),
            "workers": tm.workers().to_string(),
        }
        for label, bad_url, bad_management in [
            ("wrong management port", url, management.rsplit(":", 1)[0] + ":1"),
            ("wrong password", url.replace(PASSWORD, PASSWORD + "x"), management),
        ]:
            with pytest.raises(nb.BrokerUnavailable) as refused:
                nb.connect(
                    app, broker=bad_url, store=":memory:", management_url=bad_management
                )
            shown[label] = (
                f"{refused.value!s} {refused.value!r} {refused.value.__cause__!r}"
            )
        board.close()
    finally:
        tm.close()
    cli.proc.terminate()
    cli.proc.wait(timeout=WAIT_S)

    # The same from a notebook, saved with its outputs.
    saved = scratch / "saved.ipynb"
    run_notebook(
        saved,
        {
            "FAULT_DIR": str(HERE),
            "FAULT_URL": url,
            "FAULT_MGMT": management,
            "FAULT_STORE": str(scratch / "notebook.sqlite3"),
        },
        scratch,
    )

    outputs = {label: text.encode() for label, text in shown.items()}
    outputs["log records"] = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records
    ).encode()
    outputs["log text"] = caplog.text.encode()
    outputs |= every_file(scratch)  # stores, -wal files, pool logs, CLI logs
    leaks = [label for label, data in outputs.items() if PASSWORD.encode() in data]
    assert leaks == []
    # The masked URL is there: the grep looked where the URL is written.
    masked = f"{user}:***@".encode()
    assert masked in outputs["broker repr"]
    assert masked in outputs["log text"]
    assert any(
        masked in data for label, data in outputs.items() if label.endswith(".log")
    )
    assert b"***@" in outputs["saved.ipynb"]
    figures.record(
        "9b-password-never-shown",
        outputs_searched=len(outputs),
        bytes_searched=sum(len(d) for d in outputs.values()),
        leaks=len(leaks),
    )


# -- refusals ----------------------------------------------------------------------


def test_refused_credentials_and_permissions_are_one_clear_error(
    private_rabbit, vhost, user, figures
):
    url = with_user(vhost.amqp_url, user, PASSWORD)
    management = with_user(vhost.management_url + "/", user, PASSWORD).rstrip("/")
    refusals: dict[str, str] = {}

    def refused(label: str, broker_url: str) -> str:
        with pytest.raises(nb.BrokerError) as raised:
            nb.connect(
                app, broker=broker_url, store=":memory:", management_url=management
            )
        text = str(raised.value)
        assert vhost.name in text, label
        assert PASSWORD not in text, label
        refusals[label] = text
        return text

    assert "credentials" in refused("wrong password", url.replace(PASSWORD, "nope"))
    private_rabbit.broker.api(
        "DELETE", f"/api/permissions/{vhost.quoted}/{quote(user)}"
    )
    text = refused("no access to the vhost", url)
    assert user in text
    assert "no permissions" in text
    for permission in ("configure", "write", "read"):
        private_rabbit.grant(vhost, user, **{permission: "^$"})
        text = refused(f"no {permission} permission", url)
        assert "ACCESS_REFUSED" in text
        assert permission in text
    # Nothing keeps trying in the background: no connection of that user is left.
    vhost.wait_until(
        lambda: not [c for c in vhost.connections() if c.get("user") == user],
        WAIT_S,
        what=f"no connection of {user}",
    )
    left = [c for c in vhost.connections() if c.get("user") == user]
    figures.record(
        "9c-refusals", refusals=len(refusals), connections_left_retrying=len(left)
    )


def test_the_store_file_is_readable_by_its_owner_only(vhost, scratch):
    store = scratch / "private.sqlite3"
    tm = nb.connect(
        app, broker=vhost.amqp_url, store=store, management_url=vhost.management_url
    )
    try:
        tm.start_pool("cpu", workers=1)
        assert tm.submit("square", {"x": 2}).result(timeout_s=WAIT_S) == 4
        tm.frame()
        files = [p for p in scratch.iterdir() if p.name.startswith(store.name)]
        assert store in files
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    finally:
        tm.close()
    assert modes == dict.fromkeys(modes, 0o600)
