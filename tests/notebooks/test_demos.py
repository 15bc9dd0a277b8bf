"""The demo notebooks of ``notebooks/`` run end to end under papermill.

Each demo runs in a real ``python3`` kernel, in the test's own folder, with its
parameters pointing at the repository's data and at a fresh RabbitMQ vhost where it
needs a broker. The assertions read what the demo's cells print.
"""

from __future__ import annotations

import ast
import json
import socket
import urllib.error
import uuid
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest

# pytest finds fixtures in the module's namespace: these are used by name.
from rabbit import (  # noqa: F401
    VHOST_PREFIX,
    RabbitMQ,
    Vhost,
    delete_vhost,
    make_vhost,
    rabbitmq,
    rabbitmq_gate,
    vhost,
)

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(300)]

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"
CORPUS = NOTEBOOKS / "data" / "corpus.jsonl"
DEMOS = sorted(NOTEBOOKS.glob("*.ipynb")) + sorted(NOTEBOOKS.glob("*/*.ipynb"))
CELL_TIMEOUT_S = 240
#: the corpus's longest document, whose first inference runs out of memory
LONGEST_DOC = 3
BLANK_DOC = 17


def run(
    notebook: Path, tmp_path: Path, cwd: Path | None = None, **parameters: Any
) -> nbformat.NotebookNode:
    output = tmp_path / f"{notebook.stem}.out.ipynb"
    papermill.execute_notebook(
        str(notebook),
        str(output),
        parameters=parameters,
        kernel_name="python3",
        cwd=str(cwd or tmp_path),
        execution_timeout=CELL_TIMEOUT_S,
        progress_bar=False,
    )
    return nbformat.read(output, as_version=4)


def cell(notebook: nbformat.NotebookNode, cell_id: str) -> Any:
    return next(c for c in notebook.cells if c.get("id") == cell_id)


def stdout(notebook: nbformat.NotebookNode, cell_id: str) -> str:
    outputs = cell(notebook, cell_id).outputs
    return "".join(o.text for o in outputs if o.output_type == "stream")


def data(notebook: nbformat.NotebookNode, cell_id: str, mime: str) -> Any:
    outputs = cell(notebook, cell_id).outputs
    found = [o.data[mime] for o in outputs if mime in o.get("data", {})]
    assert found, f"cell {cell_id!r} has no {mime} output: {outputs!r}"
    return found[-1]


def vhost_exists(some: Vhost) -> bool:
    try:
        some.broker.api("GET", f"/api/vhosts/{some.quoted}")
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response's socket
        if exc.code == 404:
            return False
        raise
    return True


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- every demo -----------------------------------------------------------------------


@pytest.mark.parametrize("path", DEMOS, ids=lambda p: str(p.relative_to(NOTEBOOKS)))
def test_demo_is_committed_without_outputs_with_one_parameters_cell(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)

    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert notebook.metadata.kernelspec.name == "python3"


def test_there_are_six_demos_and_a_task_notebook() -> None:
    names = [str(p.relative_to(NOTEBOOKS)) for p in DEMOS]

    assert names == [
        "grouped_pipeline.ipynb",
        "notebook_fan_out.ipynb",
        "observe_only.ipynb",
        "output_and_timeline.ipynb",
        "quickstart.ipynb",
        "remote_pools.ipynb",
        "temporal.ipynb",
        "tasks/topic_report.ipynb",
    ]


# -- the grouped pipeline -----------------------------------------------------------


def check_grouped_pipeline(executed: nbformat.NotebookNode) -> None:
    assert stdout(executed, "preprocess") == (
        f"40 documents preprocessed, 1 failed: [{BLANK_DOC}]\n"
    )
    assert stdout(executed, "close") == (
        f"41 documents: 40 classified, failed: [{BLANK_DOC}], "
        f"retried: [{LONGEST_DOC}]\n"
    )
    board = data(executed, "board", "text/plain")
    assert board.startswith("TaskBoard: 81 tasks ERROR=1 DONE=80")
    failed = data(executed, "failed", "text/plain").splitlines()
    assert "rows 1-1 of 1 · state ERROR" in failed[3]
    assert "ValueError: document 17 is blank" in failed[4]
    table = data(executed, "table", "text/plain")
    assert "ValueError: document 17 is blank" in table
    assert "MemoryError: CUDA out of memory" in table
    topics = data(executed, "results", "text/plain")
    for topic in ("environment", "health", "offshore finance", "shipping"):
        assert topic in topics
    assert data(executed, "plot", "image/png")


