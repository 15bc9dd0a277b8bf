"""The task board in a real browser: JupyterLab driven by Playwright with chromium.

A JupyterLab server runs on 127.0.0.1 (a free port, token auth, a temporary root
folder) from this virtual environment; Debian's chromium (``/usr/bin/chromium``)
opens a notebook that starts an in-kernel pool and displays the board, then runs a
cell that blocks in ``tm.gather`` on slow tasks. From the page we check that rows
move QUEUED -> RUNNING -> DONE while that cell still shows ``[*]``, that the name
filter narrows the rows, and that a row's cancel button cancels its task. A
second notebook blocks a cell in ``tm.gather`` on a task that would sleep for a
minute: a click on its cancel button shows it CANCELLED, and the cell returns,
within a few seconds (the wait reads widget messages itself, ``ui_poll.py``). A
screenshot of the finished board is kept in the test's folder and as
``docs/board.png`` (the README shows it).

Without chromium, Playwright or JupyterLab the test is skipped with the reason, or
fails with it when ``ICIJ_NB_REQUIRE_BROWSER=1`` (``scripts/test`` installs
chromium when it runs as root).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(300)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "board.png"
SERVER_START_S = 90
UI_TIMEOUT_MS = 60_000

CELLS = {
    "setup": """\
import asyncio

import icij_nb as nb

app = nb.App("newsroom")


@app.task(group="io")
async def fetch(i: int, progress) -> int:
    for step in range(10):
        await progress(step / 10)
        await asyncio.sleep(0.15)
    return i


@app.task(group="io")
async def crawl(site: str) -> str:
    await asyncio.sleep(600)
    return site


@app.task(group="cpu", max_retries=0)
def parse(doc: str) -> str:
    if doc.endswith(".bad"):
        raise ValueError(f"cannot parse {doc}: truncated file")
    return doc.upper()


tm = nb.connect(app, store=":memory:")
tm.start_pool("io", workers=2)
tm.start_pool("cpu", workers=1)
print("ready")""",
    "board": """\
board = tm.board(page_size=14, refresh_s=0.2)
board""",
    "block": """\
handles = [tm.submit("fetch", {"i": i}, task_id=f"fetch-{i}") for i in range(8)]
print(tm.gather(handles, timeout_s=120))""",
    "more": """\
parsed = [tm.submit("parse", {"doc": d}) for d in ("memo.txt", "leak.bad")]
tm.gather(parsed, return_exceptions=True)
crawls = [tm.submit("crawl", {"site": s}, task_id=f"crawl-{s}") for s in "abc"]
print("submitted")""",
}
#: a task of the third wave (two workers, four waves of 1.5 s): QUEUED for two
#: waves, RUNNING in the third, DONE while the fourth still blocks the cell
WATCHED = "fetch-4"

STUCK_CELLS = {
    "setup": """\
import time

import icij_nb as nb

app = nb.App("stuck")


@app.task(group="cpu")
def sleepy() -> str:
    time.sleep(60)
    return "woke up"


tm = nb.connect(app, store=":memory:")
tm.start_pool("cpu", workers=1)
board = tm.board(refresh_s=0.2)
board""",
    "block": """\
