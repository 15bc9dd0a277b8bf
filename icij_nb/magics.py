"""The ``%icij`` magics: drive an app's tasks from short notebook lines.

``%load_ext icij_nb`` registers :class:`IcijMagics`: one line-and-cell magic,
``%icij SUBCOMMAND ...``. Each subcommand parses its arguments with argparse and calls
the public API, nothing more. The notebook's current app and manager live in the user
namespace, so magics and Python cells share them and they survive ``%reload_ext``:

- the current app is ``icij_app`` (set by ``%icij app NAME``); failing that ``tm.app``;
  failing that a new ``App("notebook")``, stored as ``icij_app``;
- the current manager is ``tm`` (set by ``%icij connect``, or by your own
  ``tm = nb.connect(app)``).

Bad arguments print argparse's usage, and an :class:`~icij_nb.errors.IcijNbError`
prints ``icij: error: <message>``; neither shows a traceback, because the user has
something to fix, not a bug to read. The line is not expanded by IPython (no ``$x`` or
``{x}``), so JSON values such as ``{"a": 1}`` reach the parser intact.
"""

from __future__ import annotations

import argparse
import builtins
import json
import shlex
import sys
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand

from icij_nb.app import App
from icij_nb.connect import connect
from icij_nb.errors import ConfigError, IcijNbError
from icij_nb.magics_parser import Handler, build_parser
from icij_nb.manager import TaskManager
from icij_nb.model import TaskState

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

APP_VAR = "icij_app"
MANAGER_VAR = "tm"
DEFAULT_APP = "notebook"