def test_grouped_pipeline_runs_on_the_embedded_broker(tmp_path: Path) -> None:
    executed = run(
        NOTEBOOKS / "grouped_pipeline.ipynb",
        tmp_path,
        corpus=str(CORPUS),
        broker="memory",
    )

    check_grouped_pipeline(executed)
    assert "broker=memory" in data(executed, "connect", "text/plain")
    assert not (tmp_path / ".icij_nb").exists()  # the store was ":memory:"


@pytest.mark.rabbitmq
def test_grouped_pipeline_runs_on_rabbitmq(
    tmp_path: Path,
    vhost: Vhost,  # noqa: F811 - the fixture imported from rabbit
) -> None:
    executed = run(
        NOTEBOOKS / "grouped_pipeline.ipynb",
        tmp_path,
        corpus=str(CORPUS),
        broker=vhost.amqp_url,
    )

    check_grouped_pipeline(executed)
    assert "broker=amqp" in data(executed, "connect", "text/plain")
    assert {"TASK.cpu", "TASK.gpu"} <= vhost.queue_names()


# -- task output and the timeline ---------------------------------------------------


def test_output_demo_shows_each_tasks_output_and_the_timeline(tmp_path: Path) -> None:
    executed = run(NOTEBOOKS / "output_and_timeline.ipynb", tmp_path, n_docs=6)

    assert stdout(executed, "run") == "13 tasks done\n"
    # doc 2 has 5 pages; page 3 (2 + 3 is a multiple of 5) logs a warning
    assert stdout(executed, "sync-output").splitlines() == [
        "[stdout] doc 2: page 1 read",
        "[stdout] doc 2: page 2 read",
        "[WARNING demo.ocr] doc 2: page 3 is empty",
        "[stdout] doc 2: page 4 read",
        "[stdout] doc 2: page 5 read",
    ]
    # async tasks ran at once on one loop: each record holds its own lines, in order
    assert stdout(executed, "async-output") == (
        "[stdout] indexing doc 3\n[stderr] doc 3 indexed\n"
    )
    attempts = stdout(executed, "attempts")
    assert attempts.count("[stdout] fetching doc 1") == 3
    assert attempts.startswith("--- attempt 1 on ")
    assert "--- attempt 2 on " in attempts
    detail = data(executed, "detail", "text/html")
    assert "ConnectionError" in detail
    assert "fetching doc 1" in detail
    live = stdout(executed, "live")
    assert "[ocr ocr-" in live
    assert "] [stdout] doc 100: page 2 read" in live
    assert data(executed, "timeline", "image/png")
    timeline = stdout(executed, "close")  # the lanes: the workers that ran tasks
    assert timeline.startswith("<Timeline tasks=14 workers=")
    assert timeline.endswith(" not_started=0>\n")


# -- notebook tasks, fanned out -----------------------------------------------------


def test_fan_out_runs_one_notebook_task_per_keyword_and_links_outputs(
    tmp_path: Path,
) -> None:
    executed = run(
        NOTEBOOKS / "notebook_fan_out.ipynb",
        tmp_path,
        keywords=["company", "mine"],
        corpus=str(CORPUS),
        report_notebook=str(NOTEBOOKS / "tasks" / "topic_report.ipynb"),
        output_dir=str(tmp_path / "runs"),
        broker="memory",
    )

    outputs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert outputs == ["topic_report-company.ipynb", "topic_report-mine.ipynb"]
    report = nbformat.read(tmp_path / "runs" / outputs[0], as_version=4)
    assert "8 of 41 documents mention 'company'" in stdout(report, "read")
    assert data(executed, "links", "text/markdown") == (
        "- [topic_report-company.ipynb](runs/topic_report-company.ipynb): "
        "8 documents\n"
        "- [topic_report-mine.ipynb](runs/topic_report-mine.ipynb): 2 documents"
    )
    table = data(executed, "table", "text/plain")
    assert "company" in table
    assert "mine" in table


