"""Notebooks as tasks: ``app.notebook_task(path)``, run by papermill on a worker.

Each scenario is a tiny notebook beside this file (``pipeline_<scenario>.ipynb``),
copied into the test's own folder so that output notebooks land there. Every run
starts a real ``python3`` kernel.
"""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

# pytest finds fixtures in the module's namespace: these are used by name.
from rabbit import make_vhost, rabbitmq, rabbitmq_gate, vhost  # noqa: F401

import icij_nb as nb
from icij_nb.pipelines import NotebookTask, choose_broker
from icij_nb.testing import wait_until

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(120)]

HERE = Path(__file__).parent
RUN_TIMEOUT_S = 60
#: pipeline_waits.ipynb's progress in its waiting cell: 4 of its 6 code cells
#: (papermill's injected one included) have run.
WAITING = 4 / 6 - 1e-9


def scenario(tmp_path: Path, name: str) -> Path:
    """A copy of ``pipeline_<name>.ipynb`` in ``tmp_path/notebooks``."""
    folder = tmp_path / "notebooks"
    folder.mkdir(exist_ok=True)
    return Path(shutil.copy(HERE / f"pipeline_{name}.ipynb", folder))


def read(path: str | Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(notebook: nbformat.NotebookNode) -> list[Any]:
    """The code cells of an output notebook, without papermill's injected cell."""
    return [
        c
        for c in notebook.cells
        if c.cell_type == "code"
        and "injected-parameters" not in c.metadata.get("tags", [])
    ]


def error_outputs(cell: Any) -> list[Any]:
    return [o for o in cell.outputs if o.output_type == "error"]


@pytest.fixture
def notebook_manager(app: nb.App, make_manager: Any) -> Any:
    """``start(app)``: a manager whose in-kernel pool serves the 'notebooks' group."""

    def start() -> nb.TaskManager:
        tm = make_manager(app)
        tm.start_pool("notebooks", workers=2, progress_interval_s=0.0)
        return tm

    return start


def failure(handle: nb.TaskHandle) -> nb.ErrorRecord:
    with pytest.raises(nb.TaskFailed) as caught:
        handle.result(timeout_s=RUN_TIMEOUT_S)
    assert caught.value.error is not None
    return caught.value.error


# -- a run that succeeds ------------------------------------------------------------


def test_notebook_task_returns_output_path_beside_input_and_result_cell_value(
    tmp_path: Path, app: nb.App, notebook_manager: Any
) -> None:
    path = scenario(tmp_path, "ok")
    task = app.notebook_task(path, group="notebooks")
    tm = notebook_manager()

    handle = tm.submit("pipeline_ok", {"n": 2, "word": "salut"})
    result = handle.result(timeout_s=RUN_TIMEOUT_S)

    assert isinstance(task, NotebookTask)
    output = Path(result["output_path"])
    assert output == path.parent / f"pipeline_ok.{handle.id}.ipynb"
    assert result["value"] == {
        "n": 2,
        "words": ["salut", "salut"],
        "ratio": 0.5,
        "cwd": str(path.parent),  # the kernel ran in the notebook's folder
    }
    assert result["warnings"] == []
    executed = read(output)
    assert code_cells(executed)[-1].outputs[0].text == "done\n"
    injected = [
        c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])
    ]
    assert "n = 2" in injected[0].source
    assert (path.parent / "written-here.txt").read_text() == "salut"