@magics_class
class IcijMagics(Magics):
    """The ``%icij`` line magic and ``%%icij task`` cell magic."""

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)
        self._shell = shell  # Magics.shell may be None; ours never is
        self._apps: dict[str, App] = {}
        self.parser = build_parser(self)

    @no_var_expand
    @line_cell_magic
    def icij(self, line: str, cell: str | None = None) -> object:
        """Run icij_nb tasks from the notebook: ``%icij SUBCOMMAND [options]``.

        Subcommands (``%icij SUBCOMMAND -h`` shows the options of one)::

            app [NAME]              select or create the current app (icij_app)
            connect                 connect a task manager to it, stored as tm
            pool start|stop GROUP   start or stop a pool of workers for a group
            pools                   list the running pools
            submit NAME k=v ...     submit a task; returns its handle
            map NAME --args-json J  submit one task per args dict; returns a batch
            gather ID ...           wait for tasks; returns their results
            output ID               print what a task wrote and logged
            status                  the manager, its pools, tasks per group/state
            board                   the task board, with filters
            cancel ID [--requeue]   cancel a task
            retry ID                run an ERROR or CANCELLED task again
            frame                   every task as a DataFrame
            close                   close the manager
            %%icij task GROUP       (cell magic) register the cell's functions

        ``%%icij task GROUP [options]`` above one or more ``def`` registers the
        functions the cell defines as tasks of the current app.

        Values of ``k=v`` are read as JSON when they parse (``n=3`` is 3,
        ``xs=[1,2]`` a list) and as strings otherwise (``s=abc``); quote a value
        with spaces: ``'doc=a b'``, ``'d={"a": 1}'``.

        ``submit`` and ``map`` with ``--wait`` and ``gather`` block until the tasks
        are done; ``--show-output`` prints their output under the cell meanwhile.

        Example::

            %icij connect --store :memory:
            %icij pool start cpu -n 4
            h = %icij submit tokenize doc=abc
            %icij board --state error
        """
        try:
            args = self._parse(line)
            args.cell = cell
            if cell is not None and args.command != "task":
                args.parser.error(
                    "only 'task' works as a cell magic: %%icij task GROUP"
                )
            handler: Handler = args.handler
            return handler(args)
        except SystemExit:  # argparse printed the usage or the help
            return None
        except IcijNbError as exc:
            print(f"icij: error: {exc}", file=sys.stderr)
            return None

    def _parse(self, line: str) -> argparse.Namespace:
        args, extra = self.parser.parse_known_args(_split(line, self.parser))
        parser: argparse.ArgumentParser = args.parser
        # argparse ends a nargs="*" positional at the first option, so the KEY=VALUE
        # of "submit NAME a=1 --task-id x b=2" after the option come back as extras.
        if (
            extra
            and args.command == "submit"
            and not any(e.startswith("-") for e in extra)
        ):
            args.args.extend(extra)
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return args

    # -- state ----------------------------------------------------------------------

    @property
    def _ns(self) -> dict[str, Any]:
        user_ns: dict[str, Any] = self._shell.user_ns
        return user_ns

    def current_app(self) -> App:
        """``icij_app``, else the manager's app, else a new ``App("notebook")``."""
        app = self._ns.get(APP_VAR)
        if isinstance(app, App):
            return app
        manager = self._ns.get(MANAGER_VAR)
        if isinstance(manager, TaskManager):
            return manager.app
        return self._select_app(DEFAULT_APP)

    def current_manager(self) -> TaskManager:
        """``tm``; ConfigError when the notebook has none."""
        manager = self._ns.get(MANAGER_VAR, None)
        if isinstance(manager, TaskManager):
            return manager
        found = (
            "" if manager is None else f" ({MANAGER_VAR} is a {type(manager).__name__})"
        )
        msg = (
            f"no task manager in the notebook{found}: run %icij connect first (it "
            f"sets {MANAGER_VAR}), or set {MANAGER_VAR} = nb.connect(app)"
        )
        raise ConfigError(msg)

    def _select_app(self, name: str) -> App:
        app = self._ns.get(APP_VAR)
        if not (isinstance(app, App) and app.name == name):
            known = self._apps.get(name)
            app = known if known is not None else App(name)
        self._apps[name] = app
        self._ns[APP_VAR] = app
        return app

    def _note_other_app(self, app: App) -> None:
        manager = self._ns.get(MANAGER_VAR)
        if isinstance(manager, TaskManager) and manager.app is not app:
            print(
                f"note: {MANAGER_VAR} serves app {manager.app.name!r}, not "
                f"{app.name!r}; run %icij connect to connect {app.name!r}"
            )

    # -- subcommands ----------------------------------------------------------------

    def cmd_help(self, args: argparse.Namespace) -> None:
        """Print the help of the (sub)command that was given without an action."""
        print(args.parser.format_help())

    def cmd_app(self, args: argparse.Namespace) -> App:
        if args.name is None:
            return self.current_app()
        app = self._select_app(args.name)
        self._note_other_app(app)
        return app

    def cmd_connect(self, args: argparse.Namespace) -> None:
        app = self.current_app()
        previous = self._ns.get(MANAGER_VAR)
        # The new manager first: if it cannot connect, tm stays as it was.
        manager = connect(
            app, broker=args.broker, store=args.store, observe_only=args.observe_only
        )
        self._ns[APP_VAR] = app
        self._ns[MANAGER_VAR] = manager
        if isinstance(previous, TaskManager) and not previous.closed:
            previous.close()
            print(f"closed the previous manager: {previous!r}")
        print(f"{MANAGER_VAR} = {manager!r}")
        if manager.broker.kind != "memory":
            print(f"broker: {manager.broker!r}")  # its repr masks the password

    def cmd_pool_start(self, args: argparse.Namespace) -> object:
        manager = self.current_manager()
        return manager.start_pool(
            args.group, workers=args.workers, processes=args.processes
        )

    def cmd_pool_stop(self, args: argparse.Namespace) -> None:
        manager = self.current_manager()
        pools = [p for p in manager.pools if args.all or p.group == args.group]
        if not pools:
            running = ", ".join(repr(p.group) for p in manager.pools) or "none"
            msg = f"no pool serves group {args.group!r}; pools of groups: {running}"
            raise ConfigError(msg)
        for pool in pools:
            pool.stop()
            print(f"stopped {pool!r}")

    def cmd_pools(self, args: argparse.Namespace) -> None:
        pools = self.current_manager().pools
        for pool in pools:
            print(repr(pool))
        if not pools:
            print("no pools running: start one with %icij pool start GROUP")

    def cmd_submit(self, args: argparse.Namespace) -> object:
        task_args = _key_values(args.args, args.parser)
        handle = self.current_manager().submit(
            args.name, task_args, max_retries=args.max_retries, task_id=args.task_id
        )
        if not (args.wait or args.show_output):
            return handle
        return self._gather(args, [handle.id])[0]

    def _gather(self, args: argparse.Namespace, task_ids: list[str]) -> list[Any]:
        return self.current_manager().gather(
            task_ids, timeout_s=args.timeout_s, show_output=args.show_output
        )

    def cmd_gather(self, args: argparse.Namespace) -> object:
        return self._gather(args, args.ids)

    def cmd_output(self, args: argparse.Namespace) -> None:
        print(self.current_manager().output(args.id, attempt=args.attempt))

    def cmd_map(self, args: argparse.Namespace) -> object:
        parser: argparse.ArgumentParser = args.parser
        try:
            args_list = json.loads(args.args_json)
        except ValueError as exc:
            parser.error(f"--args-json is not valid JSON: {exc}")
        if not isinstance(args_list, list):
            parser.error(
                "--args-json must be a JSON list of args objects, one per task, "
                f"got {args.args_json!r}"
            )
        batch = self.current_manager().map(
            args.name, args_list, max_retries=args.max_retries
        )
        if not (args.wait or args.show_output):
            return batch
        return self._gather(args, [h.id for h in batch])

    def cmd_status(self, args: argparse.Namespace) -> None:
        manager = self.current_manager()
        print(repr(manager))
        if manager.closed:
            return
        if manager.broker.kind != "memory":
            print(f"broker: {manager.broker!r}")
        print("pools:", ", ".join(repr(p) for p in manager.pools) or "none")
        for line in _task_counts(manager):
            print(line)
        workers = manager.workers()
        alive = Counter(
            _group_label(group)
            for group, is_alive in zip(workers["group"], workers["alive"], strict=True)
            if is_alive
        )
        listed = " ".join(f"{g}={n}" for g, n in sorted(alive.items())) or "none"
        print(f"workers alive: {listed}")

    def cmd_board(self, args: argparse.Namespace) -> object:
        manager = self.current_manager()
        parser: argparse.ArgumentParser = args.parser
        try:
            return manager.board(
                group=args.group, states=args.states, name=args.name, text=args.text
            )
        except ValueError as exc:  # TaskBoard's word for a filter it cannot apply
            parser.error(str(exc))

    def cmd_cancel(self, args: argparse.Namespace) -> None:
        manager = self.current_manager()
        manager.cancel(args.id, requeue=args.requeue)
        task = manager.get(args.id)
        print(f"cancel sent: task {task.id!r} ({task.name}) is {task.state.value}")

    def cmd_retry(self, args: argparse.Namespace) -> object:
        return self.current_manager().retry(args.id)

    def cmd_frame(self, args: argparse.Namespace) -> object:
        return self.current_manager().frame()

    def cmd_close(self, args: argparse.Namespace) -> None:
        manager = self.current_manager()
        manager.close()
        print(f"closed {manager!r}")

    def cmd_task(self, args: argparse.Namespace) -> None:
        parser: argparse.ArgumentParser = args.parser
        if args.cell is None:
            parser.error(
                "task is a cell magic: write %%icij task GROUP on the first line of "
                "a cell that defines the task function(s)"
            )
        recover_from = tuple(self._exception(n, parser) for n in args.recover_from)
        app = self.current_app()
        functions = self._run_cell_for_functions(args.cell)
        if functions is None:  # the cell raised; IPython showed its traceback
            return
        if not functions:
            parser.error("the cell defines no function: put a def below it")
        if args.name is not None and len(functions) > 1:
            names = ", ".join(f.__name__ for f in functions)
            parser.error(f"--name names one task, the cell defines {names}")
        options: dict[str, Any] = {"group": args.group, "recover_from": recover_from}
        if args.max_retries is not None:
            options["max_retries"] = args.max_retries
        if args.timeout_s is not None:
            options["timeout_s"] = args.timeout_s
        for function in functions:
            app.task(name=args.name, **options)(function)
            spec = app.get(args.name or function.__name__)
            print(
                f"registered task {spec.name!r} in app {app.name!r}: "
                f"group={spec.group_name!r} max_retries={spec.max_retries} "
                f"timeout_s={spec.timeout_s} "
                f"recover_from={[e.__name__ for e in spec.recover_from]}"
            )
        self._note_other_app(app)

    def _run_cell_for_functions(self, cell: str) -> list[Callable[..., Any]] | None:
        """Run the cell; return the functions it (re)defined, or None if it failed."""
        before = dict(self._ns)
        # IPython's run_cell has no annotations.
        if not self._shell.run_cell(cell).success:  # type: ignore[no-untyped-call]
            return None
        module = self._shell.user_module.__name__
        return [
            value
            for name, value in self._ns.items()
            if before.get(name) is not value
            and callable(value)
            and not isinstance(value, type)
            and getattr(value, "__name__", None) == name  # a def, not an alias
            and getattr(value, "__module__", None) == module  # not an import
        ]

    def _exception(
        self, dotted: str, parser: argparse.ArgumentParser
    ) -> type[BaseException]:
        """The exception class a (dotted) name means in the notebook or builtins."""
        head, *rest = dotted.split(".")
        value = self._ns.get(head, getattr(builtins, head, None))
        for part in rest:
            value = getattr(value, part, None)
        if isinstance(value, type) and issubclass(value, BaseException):
            return value
        parser.error(
            f"--recover-from: {dotted!r} is not an exception class of the notebook "
            "or of builtins"
        )


