"""The ``icij-nb`` command: worker pools on any machine, and the task store.

::

    icij-nb workers start APP [--group G] [-n N] [-c C] [--broker URL] [--grace-s S]
    icij-nb tasks list   [--store PATH] [--state S] [--group G] [--name N] [--limit K]
    icij-nb tasks show   TASK_ID [--store PATH]
    icij-nb tasks cancel TASK_ID [--broker URL] [--requeue]

APP is ``package.module:attr`` or ``path/to/file.py:attr`` naming an
:class:`~icij_nb.App`. A notebook exports its tasks for remote pools by writing the
cell that defines them to a file (``%%writefile pipeline_tasks.py`` then
``from pipeline_tasks import app``); ``icij-nb workers start pipeline_tasks.py:app``
then serves them. Errors print one clear line and exit with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from icij_nb.app import App
from icij_nb.errors import ConfigError, IcijNbError
from icij_nb.model import CancelEvent

logger = logging.getLogger("icij_nb.cli")


def load_app(spec: str) -> App:
    """Import the App that ``module:attr`` or ``file.py:attr`` names."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        msg = f"APP must look like 'package.module:app' or 'file.py:app', got {spec!r}"
        raise ConfigError(msg)
    if module_name.endswith(".py"):
        path = Path(module_name).resolve()
        if not path.is_file():
            msg = f"no such file: {module_name!r} (from APP {spec!r})"
            raise ConfigError(msg)
        sys.path.insert(0, str(path.parent))
        module_name = path.stem
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"cannot import {module_name!r} (from APP {spec!r}): {exc}"
        raise ConfigError(msg) from exc
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        found = type(app).__name__ if app is not None else "nothing"
        msg = f"{spec!r} names {found}, not an icij_nb.App"
        raise ConfigError(msg)
    return app


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icij-nb",
        description="Worker pools and task records for icij_nb apps.",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    workers = commands.add_parser("workers", help="run worker pools")
    workers_cmd = workers.add_subparsers(dest="action", required=True)
    start = workers_cmd.add_parser(
        "start",
        help="serve a group's queue on RabbitMQ",
        description="Serve the tasks of APP from RabbitMQ until SIGTERM/SIGINT.",
    )
    start.add_argument("app", metavar="APP", help="module:attr or file.py:attr")
    start.add_argument("-g", "--group", default=None, help="group to serve")
    start.add_argument("-n", "--n-workers", type=int, default=1, help="processes")
    start.add_argument(
        "-c",
        "--concurrency",
        type=int,
        default=None,
        help="tasks each process runs at once (16 if every task of the group is "
        "async, else 1)",
    )
    _broker_args(start)
    start.add_argument(
        "--grace-s",
        type=float,
        default=10.0,
        help="on SIGTERM, seconds running tasks get before being requeued (10)",
    )

    tasks = commands.add_parser("tasks", help="list, show and cancel tasks")
    tasks_cmd = tasks.add_subparsers(dest="action", required=True)
    listing = tasks_cmd.add_parser("list", help="list tasks from a store")
    _store_arg(listing)
    listing.add_argument("--state", default=None, help="only this state")
    listing.add_argument("--group", default=None, help="only this group")
    listing.add_argument("--name", default=None, help="only this task name")
    listing.add_argument("--limit", type=int, default=50, help="rows (50)")
    show = tasks_cmd.add_parser("show", help="one task, with its errors")
    show.add_argument("task_id", metavar="TASK_ID", help="the task's id")
    _store_arg(show)
    cancel = tasks_cmd.add_parser("cancel", help="broadcast a cancel to workers")
    cancel.add_argument("task_id", metavar="TASK_ID", help="the task's id")
    cancel.add_argument("--requeue", action="store_true", help="put it back")
    _broker_args(cancel)
    return parser


def _broker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        default=os.environ.get(
            "ICIJ_NB_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"
        ),
        help="AMQP URL ($ICIJ_NB_AMQP_URL), or temporal://host:port/namespace",
    )
    parser.add_argument(
        "--management-url",
        default=None,
        help="RabbitMQ management API ($ICIJ_NB_AMQP_MANAGEMENT_URL)",
    )