def test_output_template_and_working_directory_can_be_set(
    tmp_path: Path, app: nb.App, notebook_manager: Any
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    template = tmp_path / "runs" / "{name}-n{n}-{task_id}.ipynb"
    app.notebook_task(
        scenario(tmp_path, "ok"),
        name="ok",
        group="notebooks",
        output=template,
        cwd=work,
    )
    tm = notebook_manager()

    handle = tm.submit("ok", {"n": 4}, task_id="run-1")
    result = handle.result(timeout_s=RUN_TIMEOUT_S)

    assert result["output_path"] == str(tmp_path / "runs" / "ok-n4-run-1.ipynb")
    assert Path(result["output_path"]).is_file()
    assert result["value"]["cwd"] == str(work)
    assert (work / "written-here.txt").read_text() == "hello"


def test_progress_is_the_share_of_cells_executed_reported_while_it_runs(
    tmp_path: Path, app: nb.App, notebook_manager: Any
) -> None:
    gate = tmp_path / "gate"
    app.notebook_task(scenario(tmp_path, "waits"), name="waits", group="notebooks")

    @app.task
    async def ping() -> str:
        return "pong"

    tm = notebook_manager()
    tm.start_pool(None, workers=1)
    handle = tm.submit("waits", {"gate": str(gate)})

    running = wait_until(
        lambda: handle.task.progress >= WAITING and handle.task,
        timeout_s=RUN_TIMEOUT_S,
        what="progress while the notebook waits",
    )
    assert running.state is nb.TaskState.RUNNING
    assert running.progress == pytest.approx(WAITING)
    # The runtime loop is free while the notebook runs: other tasks complete.
    assert tm.submit("ping").result(timeout_s=10) == "pong"

    gate.touch()
    result = handle.result(timeout_s=RUN_TIMEOUT_S)

    assert result["value"] == "passed"
    assert handle.task.progress == 1.0


# -- failures -------------------------------------------------------------------------


def test_failing_cell_ends_in_error_with_its_index_source_and_traceback(
    tmp_path: Path, app: nb.App, notebook_manager: Any
) -> None:
    app.notebook_task(
        scenario(tmp_path, "fails_in_cell_2"), name="fails", group="notebooks"
    )
    tm = notebook_manager()

    handle = tm.submit("fails", {"divisor": 0})
    error = failure(handle)

    assert handle.state is nb.TaskState.ERROR
    assert error.name == "PipelineError"
    assert "failed in cell 2 (0-based)" in error.message
    assert "| quotient = numerator / divisor" in error.message
    assert "ZeroDivisionError: division by zero" in error.message
    assert "----> 1 quotient = numerator / divisor" in error.message  # kernel trace
    assert len(tm.errors(handle)) == 1  # a failed notebook is not retried
    # The partial output notebook was written: cell 2 holds the error, 3 never ran.
    output = tmp_path / "notebooks" / f"pipeline_fails_in_cell_2.{handle.id}.ipynb"
    assert str(output) in error.message
    cells = code_cells(read(output))
    assert error_outputs(cells[2])[0].ename == "ZeroDivisionError"
    assert cells[3].execution_count is None
    assert cells[3].outputs == []


def test_hanging_cell_times_out_into_error_naming_the_cell(
    tmp_path: Path, app: nb.App, notebook_manager: Any
) -> None:
    app.notebook_task(
        scenario(tmp_path, "hangs"),
        name="hangs",
        group="notebooks",
        cell_timeout_s=1,
    )
    tm = notebook_manager()

    handle = tm.submit("hangs")
    error = failure(handle)

    assert "timed out (cell timeout 1 s; the kernel was interrupted) in cell 2" in (
        error.message
    )
    assert "| time.sleep(seconds)" in error.message
    output = tmp_path / "notebooks" / f"pipeline_hangs.{handle.id}.ipynb"
    cells = code_cells(read(output))
    assert error_outputs(cells[2])[0].ename == "KeyboardInterrupt"
    assert cells[3].execution_count is None


def test_cancelling_a_running_notebook_interrupts_its_kernel(
    tmp_path: Path, app: nb.App, notebook_manager: Any
) -> None:
    app.notebook_task(scenario(tmp_path, "waits"), name="waits", group="notebooks")
    tm = notebook_manager()
    handle = tm.submit("waits", {"gate": str(tmp_path / "never")})
    # The waiting cell says when it runs: progress only says the cell before ended.
    wait_until(
        (tmp_path / "never.waiting").exists,
        timeout_s=RUN_TIMEOUT_S,
        what="the notebook's waiting cell to run",
    )

    handle.cancel()

    with pytest.raises(nb.TaskCancelled):
        handle.result(timeout_s=RUN_TIMEOUT_S)
    # The kernel got the interrupt: the waiting cell ended with KeyboardInterrupt,
    # and the partial output notebook says so. The cancel is reported at once;
    # the run's thread writes that notebook as it winds down, just after.
    output = tmp_path / "notebooks" / f"pipeline_waits.{handle.id}.ipynb"

    def interrupted_cells() -> Any:
        try:
            cells = code_cells(read(output))
        except (OSError, ValueError):  # not there yet, or being written
            return None
        outputs = error_outputs(cells[3])
        return cells if outputs and outputs[0].ename == "KeyboardInterrupt" else None

    cells = wait_until(
        interrupted_cells,
        timeout_s=RUN_TIMEOUT_S,
        what="the partial output notebook to show the interrupt",
    )
    assert cells[4].execution_count is None


def test_value_that_json_cannot_carry_fails_the_task_after_the_run(
    tmp_path: Path, app: nb.App, notebook_manager: Any
) -> None:
    app.notebook_task(scenario(tmp_path, "bad_result"), name="bad", group="notebooks")
    tm = notebook_manager()

    handle = tm.submit("bad")
    error = failure(handle)

    assert "cell tagged 'result' (cell 1) cannot travel as JSON" in error.message
    assert "TypeError: Object of type set is not JSON serializable" in error.message
    # The run went on to the end: the last cell ran.
    output = tmp_path / "notebooks" / f"pipeline_bad_result.{handle.id}.ipynb"
    assert code_cells(read(output))[-1].outputs[0].text == "after the result cell\n"


# -- bad input ------------------------------------------------------------------------


def test_missing_notebook_fails_at_registration_listing_the_folder(
    tmp_path: Path, app: nb.App
) -> None:
    scenario(tmp_path, "ok")

    with pytest.raises(nb.ConfigError) as caught:
        app.notebook_task(tmp_path / "notebooks" / "pipeline_okk.ipynb")

    message = str(caught.value)
    assert "no notebook at" in message
    assert "pipeline_okk.ipynb" in message
    assert "notebooks in" in message
    assert "pipeline_ok.ipynb" in message
    assert "pipeline_okk" not in app


def test_kernel_that_is_not_installed_fails_at_registration_listing_kernels(
    tmp_path: Path, app: nb.App
) -> None:
    with pytest.raises(nb.ConfigError) as caught:
        app.notebook_task(scenario(tmp_path, "ok"), kernel_name="no-such-kernel")

    message = str(caught.value)
    assert "kernel 'no-such-kernel'" in message
    assert "is not installed here; installed kernels: " in message
    assert "'python3'" in message


def test_unknown_parameter_is_refused_at_submit_listing_the_parameters(
    tmp_path: Path, app: nb.App, notebook_manager: Any
) -> None:
    app.notebook_task(scenario(tmp_path, "ok"), name="ok", group="notebooks")
    tm = notebook_manager()

    with pytest.raises(nb.InvalidArguments) as caught:
        tm.submit("ok", {"nn": 2})

    assert "It takes: n, word, ratio." in str(caught.value)
    assert len(tm.frame()) == 0


def test_parameter_of_the_wrong_type_fails_before_a_kernel_starts(
    tmp_path: Path, app: nb.App, notebook_manager: Any
) -> None:
    app.notebook_task(scenario(tmp_path, "ok"), name="ok", group="notebooks")
    tm = notebook_manager()

    handle = tm.submit("ok", {"n": "three", "ratio": 1})
    error = failure(handle)

    assert error.name == "InvalidArguments"
    assert error.message == (
        "parameter 'n' of notebook 'pipeline_ok.ipynb' takes an int (its default "
        "is 3), got 'three' (str); nothing ran"
    )
    assert list((tmp_path / "notebooks").glob("pipeline_ok.*.ipynb")) == []


def test_notebook_without_parameters_cell_runs_and_reports_papermills_warning(
    tmp_path: Path, app: nb.App, notebook_manager: Any
) -> None:
    app.notebook_task(scenario(tmp_path, "no_parameters"), name="np", group="notebooks")
    tm = notebook_manager()

    result = tm.submit("np", {"greeting": "hello"}).result(timeout_s=RUN_TIMEOUT_S)

    assert (
        "Input notebook does not contain a cell with tag 'parameters'"
        in (result["warnings"])
    )
    # papermill injected the value at the top; the notebook's own line came after.
    assert result["value"] == "hi"
    assert Path(result["output_path"]).is_file()


def test_registering_the_same_notebook_again_replaces_it_another_is_a_duplicate(
    tmp_path: Path, app: nb.App
) -> None:
    first = app.notebook_task(scenario(tmp_path, "ok"), name="job")
    again = app.notebook_task(scenario(tmp_path, "ok"), name="job", group="cpu")

    with pytest.raises(nb.DuplicateTask):
        app.notebook_task(scenario(tmp_path, "hangs"), name="job")

    assert (first.group, again.group) == (None, "cpu")
    assert app.get("job").group_name == "cpu"


# -- on RabbitMQ, in worker processes ------------------------------------------------


@pytest.mark.rabbitmq
def test_notebook_task_runs_in_a_process_pool_over_rabbitmq(
    tmp_path: Path,
    app: nb.App,
    vhost: Any,  # noqa: F811 - the fixture imported from rabbit
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # the pool's logs go to ./.icij_nb/logs
    app.notebook_task(scenario(tmp_path, "ok"), name="ok", group="notebooks")
    tm = nb.connect(app, broker=vhost.amqp_url, store=":memory:")
    try:
        tm.start_pool("notebooks", workers=1, processes=True)

        handle = tm.submit("ok", {"n": 1})
        result = handle.result(timeout_s=RUN_TIMEOUT_S)
    finally:
        tm.close(timeout_s=60)

    assert result["value"]["words"] == ["hello"]
    assert Path(result["output_path"]).name == f"pipeline_ok.{handle.id}.ipynb"


# -- docs/pipelines.md --------------------------------------------------------------

DOCS = HERE.parents[1] / "docs" / "pipelines.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def test_docs_examples_run_in_a_kernel(tmp_path: Path) -> None:
    blocks = PYTHON_BLOCK.findall(DOCS.read_text(encoding="utf-8"))
    shutil.copytree(HERE.parents[1] / "notebooks", tmp_path / "notebooks")
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(block) for block in blocks]
    )
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=RUN_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},
    )

    client.execute()  # raises CellExecutionError with the failing block

    printed = [
        "".join(o.text for o in c.outputs if o.output_type == "stream")
        for c in notebook.cells
    ]
    assert len(blocks) == 4
    assert printed[1].startswith("{'keyword': 'mine', 'documents': 2, 'top_words'")
    assert printed[2] == "bank 2\nship 2\n"
    assert (
        "parameter 'top' of notebook 'topic_report.ipynb' takes an int" in (printed[3])
    )


# -- choose_broker ----------------------------------------------------------------


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"amqp://guest:guest@127.0.0.1:{port}/"


def test_choose_broker_passes_explicit_choices_through() -> None:
    assert choose_broker("memory") == "memory"
    assert choose_broker("amqp://u:p@rabbit:5672/x") == "amqp://u:p@rabbit:5672/x"


def test_choose_broker_falls_back_to_the_embedded_broker_when_none_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ICIJ_NB_AMQP_URL", closed_port_url())

    assert choose_broker("auto") == "memory"


@pytest.mark.rabbitmq
def test_choose_broker_picks_rabbitmq_when_it_answers(
    monkeypatch: pytest.MonkeyPatch,
    vhost: Any,  # noqa: F811 - the fixture imported from rabbit
) -> None:
    monkeypatch.setenv("ICIJ_NB_AMQP_URL", vhost.amqp_url)

    assert choose_broker("auto") == vhost.amqp_url