started = time.monotonic()
stuck = tm.submit("sleepy", {}, task_id="sleepy-1")
outcome = tm.gather([stuck], return_exceptions=True)
waited = f"{time.monotonic() - started:.1f}s"
print("gathered", [type(o).__name__ for o in outcome], waited)""",
}
#: how soon after the click the task must show CANCELLED and the cell return
CANCEL_WITHIN_S = 5.0


def _require(reason: str) -> None:
    if os.environ.get("ICIJ_NB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (ICIJ_NB_REQUIRE_BROWSER=1)", pytrace=False)
    pytest.skip(reason)


def _check_browser_stack() -> None:
    if not CHROMIUM.exists():
        _require(
            f"{CHROMIUM} is missing: run scripts/test as root, or apt-get install "
            "chromium"
        )
    for module, extra in (("playwright", "test"), ("jupyterlab", "test")):
        if importlib.util.find_spec(module) is None:
            _require(f"{module} is not installed: pip install -e '.[{extra}]'")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    log: Path

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    _check_browser_stack()
    root, home = tmp_path / "root", tmp_path / "home"
    root.mkdir()
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # No news or update checks: they would reach out and pop up notifications.
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_PREFER_ENV_PATH": "1",
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "IPYTHONDIR": str(home / "ipython"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    log = tmp_path / "jupyterlab.log"
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}", "--LabApp.news_url=",
        "--LabApp.extension_manager=readonly",  # it would query PyPI otherwise
    ]  # fmt: skip
    if os.geteuid() == 0:  # CI and the development machines run as root
        command.append("--allow-root")
    with log.open("wb") as out:
        server = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root
        )
    lab = Lab(f"http://127.0.0.1:{port}", token, root, log)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not _answers(f"{lab.url}/api/status?token={token}"):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield lab
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=20)


@pytest.fixture
def page(lab: Lab) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1750, "height": 1400})
            page.set_default_timeout(UI_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def write_notebook(
    lab: Lab, cells: dict[str, str] = CELLS, name: str = "board.ipynb"
) -> str:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(source, id=cell_id)
        for cell_id, source in cells.items()
    ]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nbformat.write(notebook, lab.root / name)
    return name


def cell(page: Any, index: int) -> Any:
    return page.locator(".jp-Notebook .jp-Cell").nth(index)


def run_cell(page: Any, index: int) -> None:
    cell(page, index).locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")


def prompt(page: Any, index: int) -> str:
    return str(cell(page, index).locator(".jp-InputArea-prompt").inner_text()).strip()


def wait_output(page: Any, index: int, text: str) -> None:
    cell(page, index).locator(".jp-OutputArea-output", has_text=text).first.wait_for()


ROWS_JS = """() => Object.fromEntries(
    [...document.querySelectorAll('.icij-nb-board .icij-nb-cells')]
        .filter(e => e.offsetParent !== null)
        .map(e => [e.dataset.taskId, e.querySelector('.icij-nb-state').innerText]))"""


def shown_states(page: Any) -> dict[str, str]:
    return dict(page.evaluate(ROWS_JS))


def wait_states(
    page: Any, what: str, cond: Any, timeout_s: float = 60
) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        states = shown_states(page)
        if cond(states):
            return states
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}; the board shows {states}")
        time.sleep(0.1)


def open_notebook(page: Any, lab: Lab, name: str) -> None:
    page.goto(lab.notebook_url(name))
    page.locator(".jp-Notebook .jp-Cell .cm-content").first.wait_for()
    # A cell run before the kernel is connected would be dropped.
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for()


def test_board_cancel_works_while_a_cell_blocks_in_gather(lab: Lab, page: Any) -> None:
    open_notebook(page, lab, write_notebook(lab, STUCK_CELLS, "stuck.ipynb"))
    run_cell(page, 0)
    page.locator(".icij-nb-board .icij-nb-message", has_text="No tasks yet").wait_for()

    run_cell(page, 1)  # blocks in tm.gather on a task that sleeps for a minute
    wait_states(page, "sleepy-1 to run", lambda s: s.get("sleepy-1") == "RUNNING")
    assert prompt(page, 1).startswith("[*]"), "the cell should still be waiting"
    row = page.locator(".icij-nb-row", has=page.locator('[data-task-id="sleepy-1"]'))
    clicked = time.monotonic()
    row.locator(".icij-nb-cancel").click()

    wait_states(
        page,
        "sleepy-1 cancelled",
        lambda s: s.get("sleepy-1") == "CANCELLED",
        timeout_s=CANCEL_WITHIN_S,
    )
    shown_cancelled_s = time.monotonic() - clicked
    while prompt(page, 1).startswith("[*]"):
        elapsed = time.monotonic() - clicked
        assert elapsed < CANCEL_WITHIN_S, f"the cell still waits {elapsed:.1f}s after"
        time.sleep(0.05)
    returned_s = time.monotonic() - clicked
    wait_output(page, 1, "gathered ['TaskCancelled']")
    output = cell(page, 1).locator(".jp-OutputArea-output").first.inner_text()
    print(
        f"cancel clicked: CANCELLED shown after {shown_cancelled_s:.2f}s, "
        f"cell returned after {returned_s:.2f}s; the cell printed {output!r}"
    )
    waited_s = float(output.split()[-1].rstrip("s"))
    assert waited_s < 30, "the cell waited for the task instead of the cancel"


def test_board_in_jupyterlab_moves_filters_and_cancels(
    lab: Lab, page: Any, tmp_path: Path
) -> None:
    open_notebook(page, lab, write_notebook(lab))

    run_cell(page, 0)
    wait_output(page, 0, "ready")
    run_cell(page, 1)
    page.locator(".icij-nb-board .icij-nb-message", has_text="No tasks yet").wait_for()

    # The blocking cell: sample the page until it is done.
    run_cell(page, 2)
    history: list[tuple[str, str]] = []
    deadline = time.monotonic() + 120
    while True:
        running = prompt(page, 2).startswith("[*]")
        state = shown_states(page).get(WATCHED)
        if state and (not history or history[-1] != (state, str(running))):
            history.append((state, str(running)))
        if not running and state == "DONE":
            break
        assert time.monotonic() < deadline, f"the cell did not end: {history}"
        time.sleep(0.1)
    while_blocked = [s for s, blocked in history if blocked == "True"]
    for state in ("QUEUED", "RUNNING", "DONE"):
        assert state in while_blocked, f"{WATCHED} never shown {state}: {history}"
    order = [while_blocked.index(s) for s in ("QUEUED", "RUNNING", "DONE")]
    assert order == sorted(order), history
    wait_output(page, 2, "[0, 1, 2, 3, 4, 5, 6, 7]")

    # A filter narrows the rows.
    run_cell(page, 3)
    wait_output(page, 3, "submitted")
    wait_states(page, "13 rows", lambda s: len(s) == 13)
    page.locator(".icij-nb-filter-name input").fill("crawl")
    states = wait_states(page, "the crawl rows only", lambda s: len(s) == 3)
    assert set(states) == {"crawl-a", "crawl-b", "crawl-c"}

    # A cancel button cancels its task (a running one: its worker stops it).
    wait_states(page, "crawl-a to run", lambda s: s.get("crawl-a") == "RUNNING")
    row = page.locator(".icij-nb-row", has=page.locator('[data-task-id="crawl-a"]'))
    row.locator(".icij-nb-cancel").click()
    wait_states(page, "crawl-a cancelled", lambda s: s.get("crawl-a") == "CANCELLED")
    wait_states(page, "crawl-c to run", lambda s: s.get("crawl-c") == "RUNNING")

    page.locator(".icij-nb-filter-name input").fill("")
    wait_states(page, "all rows again", lambda s: len(s) == 13)
    board = page.locator(".icij-nb-board")
    board.screenshot(path=str(tmp_path / "board.png"))
    with contextlib.suppress(OSError):  # a read-only checkout keeps its picture
        shutil.copyfile(tmp_path / "board.png", DOCS_SCREENSHOT)
    assert (tmp_path / "board.png").stat().st_size > 10_000
