"""The ``%icij`` magics, in a real IPython shell.

Every test runs cells through ``shell.run_cell`` (or ``run_line_magic``), as a
notebook would, and reads what they print with capsys: a bad line must print a usage
message and no traceback, a good one must reach the public API.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from rabbit import make_vhost, rabbitmq, rabbitmq_gate, vhost
from traitlets.config import Config

import icij_nb as nb
from icij_nb.board import TaskBoard
from icij_nb.magics import build_parser
from icij_nb.process_pool import ProcessPool

# The RabbitMQ fixtures, for the one test of an amqp:// connect.
__all__ = ["make_vhost", "rabbitmq", "rabbitmq_gate", "vhost"]

RESULT_TIMEOUT_S = 10


@pytest.fixture(scope="module")
def ipython(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InteractiveShell]:
    """One IPython shell for the module, with its profile and history kept in tmp."""
    saved_env = os.environ.get("IPYTHONDIR")
    saved_main = sys.modules["__main__"]
    os.environ["IPYTHONDIR"] = str(tmp_path_factory.mktemp("ipython"))
    config = Config()
    config.HistoryManager.hist_file = ":memory:"  # no history thread, no file
    shell = InteractiveShell.instance(config=config, colors="nocolor")
    yield shell
    InteractiveShell.clear_instance()
    sys.modules["__main__"] = saved_main  # the shell installs its own __main__
    if saved_env is None:
        os.environ.pop("IPYTHONDIR", None)
    else:
        os.environ["IPYTHONDIR"] = saved_env


@pytest.fixture
def shell(ipython: InteractiveShell) -> Iterator[InteractiveShell]:
    """The shell with ``%load_ext icij_nb`` done and a fresh namespace; the task
    managers left in the namespace are closed and the extension unloaded at teardown.
    """
    ipython.reset(new_session=False)
    ipython.run_line_magic("load_ext", "icij_nb")
    yield ipython
    for value in list(ipython.user_ns.values()):
        if isinstance(value, nb.TaskManager):
            value.close(timeout_s=30)
    ipython.run_line_magic("unload_ext", "icij_nb")
    ipython.reset(new_session=False)


class Run:
    """Runs one cell and keeps what it printed (stdout and stderr together)."""

    def __init__(self, shell: InteractiveShell, capsys: pytest.CaptureFixture[str]):
        self.shell = shell
        self.capsys = capsys

    def __call__(self, code: str) -> str:
        self.capsys.readouterr()
        result = self.shell.run_cell(code)
        captured = self.capsys.readouterr()
        self.result = result
        return captured.out + captured.err

    @property
    def ns(self) -> dict[str, Any]:
        return self.shell.user_ns


@pytest.fixture
def run(shell: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(shell, capsys)


def assert_usage_without_traceback(output: str, run: Run, prog: str) -> None:
    assert run.result.error_in_exec is None, output
    assert f"usage: {prog}" in output
    assert f"{prog}: error:" in output
    assert "Traceback" not in output


def assert_error_without_traceback(output: str, run: Run, words: str) -> None:
    assert run.result.error_in_exec is None, output
    assert "icij: error:" in output
    assert words in output
    assert "Traceback" not in output


# An app and a manager made in Python, not by the magics.
MINE = """
import icij_nb as nb
mine = nb.App("mine")
tm = nb.connect(mine, store=":memory:")
"""
ECHO_CELL = "%%icij task cpu\ndef echo(**kwargs):\n    return kwargs\n"


@pytest.fixture
def echo(run: Run) -> nb.TaskManager:
    """A connected manager (in memory) whose app has ``echo`` in group cpu."""
    run("%icij connect --store :memory:")
    run(ECHO_CELL)
    return run.ns["tm"]


# -- loading ----------------------------------------------------------------------


def test_load_ext_adds_the_icij_line_and_cell_magic(shell: InteractiveShell) -> None:
    assert shell.find_line_magic("icij") is not None
    assert shell.find_cell_magic("icij") is not None


def test_loading_twice_is_harmless(run: Run) -> None:
    run("%load_ext icij_nb")
    nb.load_ipython_extension(run.shell)
    nb.load_ipython_extension(run.shell)

    output = run("%icij connect --store :memory:")

    assert run.result.success, output
    assert isinstance(run.ns["tm"], nb.TaskManager)


def test_unload_removes_the_magic_and_keeps_the_manager(run: Run) -> None:
    run("%icij connect --store :memory:")

    run("%unload_ext icij_nb")

    assert run.shell.find_line_magic("icij") is None
    assert run.shell.find_cell_magic("icij") is None
    assert not run.ns["tm"].closed
    run("%load_ext icij_nb")  # the fixture unloads it again


def test_reload_ext_keeps_the_magic_and_the_current_manager(run: Run) -> None:
    run("%icij connect --store :memory:")
    tm = run.ns["tm"]

    output = run("%reload_ext icij_nb")
    assert run.result.success, output
    status = run("%icij status")

    assert run.result.success, status
    assert repr(tm) in status
    assert run.ns["tm"] is tm


# -- help ---------------------------------------------------------------------------


SUBCOMMANDS = [
    "app",
    "connect",
    "task",
    "pool",
    "pools",
    "submit",
    "map",
    "gather",
    "output",
    "status",
    "board",
    "frame",
    "cancel",
    "retry",
    "close",
]


def test_the_parser_has_the_documented_subcommands(shell: InteractiveShell) -> None:
    magics = shell.magics_manager.registry["IcijMagics"]
    parser = build_parser(magics)
    actions = [a for a in parser._actions if a.dest == "command"]
    assert sorted(actions[0].choices) == sorted(SUBCOMMANDS)


def test_icij_without_arguments_lists_every_subcommand(run: Run) -> None:
    output = run("%icij")

    assert run.result.success
    assert "usage: %icij" in output
    for name in SUBCOMMANDS:
        assert re.search(rf"^\s+{name}\s", output, re.MULTILINE), name


def test_question_mark_shows_every_subcommand(run: Run) -> None:
    output = run("%icij?")

    assert "Run icij_nb tasks from the notebook" in output
    for name in SUBCOMMANDS:
        assert re.search(rf"^\s+(%%icij )?{name}\b", output, re.MULTILINE), name


@pytest.mark.parametrize(
    ("line", "usage"),
    [
        ("-h", "%icij"),
        ("pool -h", "%icij pool"),
        ("pool start -h", "%icij pool start"),
        ("submit -h", "%icij submit"),
        ("board -h", "%icij board"),
        ("task -h", "%icij task"),
        ("pool", "%icij pool"),
    ],
)
def test_help_prints_usage_and_options_without_traceback(
    run: Run, line: str, usage: str
) -> None:
    output = run(f"%icij {line}")

    assert run.result.error_in_exec is None
    assert f"usage: {usage}" in output
    assert "-h, --help" in output
    assert "Traceback" not in output


# -- bad input ------------------------------------------------------------------------


def test_the_shell_under_test_shows_tracebacks(run: Run) -> None:
    # Otherwise "no traceback" below would prove nothing.
    assert "Traceback" in run("1 / 0")


@pytest.mark.parametrize(
    ("line", "prog", "words"),
    [
        ("nope", "%icij", "invalid choice: 'nope'"),
        ("pool start cpu -n x", "%icij pool start", "invalid int value: 'x'"),
        ("pool start cpu --bogus", "%icij pool start", "unrecognized arguments"),
        ("status now", "%icij status", "unrecognized arguments: now"),
        ("submit echo n=1 --bogus", "%icij submit", "unrecognized arguments"),
        ("submit", "%icij submit", "required: NAME"),
        ("submit echo 3", "%icij submit", "expected key=value"),
        ("submit echo 1x=3", "%icij submit", "expected key=value"),
        ("submit echo n=1 n=2", "%icij submit", "argument 'n' given twice"),
        ("submit echo 'doc=a", "%icij", "No closing quotation"),
        ("map echo", "%icij map", "--args-json"),
        ("map echo --args-json [", "%icij map", "not valid JSON"),
        ("map echo --args-json '{\"n\": 1}'", "%icij map", "must be a JSON list"),
        ("board --state nope", "%icij board", "unknown task state 'nope'"),
        ("cancel", "%icij cancel", "required: ID"),
        ("task cpu", "%icij task", "task is a cell magic"),
    ],
)
def test_bad_arguments_print_usage_without_traceback(
    run: Run, echo: nb.TaskManager, line: str, prog: str, words: str
) -> None:
    output = run(f"%icij {line}")

    assert_usage_without_traceback(output, run, prog)
    assert words in output
    assert echo.counts[nb.TaskState.QUEUED] == 0  # nothing was submitted


def test_a_subcommand_other_than_task_is_refused_as_a_cell_magic(run: Run) -> None:
    output = run("%%icij status\nx = 1\n")

    assert_usage_without_traceback(output, run, "%icij status")
    assert "only 'task' works as a cell magic" in output
    assert "x" not in run.ns


def test_commands_without_a_manager_say_to_connect(run: Run) -> None:
    output = run("%icij status")

    assert_error_without_traceback(output, run, "run %icij connect first")


def test_a_tm_that_is_not_a_manager_is_named_in_the_error(run: Run) -> None:
    run("tm = 'not a manager'")

    output = run("%icij pools")

    assert_error_without_traceback(output, run, "tm is a str")


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("submit nope x=1", "no task named 'nope'"),
        ("pool start gpu", "no task group named 'gpu'"),
        ("pool start cpu -n 0", "workers >= 1"),
        ("pool stop gpu", "no pool serves group 'gpu'"),
        ("cancel no-such-id", "no task with id 'no-such-id'"),
        ("retry no-such-id", "no task with id 'no-such-id'"),
        ("connect --broker nowhere", "unknown broker 'nowhere'"),
    ],
)
def test_api_errors_print_icij_error_without_traceback(
    run: Run, echo: nb.TaskManager, line: str, words: str
) -> None:
    output = run(f"%icij {line}")

    assert_error_without_traceback(output, run, words)


def test_processes_with_the_memory_broker_is_an_icij_error(
    run: Run, echo: nb.TaskManager
) -> None:
    output = run("%icij pool start cpu --processes")

    assert_error_without_traceback(output, run, "cannot reach the memory broker")
    assert echo.pools == []


@pytest.mark.rabbitmq
def test_a_task_of_a_cell_after_connect_is_queued_on_rabbitmq(
    vhost: Any, run: Run
) -> None:
    run(f"%icij connect --broker {vhost.amqp_url} --store :memory:")
    run("%%icij task late\ndef later():\n    return 1\n")

    output = run("h = %icij submit later")

    assert "error" not in output
    assert run.ns["h"].state is nb.TaskState.QUEUED
    assert "TASK.late" in vhost.queue_names()


@pytest.mark.rabbitmq
@pytest.mark.timeout(180)
def test_a_process_pool_runs_a_task_of_a_cell(
    vhost: Any, run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the pool writes its logs in .icij_nb/logs
    run(f"%icij connect --broker {vhost.amqp_url} --store :memory:")
    run("%%icij task cpu\nimport os\ndef whoami():\n    return os.getpid()\n")

    pool = run.shell.run_line_magic("icij", "pool start cpu --processes -n 1")
    output = run("h = %icij submit whoami")
    handle = run.ns.get("h")
    assert handle is not None, output

    assert isinstance(pool, ProcessPool)
    assert handle.result(timeout_s=60) in pool.pids
    assert os.getpid() not in pool.pids


# -- app and connect ---------------------------------------------------------------


def test_app_creates_selects_and_shows_the_current_app(run: Run) -> None:
    first = run.shell.run_line_magic("icij", "app alpha")
    second = run.shell.run_line_magic("icij", "app beta")
    again = run.shell.run_line_magic("icij", "app alpha")
    current = run.shell.run_line_magic("icij", "app")

    assert isinstance(first, nb.App)
    assert first.name == "alpha"
    assert second.name == "beta"
    assert again is first
    assert current is first
    assert run.ns["icij_app"] is first


def test_connect_makes_the_default_notebook_app_and_stores_tm(run: Run) -> None:
    output = run("%icij connect --store :memory:")

    tm = run.ns["tm"]
    assert isinstance(tm, nb.TaskManager)
    assert tm.app.name == "notebook"
    assert run.ns["icij_app"] is tm.app
    assert f"tm = {tm!r}" in output


def test_connect_uses_the_selected_app(run: Run) -> None:
    run("%icij app pipeline")

    run("%icij connect --store :memory:")

    assert run.ns["tm"].app is run.ns["icij_app"]
    assert run.ns["tm"].app.name == "pipeline"


def test_connect_writes_the_store_file_it_is_given(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "tasks.sqlite3"

    run(f"%icij connect --store {path}")

    assert path.exists()
    assert str(path) in repr(run.ns["tm"])


def test_connect_again_closes_the_previous_manager(run: Run) -> None:
    run("%icij connect --store :memory:")
    first = run.ns["tm"]

    output = run("%icij connect --store :memory:")

    assert first.closed
    assert run.ns["tm"] is not first
    assert not run.ns["tm"].closed
    assert "closed the previous manager" in output


def test_a_failed_connect_leaves_tm_as_it_was(run: Run) -> None:
    run("%icij connect --store :memory:")
    first = run.ns["tm"]

    output = run("%icij connect --broker nowhere --store :memory:")

    assert_error_without_traceback(output, run, "unknown broker 'nowhere'")
    assert run.ns["tm"] is first
    assert not first.closed


@pytest.mark.rabbitmq
def test_connect_to_rabbitmq_prints_the_url_with_a_masked_password(
    vhost: Any, run: Run
) -> None:
    # vhost first: it is deleted after the shell fixture closed the manager.
    password = vhost.amqp_url.split("@")[0].rsplit(":", 1)[1]

    output = run(f"%icij connect --broker {vhost.amqp_url} --store :memory:")

    assert run.ns["tm"].broker.kind == "amqp", output
    assert ":***@" in output
    assert f":{password}@" not in output


def test_selecting_another_app_than_tm_serves_prints_a_note(run: Run) -> None:
    run("%icij connect --store :memory:")

    output = run("%icij app other")

    assert "tm serves app 'notebook'" in output
    assert "%icij connect" in output


def test_magics_use_a_manager_made_in_python(run: Run) -> None:
    run(MINE)
    run(ECHO_CELL)
    run("%icij pool start cpu")

    handle = run.shell.run_line_magic("icij", "submit echo n=1")

    assert run.ns["mine"].task_names == ["echo"]
    assert handle.result(timeout_s=RESULT_TIMEOUT_S) == {"n": 1}


# -- pools ---------------------------------------------------------------------------


def test_pool_start_returns_a_running_pool_of_n_workers(
    run: Run, echo: nb.TaskManager
) -> None:
    pool = run.shell.run_line_magic("icij", "pool start cpu -n 3")

    assert isinstance(pool, nb.InKernelPool)
    assert pool.group == "cpu"
    assert pool.size == 3
    assert echo.pools == [pool]


def test_pools_lists_running_pools_and_says_when_there_are_none(
    run: Run, echo: nb.TaskManager
) -> None:
    assert "no pools running" in run("%icij pools")
    run("%icij pool start cpu -n 2")

    output = run("%icij pools")

    assert repr(echo.pools[0]) in output


def test_pool_stop_stops_the_pools_of_the_group(run: Run, echo: nb.TaskManager) -> None:
    pool = run.shell.run_line_magic("icij", "pool start cpu")

    output = run("%icij pool stop cpu")

    assert pool.stopped
    assert echo.pools == []
    assert "stopped <InKernelPool 'cpu'" in output


def test_pool_start_without_a_group_serves_ungrouped_tasks(run: Run) -> None:
    run("%icij connect --store :memory:")
    run("%%icij task\ndef plain(x):\n    return x + 1\n")

    pool = run.shell.run_line_magic("icij", "pool start")
    handle = run.shell.run_line_magic("icij", "submit plain x=1")

    assert pool.group is None
    assert handle.result(timeout_s=RESULT_TIMEOUT_S) == 2


def test_pool_stop_all_stops_every_pool(run: Run, echo: nb.TaskManager) -> None:
    run("%%icij task io\ndef fetch():\n    return 1\n")
    run("%icij pool start cpu")
    run("%icij pool start io")

    run("%icij pool stop --all")

    assert echo.pools == []


# -- submit and map -------------------------------------------------------------------


def test_submit_reads_values_as_json_else_as_strings(
    run: Run, echo: nb.TaskManager
) -> None:
    run("%icij pool start cpu")

    run(
        "h = %icij submit echo n=3 s=abc xs=[1,2] 'd={\"a\": 1}' b=true z=null "
        "'q=\"3\"' f=1.5 e= nan=NaN 'sp=a b'"
    )

    assert run.ns["h"].result(timeout_s=RESULT_TIMEOUT_S) == {
        "n": 3,
        "s": "abc",
        "xs": [1, 2],
        "d": {"a": 1},
        "b": True,
        "z": None,
        "q": "3",
        "f": 1.5,
        "e": "",
        "nan": "NaN",
        "sp": "a b",
    }


def test_the_line_is_not_expanded_by_ipython(run: Run, echo: nb.TaskManager) -> None:
    run("%icij pool start cpu")
    run("x = 5")

    handle = run.shell.run_line_magic("icij", "submit echo 'a={x}' b=$x")

    assert handle.result(timeout_s=RESULT_TIMEOUT_S) == {"a": "{x}", "b": "$x"}


def test_submit_passes_max_retries_and_task_id(run: Run, echo: nb.TaskManager) -> None:
    handle = run.shell.run_line_magic(
        "icij", "submit echo n=1 --task-id mine-1 s=x --max-retries 0 b=2"
    )

    assert handle.id == "mine-1"
    assert echo.get("mine-1").max_attempts == 1
    assert echo.get("mine-1").args == {"n": 1, "s": "x", "b": 2}


def test_submit_with_args_the_function_does_not_take_is_an_icij_error(
    run: Run,
) -> None:
    run("%icij connect --store :memory:")
    run("%%icij task cpu\ndef one(x):\n    return x\n")

    output = run("%icij submit one y=1")

    assert_error_without_traceback(output, run, "do not fit task 'one'")


def test_map_submits_one_task_per_args_object(run: Run, echo: nb.TaskManager) -> None:
    run("%icij pool start cpu -n 2")

    batch = run.shell.run_line_magic(
        "icij", 'map echo --max-retries 1 --args-json \'[{"n": 1}, {"n": 2}]\''
    )

    assert isinstance(batch, nb.TaskBatch)
    assert batch.results(timeout_s=RESULT_TIMEOUT_S) == [{"n": 1}, {"n": 2}]
    assert {echo.get(h).max_attempts for h in batch} == {2}


# -- waiting ----------------------------------------------------------------------

# It sleeps after printing: live output shows what arrives while the magic waits.
CHATTY_CELL = (
    "%%icij task cpu\nimport time\n"
    "def chatty(n):\n    print(f'hello {n}')\n    time.sleep(0.5)\n    return n * 2\n"
)


def test_submit_and_map_with_wait_return_the_results(
    run: Run, echo: nb.TaskManager
) -> None:
    run("%icij pool start cpu -n 2")

    assert run.shell.run_line_magic("icij", "submit echo n=1 --wait") == {"n": 1}
    results = run.shell.run_line_magic(
        "icij", 'map echo --wait --timeout-s 10 --args-json \'[{"n": 1}, {"n": 2}]\''
    )
    assert results == [{"n": 1}, {"n": 2}]


def test_show_output_prints_the_tasks_output_while_the_magic_waits(
    run: Run, echo: nb.TaskManager
) -> None:
    run(CHATTY_CELL)
    run("%icij pool start cpu")

    output = run("x = %icij submit chatty n=3 --show-output --task-id chatty-3")

    assert run.result.success, output
    assert run.ns["x"] == 6  # --show-output waits
    assert "[chatty chatty-3] [stdout] hello 3" in output


def test_no_show_output_overrides_the_managers_default(
    run: Run, echo: nb.TaskManager
) -> None:
    run(CHATTY_CELL)
    run("%icij pool start cpu")
    echo.show_output = True

    output = run("x = %icij submit chatty n=4 --wait --no-show-output")

    assert run.ns["x"] == 8
    assert "hello 4" not in output
    run.shell.run_line_magic("icij", "submit chatty n=5 --task-id chatty-5")
    assert "[chatty chatty-5] [stdout] hello 5" in run(
        "%icij gather chatty-5 --show-output"
    )


def test_gather_waits_for_ids_and_output_prints_a_tasks_output(
    run: Run, echo: nb.TaskManager
) -> None:
    run(CHATTY_CELL)
    run("%icij pool start cpu")
    h = run.shell.run_line_magic("icij", "submit chatty n=7")

    assert run.shell.run_line_magic("icij", f"gather {h.id} --timeout-s 10") == [14]
    assert run(f"%icij output {h.id}") == "[stdout] hello 7\n"
    assert run(f"%icij output {h.id} --attempt -1") == "[stdout] hello 7\n"
    output = run("%icij output nope")
    assert_error_without_traceback(output, run, "nope")


def test_a_wait_that_times_out_is_an_icij_error(run: Run, echo: nb.TaskManager) -> None:
    output = run("%icij submit echo n=1 --wait --timeout-s 0.2")
    assert_error_without_traceback(output, run, "0.2")


# -- watching ---------------------------------------------------------------------


def test_status_shows_manager_pools_counts_by_group_and_workers(
    run: Run, echo: nb.TaskManager
) -> None:
    run("%icij pool start cpu")
    run.shell.run_line_magic("icij", "submit echo n=1").result(
        timeout_s=RESULT_TIMEOUT_S
    )
    run("%icij pool stop cpu")
    run("%icij submit echo n=2")
    run("%%icij task io\ndef fetch():\n    return 1\n")
    run("%icij submit fetch")

    output = run("%icij status")

    assert "<TaskManager 'notebook'" in output
    assert "pools: none" in output
    assert re.search(r"^  cpu: QUEUED=1 DONE=1$", output, re.M)
    assert re.search(r"^  io: QUEUED=1$", output, re.M)
    assert "workers alive:" in output


def test_status_of_a_closed_manager_prints_its_repr(run: Run) -> None:
    run("%icij connect --store :memory:")
    run("%icij close")

    output = run("%icij status")

    assert "<TaskManager 'notebook' closed" in output
    assert "icij: error" not in output


def test_frame_returns_the_task_table(run: Run, echo: nb.TaskManager) -> None:
    run("%icij submit echo n=1")

    frame = run.shell.run_line_magic("icij", "frame")

    assert list(frame.columns) == list(nb.FRAME_COLUMNS)
    assert list(frame["name"]) == ["echo"]


def test_board_returns_a_board_with_the_filters_given(
    run: Run, echo: nb.TaskManager
) -> None:
    board = run.shell.run_line_magic(
        "icij", "board --group cpu --state done --state Error --name ech --text abc"
    )

    assert isinstance(board, TaskBoard)
    assert board.filters.group == "cpu"
    assert board.filters.states == {nb.TaskState.DONE, nb.TaskState.ERROR}
    assert board.filters.name == "ech"
    assert board.filters.text == "abc"
    board.close()


def test_board_shows_the_tasks_its_filters_select(
    run: Run, echo: nb.TaskManager
) -> None:
    run("%icij pool start cpu")
    done = run.shell.run_line_magic("icij", "submit echo n=1")
    done.result(timeout_s=RESULT_TIMEOUT_S)
    run("%icij pool stop cpu")
    queued = run.shell.run_line_magic("icij", "submit echo n=2")

    everything = run.shell.run_line_magic("icij", "board")
    waiting = run.shell.run_line_magic("icij", "board --state queued")

    assert sorted(everything.frame["id"]) == sorted([done.id, queued.id])
    assert list(waiting.frame["id"]) == [queued.id]
    everything.close()
    waiting.close()


def test_board_with_an_unknown_group_prints_usage_without_traceback(
    run: Run, echo: nb.TaskManager
) -> None:
    output = run("%icij board --group gpu")

    assert_usage_without_traceback(output, run, "%icij board")
    assert "unknown group 'gpu'" in output


# -- cancel, retry, close ----------------------------------------------------------


def test_cancel_ends_a_queued_task_cancelled(run: Run, echo: nb.TaskManager) -> None:
    handle = run.shell.run_line_magic("icij", "submit echo n=1")

    output = run(f"%icij cancel {handle.id}")

    assert handle.state is nb.TaskState.CANCELLED
    assert f"task {handle.id!r} (echo) is CANCELLED" in output


def test_cancel_requeue_keeps_a_queued_task_queued(
    run: Run, echo: nb.TaskManager
) -> None:
    handle = run.shell.run_line_magic("icij", "submit echo n=1")

    run(f"%icij cancel {handle.id} --requeue")

    assert handle.state is nb.TaskState.QUEUED


def test_cancel_of_a_finished_task_is_an_icij_error(
    run: Run, echo: nb.TaskManager
) -> None:
    handle = run.shell.run_line_magic("icij", "submit echo n=1")
    run(f"%icij cancel {handle.id}")

    output = run(f"%icij cancel {handle.id}")

    assert_error_without_traceback(output, run, "already CANCELLED")


def test_retry_runs_a_cancelled_task_again(run: Run, echo: nb.TaskManager) -> None:
    handle = run.shell.run_line_magic("icij", "submit echo n=1")
    run(f"%icij cancel {handle.id}")
    run("%icij pool start cpu")

    again = run.shell.run_line_magic("icij", f"retry {handle.id}")

    assert again.id == handle.id
    assert again.result(timeout_s=RESULT_TIMEOUT_S) == {"n": 1}


def test_close_closes_the_manager(run: Run, echo: nb.TaskManager) -> None:
    run("%icij pool start cpu")

    output = run("%icij close")

    assert echo.closed
    assert echo.pools == []
    assert f"closed {echo!r}" in output


def test_commands_on_a_closed_manager_are_icij_errors(
    run: Run, echo: nb.TaskManager
) -> None:
    run("%icij close")

    output = run("%icij submit echo n=1")

    assert_error_without_traceback(output, run, "is closed")


# -- %%icij task ----------------------------------------------------------------------


def test_task_cell_registers_the_function_with_its_options(run: Run) -> None:
    output = run(
        "%%icij task cpu --max-retries 2 --timeout-s 5 --recover-from "
        "ValueError,KeyError\n"
        "def double(x):\n"
        "    return 2 * x\n"
    )

    spec = run.ns["icij_app"].get("double")
    assert spec.group_name == "cpu"
    assert spec.max_retries == 2
    assert spec.timeout_s == 5
    assert spec.recover_from == (ValueError, KeyError)
    assert run.ns["double"](4) == 8  # still a plain function in the notebook
    assert "registered task 'double' in app 'notebook'" in output


def test_task_cell_defaults_are_those_of_app_task(run: Run) -> None:
    run("%%icij task\ndef plain(x):\n    return x\n")

    spec = run.ns["icij_app"].get("plain")

    assert spec.group is None
    assert spec.max_retries == 3
    assert spec.timeout_s is None
    assert spec.recover_from == ()


def test_task_cell_resolves_exception_classes_of_the_notebook(run: Run) -> None:
    run("import json\nclass Flaky(Exception):\n    pass\n")

    run(
        "%%icij task cpu --recover-from Flaky,json.JSONDecodeError\n"
        "def parse(s):\n"
        "    return s\n"
    )

    spec = run.ns["icij_app"].get("parse")
    assert spec.recover_from == (run.ns["Flaky"], run.ns["json"].JSONDecodeError)


def test_task_cell_with_an_unknown_exception_name_runs_nothing(run: Run) -> None:
    output = run(
        "%%icij task cpu --recover-from NoSuchError\ndef parse(s):\n    return s\n"
    )

    assert_usage_without_traceback(output, run, "%icij task")
    assert "'NoSuchError' is not an exception class" in output
    assert "parse" not in run.ns


def test_task_cell_registers_every_def_but_not_imports_classes_or_aliases(
    run: Run,
) -> None:
    run("def before():\n    return 0\n")

    run(
        "%%icij task cpu\n"
        "from os.path import join\n"
        "class Helper:\n"
        "    pass\n"
        "def first(x):\n"
        "    return x\n"
        "async def second(x):\n"
        "    return x\n"
        "alias = first\n"
        "shout = lambda s: s.upper()\n"
    )

    assert run.ns["icij_app"].task_names == ["first", "second"]


def test_rerunning_a_task_cell_replaces_the_task(run: Run) -> None:
    run("%icij connect --store :memory:")
    run("%%icij task cpu\ndef version():\n    return 1\n")
    run("%icij pool start cpu")

    run("%%icij task cpu\ndef version():\n    return 2\n")

    handle = run.shell.run_line_magic("icij", "submit version")
    assert handle.result(timeout_s=RESULT_TIMEOUT_S) == 2
    assert run.ns["icij_app"].get("version").fn is run.ns["version"]


def test_task_cell_name_option_names_the_task(run: Run) -> None:
    run("%icij connect --store :memory:")

    run("%%icij task cpu --name tokenize\ndef words(doc):\n    return doc.split()\n")
    run("%icij pool start cpu")
    handle = run.shell.run_line_magic("icij", "submit tokenize 'doc=a b'")

    assert run.ns["icij_app"].task_names == ["tokenize"]
    assert handle.result(timeout_s=RESULT_TIMEOUT_S) == ["a", "b"]


def test_task_cell_name_option_with_two_functions_is_refused(run: Run) -> None:
    output = run(
        "%%icij task cpu --name one\ndef a():\n    return 1\ndef b():\n    return 2\n"
    )

    assert_usage_without_traceback(output, run, "%icij task")
    assert "--name names one task" in output
    assert run.ns["icij_app"].task_names == []


def test_task_cell_without_a_def_is_refused(run: Run) -> None:
    output = run("%%icij task cpu\nx = 1\n")

    assert_usage_without_traceback(output, run, "%icij task")
    assert "defines no function" in output


def test_task_cell_that_raises_shows_its_error_and_registers_nothing(
    run: Run,
) -> None:
    output = run("%%icij task cpu\ndef f():\n    return 1\n1 / 0\n")

    assert "ZeroDivisionError" in output  # the user's own error, as in any cell
    assert run.ns["icij_app"].task_names == []


def test_task_cell_with_an_invalid_option_value_is_an_icij_error(run: Run) -> None:
    output = run("%%icij task cpu --max-retries -1\ndef f():\n    return 1\n")

    assert_error_without_traceback(output, run, "max_retries of task 'f'")


def test_task_cell_registers_in_the_app_tm_serves(run: Run) -> None:
    run(MINE)

    run("%%icij task cpu\ndef f():\n    return 1\n")

    assert run.ns["mine"].task_names == ["f"]


def test_task_cell_in_another_app_than_tm_serves_prints_a_note(run: Run) -> None:
    run("%icij connect --store :memory:")
    run("%icij app other")

    output = run("%%icij task cpu\ndef f():\n    return 1\n")

    assert run.ns["icij_app"].name == "other"
    assert "tm serves app 'notebook'" in output


# -- docs/magics.md ------------------------------------------------------------------

DOC = Path(__file__).parents[1] / "docs" / "magics.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def doc_blocks() -> list[str]:
    return PYTHON_BLOCK.findall(DOC.read_text(encoding="utf-8"))


def test_doc_examples_run_in_order_in_the_shell(run: Run) -> None:
    blocks = doc_blocks()
    assert len(blocks) >= 5

    for index, block in enumerate(blocks):
        output = run(block)
        assert run.result.success, f"block {index}:\n{block}\n{output}"
        assert "error:" not in output, f"block {index}:\n{block}\n{output}"


@pytest.mark.notebook
@pytest.mark.timeout(120)
def test_doc_examples_run_in_a_kernel(tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    blocks = doc_blocks()
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(block) for block in blocks]
    )
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=60,
        resources={"metadata": {"path": str(tmp_path)}},
    )

    client.execute()  # raises CellExecutionError with the failing block

    for cell in notebook.cells:
        for output in cell.outputs:
            assert output.get("name") != "stderr", (cell.source, output.text)