def test_task_notebook_runs_alone_with_its_defaults(tmp_path: Path) -> None:
    tasks = NOTEBOOKS / "tasks"

    executed = run(tasks / "topic_report.ipynb", tmp_path, cwd=tasks)

    value = ast.literal_eval(data(executed, "result", "text/plain"))
    assert value["keyword"] == "company"
    assert value["documents"] == 8
    assert len(value["top_words"]) == 5


# -- RabbitMQ: process and remote pools ---------------------------------------------


@pytest.mark.rabbitmq
def test_remote_pools_demo_uses_a_process_pool_and_a_cli_pool(
    tmp_path: Path,
    vhost: Vhost,  # noqa: F811 - the fixture imported from rabbit
) -> None:
    executed = run(NOTEBOOKS / "remote_pools.ipynb", tmp_path, broker=vhost.amqp_url)

    assert stdout(executed, "stop") == (
        "40 tasks, all {'DONE'}; cpu workers: 2, gpu workers: 1\n"
    )
    assert stdout(executed, "remote-pool") == (
        "started: icij-nb workers start build/remote_pools/pipeline_tasks.py:app "
        "--group gpu -n 1\n"
    )
    assert (tmp_path / "build" / "remote_pools" / "pipeline_tasks.py").is_file()
    log = (tmp_path / "build" / "remote_pools" / "remote-gpu.log").read_text()
    assert "consumes queue TASK.gpu" in log
    assert "guest:guest" not in log
    # Every worker is gone: the CLI pool was stopped, the process pool closed.
    vhost.wait_until(
        lambda: (
            vhost.consumer_count("TASK.gpu") + vhost.consumer_count("TASK.cpu") == 0
        ),
        what="the demo's workers to be gone",
    )


def test_remote_pools_demo_stops_with_one_sentence_when_no_broker_answers(
    tmp_path: Path,
) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{unused_port()}/%2F"

    with pytest.raises(papermill.PapermillExecutionError) as caught:
        run(NOTEBOOKS / "remote_pools.ipynb", tmp_path, broker=url)

    error = caught.value
    assert error.ename == "NotebookStopped"
    assert len(error.traceback) == 1  # the sentence, and no traceback
    assert error.traceback[0].startswith(
        "This notebook needs RabbitMQ. cannot connect to RabbitMQ at "
        "amqp://guest:***@127.0.0.1:"
    )
    executed = nbformat.read(tmp_path / "remote_pools.out.ipynb", as_version=4)
    assert cell(executed, "process-pool").execution_count is None


# -- RabbitMQ: observe-only -----------------------------------------------------------


@pytest.mark.rabbitmq
def test_observe_only_demo_sets_up_its_vhost_watches_and_deletes_it(
    tmp_path: Path,
    rabbitmq: RabbitMQ,  # noqa: F811 - the fixture imported from rabbit
) -> None:
    fresh = Vhost(rabbitmq, f"{VHOST_PREFIX}observe-demo-{uuid.uuid4().hex[:8]}")
    try:
        executed = run(
            NOTEBOOKS / "observe_only.ipynb",
            tmp_path,
            broker=fresh.amqp_url,
            management_url=rabbitmq.management_url,
        )
        still_there = vhost_exists(fresh)
    finally:
        delete_vhost(fresh)

    assert not still_there  # the notebook deleted the vhost it made
    assert stdout(executed, "vhost") == f"vhost {fresh.name!r} is ready\n"
    assert stdout(executed, "close") == "the observer saw {'DONE': 12}\n"
    assert "cannot submit, cancel or retry" in stdout(executed, "refuse")
    frame = data(executed, "watch", "text/plain")
    assert frame.count("count_words") >= 12
    assert json.loads(stdout(executed, "submit").split(": ", 1)[1]) == list(
        range(2, 14)
    )