def _store_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, help="the SQLite task store file")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "workers":
            return _workers_start(args)
        if args.action == "cancel":
            return asyncio.run(_cancel(args))
        return _tasks_read(args)
    except IcijNbError as exc:
        print(f"icij-nb: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _workers_start(args: argparse.Namespace) -> int:
    from icij_nb.brokers.amqp import AmqpBroker
    from icij_nb.process_pool import ProcessPool, serve

    app = load_app(args.app)
    app.group(args.group)  # clear error for an unknown group
    if args.broker.startswith("temporal:"):
        from icij_nb.temporal.pool import run_workers

        return run_workers(
            app,
            args.broker,
            group=args.group,
            processes=args.n_workers,
            concurrency=args.concurrency or app.default_concurrency(args.group),
        )
    broker = AmqpBroker(app, args.broker, management_url=args.management_url)
    logger.info(
        "app %r: serving group %r with %d process(es) on %r",
        app.name,
        args.group,
        args.n_workers,
        broker,
    )
    concurrency = args.concurrency or app.default_concurrency(args.group)
    if args.n_workers <= 1:
        asyncio.run(
            serve(
                app,
                broker,
                group=args.group,
                workers=concurrency,
                grace_s=args.grace_s,
            )
        )
        return 0
    asyncio.run(_check_reachable(broker))
    pool = ProcessPool(
        app,
        lambda _app: broker.for_another_process(),
        group=args.group,
        processes=args.n_workers,
        workers_per_process=concurrency,
        log_dir=None,
        grace_s=args.grace_s,
    )
    pool.start()
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            logger.info("signal %d: stopping %d worker process(es)", signum, pool.size)
            pool.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pool.wait()
    pool.stop()
    return 0


async def _check_reachable(broker: object) -> None:
    from icij_nb.brokers.amqp import AmqpBroker

    if isinstance(broker, AmqpBroker):
        probe = broker.for_another_process()
        await probe.start()
        await probe.close()


async def _cancel(args: argparse.Namespace) -> int:
    from icij_nb.brokers.amqp import AmqpBroker

    broker = AmqpBroker(
        App("icij-nb-cli"),
        args.broker,
        management_url=args.management_url,
        set_policies=False,
        observe_only=True,
    )
    await broker.start()
    try:
        await broker.broadcast(CancelEvent(args.task_id, requeue=args.requeue))
    finally:
        await broker.close()
    print(f"cancel of {args.task_id} broadcast to every worker on {broker.vhost!r}")
    return 0


def _tasks_read(args: argparse.Namespace) -> int:
    import pandas as pd

    from icij_nb.store.readers import read_frame, read_task

    if not Path(args.store).is_file():
        msg = f"no task store at {args.store!r}"
        raise ConfigError(msg)
    if args.action == "show":
        task = read_task(args.store, args.task_id)
        print(f"{task.id}  {task.name}  group={task.group}  {task.state.value}")
        print(
            f"  progress={task.progress:.0%} "
            f"attempts={task.attempts}/{task.max_attempts} worker={task.worker_id}"
        )
        print(f"  created={task.created_at} completed={task.completed_at}")
        print(f"  args={task.args}")
        if task.has_result:
            print(f"  result={task.result!r}")
        for number, error in enumerate(task.errors, 1):
            print(f"  error {number}:\n" + _indent(error.format(), 4))
        return 0
    frame = read_frame(args.store)
    for column, value in (
        ("state", args.state),
        ("group", args.group),
        ("name", args.name),
    ):
        if value is not None:
            wanted = value.upper() if column == "state" else value
            frame = frame[frame[column].astype(str) == wanted]
    columns = [
        "id",
        "name",
        "group",
        "state",
        "progress",
        "attempts",
        "worker",
        "error",
    ]
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(frame[columns].tail(args.limit).to_string(index=False))
    print(f"({len(frame)} task(s))")
    return 0


def _indent(text: str, width: int) -> str:
    return "\n".join(" " * width + line for line in text.splitlines())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