# -- parsing ------------------------------------------------------------------------


def _split(line: str, parser: argparse.ArgumentParser) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        parser.error(f"{exc} in {line!r}; quote values with spaces: 'doc=a b'")


def _reject_constant(name: str) -> object:
    msg = f"{name} is not JSON"
    raise ValueError(msg)


def _value(text: str) -> object:
    """JSON when ``text`` parses (NaN and Infinity do not count), else the string."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text


def _key_values(pairs: list[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            parser.error(f"expected key=value with a Python name as key, got {pair!r}")
        if key in args:
            parser.error(f"argument {key!r} given twice")
        args[key] = _value(text)
    return args


def _group_label(group: object) -> str:
    return group if isinstance(group, str) else "(no group)"


def _task_counts(manager: TaskManager) -> list[str]:
    frame = manager.frame()
    if frame.empty:
        return ["tasks: none"]
    counts = Counter(
        (_group_label(g), str(s))
        for g, s in zip(frame["group"], frame["state"], strict=True)
    )
    lines = ["tasks:"]
    for group in sorted({g for g, _ in counts}):
        cells = [f"{s.value}={counts[group, s.value]}" for s in TaskState]
        lines.append(
            f"  {group}: " + " ".join(c for c in cells if not c.endswith("=0"))
        )
    return lines


# -- loading ------------------------------------------------------------------------


def load(shell: InteractiveShell) -> None:
    """Register the magics in ``shell``; again is harmless (the magic is replaced)."""
    shell.register_magics(IcijMagics(shell))


def unload(shell: InteractiveShell) -> None:
    """Remove ``%icij`` from ``shell``; ``icij_app`` and ``tm`` stay as they are."""
    manager = shell.magics_manager
    for kind in ("line", "cell"):
        manager.magics[kind].pop("icij", None)
    manager.registry.pop(IcijMagics.__name__, None)
