"""The argparse tree of ``%icij``: every subcommand, its options and its help.

:func:`build_parser` is given the :class:`~icij_nb.magics.IcijMagics` object and
points each subcommand at one of its ``cmd_*`` methods; this module only declares
what a line may say, :mod:`icij_nb.magics` does what it says.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from icij_nb.model import TaskState

Handler = Callable[[argparse.Namespace], object]


def build_parser(magics: Any) -> argparse.ArgumentParser:
    """The argparse tree of ``%icij``; each subcommand calls a method of ``magics``."""
    parser = argparse.ArgumentParser(
        prog="%icij",
        description="Run icij_nb tasks from the notebook.",
        epilog="%icij SUBCOMMAND -h shows the options of a subcommand.",
    )
    parser.set_defaults(handler=magics.cmd_help, parser=parser)
    commands = parser.add_subparsers(
        dest="command", metavar="SUBCOMMAND", title="subcommands"
    )

    def add(name: str, handler: Handler, summary: str) -> argparse.ArgumentParser:
        # argparse %-formats help strings (not descriptions): "%%" shows as "%".
        sub: argparse.ArgumentParser = commands.add_parser(
            name, help=summary, description=summary.replace("%%", "%")
        )
        sub.set_defaults(handler=handler, parser=sub)
        return sub

    _setup_commands(add, magics)
    _pool_commands(add, magics)
    _submit_commands(add, magics)
    _watch_commands(add, magics)
    _wait_commands(add, magics)
    _control_commands(add, magics)
    return parser


Adder = Callable[[str, Handler, str], argparse.ArgumentParser]


def _setup_commands(add: Adder, magics: Any) -> None:
    sub = add("app", magics.cmd_app, "select (or create) the current app: icij_app")
    sub.add_argument("name", nargs="?", help="the app's name (none: show the current)")
    sub = add("connect", magics.cmd_connect, "connect a task manager to it: tm")
    sub.add_argument(
        "--broker",
        default="memory",
        metavar="URL",
        help="'memory' (default, in this kernel), an amqp:// URL, or 'amqp' for "
        "$ICIJ_NB_AMQP_URL",
    )
    sub.add_argument(
        "--store",
        metavar="PATH",
        help="a SQLite file, or ':memory:' for none (default: .icij_nb/APP.sqlite3)",
    )
    sub.add_argument(
        "--observe-only",
        action="store_true",
        help="watch another manager's RabbitMQ vhost without taking its events",
    )
    sub = add(
        "task", magics.cmd_task, "(%%%%icij task) register the functions of the cell"
    )
    sub.add_argument("group", nargs="?", metavar="GROUP", help="(none: ungrouped)")
    sub.add_argument("--name", help="the task name (default: the function's)")
    sub.add_argument(
        "--max-retries", type=int, metavar="K", help="retries after the first attempt"
    )
    sub.add_argument(
        "--timeout-s", type=float, metavar="T", help="the longest an attempt may run"
    )
    sub.add_argument(
        "--recover-from",
        type=lambda text: [n.strip() for n in text.split(",") if n.strip()],
        default=[],
        metavar="EXC,...",
        help="exception classes that make a failed attempt retryable",
    )


def _pool_commands(add: Adder, magics: Any) -> None:
    pool = add("pool", magics.cmd_help, "start or stop a pool of workers")
    actions = pool.add_subparsers(dest="action", metavar="ACTION", title="actions")
    summary = "start a pool serving GROUP; returns the pool"
    start = actions.add_parser("start", help=summary, description=summary)
    start.set_defaults(handler=magics.cmd_pool_start, parser=start)
    start.add_argument("group", nargs="?", metavar="GROUP", help="(none: ungrouped)")
    start.add_argument(
        "-n",
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="how many tasks run at once (default 1)",
    )
    start.add_argument(
        "--processes",
        action="store_true",
        help="one worker process each (needs RabbitMQ) instead of in this kernel",
    )
    summary = "stop the pools serving GROUP (their running tasks are requeued)"
    stop = actions.add_parser("stop", help=summary, description=summary)
    stop.set_defaults(handler=magics.cmd_pool_stop, parser=stop)
    stop.add_argument("group", nargs="?", metavar="GROUP", help="(none: ungrouped)")
    stop.add_argument("--all", action="store_true", help="stop every pool")
    add("pools", magics.cmd_pools, "list the running pools")


def _submit_commands(add: Adder, magics: Any) -> None:
    sub = add(
        "submit",
        magics.cmd_submit,
        "submit a task; returns its handle (its result with --wait)",
    )
    sub.add_argument("name", metavar="NAME", help="a task registered in the app")
    sub.add_argument(
        "args",
        nargs="*",
        metavar="KEY=VALUE",
        help="arguments; a VALUE is JSON when it parses, else a string",
    )
    sub.add_argument(
        "--max-retries", type=int, metavar="K", help="override the task's setting"
    )
    sub.add_argument("--task-id", metavar="ID", help="choose the task's id")
    _wait_options(sub, optional=True)
    sub = add(
        "map",
        magics.cmd_map,
        "submit one task per args dict; returns a batch (the results with --wait)",
    )
    sub.add_argument("name", metavar="NAME", help="a task registered in the app")
    sub.add_argument(
        "--args-json",
        required=True,
        metavar="JSON",
        help="""a JSON list of args objects: '[{"n": 1}, {"n": 2}]'""",
    )
    sub.add_argument(
        "--max-retries", type=int, metavar="K", help="override the task's setting"
    )
    _wait_options(sub, optional=True)


def _wait_options(sub: argparse.ArgumentParser, *, optional: bool) -> None:
    if optional:
        sub.add_argument(
            "--wait", action="store_true", help="block until done; return the result"
        )
    sub.add_argument(
        "--show-output",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print the tasks' output under the cell while waiting (implies "
        "--wait; default: tm.show_output, off unless you set it)",
    )
    sub.add_argument(
        "--timeout-s", type=float, metavar="T", help="stop waiting after T seconds"
    )


def _watch_commands(add: Adder, magics: Any) -> None:
    add("status", magics.cmd_status, "the manager, its pools, tasks by group, workers")
    sub = add("board", magics.cmd_board, "the task board, filtered; returns it")
    sub.add_argument("--group", metavar="GROUP", help="only tasks of this group")
    sub.add_argument(
        "--state",
        dest="states",
        type=_state,
        nargs="+",
        action="extend",
        metavar="STATE",
        help="only tasks in these states (queued, running, done, error...)",
    )
    sub.add_argument(
        "--name", metavar="NAME", help="only tasks whose name contains NAME"
    )
    sub.add_argument(
        "--text", metavar="TEXT", help="only tasks whose args, result or error hold it"
    )
    add("frame", magics.cmd_frame, "every task of the store as a DataFrame")


def _wait_commands(add: Adder, magics: Any) -> None:
    sub = add("gather", magics.cmd_gather, "wait for tasks; returns their results")
    sub.add_argument("ids", nargs="+", metavar="ID", help="the tasks' ids")
    _wait_options(sub, optional=False)
    sub = add("output", magics.cmd_output, "print what a task wrote and logged")
    sub.add_argument("id", metavar="ID", help="the task's id")
    sub.add_argument(
        "--attempt",
        type=int,
        metavar="N",
        help="one attempt only: 1 the first, -1 the last (default: all)",
    )


def _control_commands(add: Adder, magics: Any) -> None:
    sub = add("cancel", magics.cmd_cancel, "cancel a queued or running task")
    sub.add_argument("id", metavar="ID", help="the task's id")
    sub.add_argument(
        "--requeue", action="store_true", help="put a running task back in its queue"
    )
    sub = add("retry", magics.cmd_retry, "run an ERROR or CANCELLED task again")
    sub.add_argument("id", metavar="ID", help="the task's id")
    add("close", magics.cmd_close, "close the manager: stop its pools, save its store")


def _state(text: str) -> TaskState:
    try:
        return TaskState.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
