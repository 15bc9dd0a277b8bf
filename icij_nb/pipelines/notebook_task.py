"""A notebook registered as a task: what it takes, where its output goes.

:func:`read_notebook_task` (behind :meth:`icij_nb.App.notebook_task`) reads the
notebook once: it must exist, its kernel must be installed, and its cell tagged
``parameters`` names the task's arguments (papermill's own parameter inspection). It
returns a :class:`NotebookTask`, which checks argument types against the parameters'
defaults and names each run's output notebook. Running it is
:mod:`icij_nb.pipelines.run`'s job; nothing here starts a kernel.
"""

from __future__ import annotations

import ast
import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from icij_nb.errors import ConfigError, InvalidArguments, MissingDependency

#: where the output notebook goes, beside the input, unless told otherwise
DEFAULT_OUTPUT: Final = "{stem}.{task_id}.ipynb"

_JSON_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "list": (list,),
    "tuple": (list,),
    "dict": (dict,),
}
_ARTICLES: Final = {"int": "an int", "list": "a list", "tuple": "a list"}


@dataclass(frozen=True)
class NotebookTask:
    """A notebook registered as a task: what runs, how, and where its output goes.

    ``parameters`` maps each name of the ``parameters`` cell to its default, as
    written there. ``output`` is an absolute path template (``{stem}``, ``{name}``,
    ``{task_id}`` and the notebook's parameters can appear in it).
    """

    name: str
    path: Path
    group: str | None
    parameters: dict[str, str]
    kernel_name: str
    cell_timeout_s: float | None
    cwd: Path
    output: str
    has_parameters_cell: bool
    types: dict[str, str] = field(repr=False)

    def __repr__(self) -> str:
        return (
            f"<NotebookTask {self.name!r} {self.path.name} group={self.group!r} "
            f"parameters={list(self.parameters)!r} kernel={self.kernel_name!r}>"
        )

    def output_path(self, task_id: str, parameters: Mapping[str, Any]) -> Path:
        """Where the run of task ``task_id`` with ``parameters`` writes its notebook."""
        fields = {**parameters, "stem": self.path.stem, "name": self.name}
        fields["task_id"] = task_id
        try:
            return Path(self.output.format(**fields))
        except (KeyError, IndexError, ValueError) as exc:
            msg = (
                f"the output template {self.output!r} of notebook task {self.name!r} "
                f"names {exc!s}, which is neither a parameter nor one of "
                "{stem}, {name}, {task_id}"
            )
            raise InvalidArguments(msg) from None

    def check_types(self, parameters: Mapping[str, Any]) -> None:
        """Raise InvalidArguments if a value does not have its parameter's type.

        The type is the parameter's annotation or, without one, the type of its
        default (``n = 3`` takes an int; a float also takes an int). Parameters whose
        default is None or not a literal take anything.
        """
        for key, value in parameters.items():
            expected = self.types.get(key)
            if expected is None:
                continue
            allowed = _JSON_TYPES[expected]
            if isinstance(value, allowed) and (
                expected == "bool" or not isinstance(value, bool)
            ):
                continue
            msg = (
                f"parameter {key!r} of notebook {self.path.name!r} takes "
                f"{_ARTICLES.get(expected, 'a ' + expected)} (its default is "
                f"{self.parameters[key]}), got {value!r} "
                f"({type(value).__name__}); nothing ran"
            )
            raise InvalidArguments(msg)


def read_notebook_task(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    group: str | None = None,
    output: str | os.PathLike[str] | None = None,
    kernel_name: str | None = None,
    cell_timeout_s: float | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> NotebookTask:
    """Read the notebook at ``path`` as a task; see :meth:`App.notebook_task`.

    Raises:
        ConfigError: no notebook there, its kernel is not installed, or an option
            is invalid.
        MissingDependency: nbformat, jupyter_client or papermill is missing.
    """
    notebook_path = _existing_notebook(path)
    notebook = _read_notebook(notebook_path)
    kernel = _installed_kernel(kernel_name, notebook, notebook_path)
    task_name = name if name is not None else notebook_path.stem
    parameters, types, tagged = _parameters(notebook, kernel)
    if "progress" in parameters:
        msg = (
            f"notebook {notebook_path.name!r} has a parameter named 'progress', "
            "which icij_nb passes to every task; rename it"
        )
        raise ConfigError(msg)
    task = NotebookTask(
        name=task_name,
        path=notebook_path,
        group=group,
        parameters=parameters,
        kernel_name=kernel,
        cell_timeout_s=_cell_timeout(cell_timeout_s),
        cwd=Path(cwd).resolve() if cwd is not None else notebook_path.parent,
        output=_output_template(output, notebook_path),
        has_parameters_cell=tagged,
        types=types,
    )
    if not task.cwd.is_dir():
        msg = f"cwd {str(task.cwd)!r} of notebook task {task_name!r} is no folder"
        raise ConfigError(msg)
    return task


def _existing_notebook(path: str | os.PathLike[str]) -> Path:
    given = Path(path)
    resolved = given.resolve()
    if resolved.is_file():
        return resolved
    folder = resolved.parent
    found = sorted(p.name for p in folder.glob("*.ipynb")) if folder.is_dir() else []
    where = f"notebooks in {str(folder)!r}: " + (", ".join(found) or "none")
    if not folder.is_dir():
        where = f"there is no folder {str(folder)!r}"
    msg = (
        f"no notebook at {os.fspath(path)!r} (resolved to {str(resolved)!r}, from "
        f"the working directory {os.getcwd()!r}); {where}"
    )
    raise ConfigError(msg)


def _read_notebook(path: Path) -> Any:
    nbformat = require("nbformat")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several kinds for a bad file
        msg = f"{str(path)!r} is not a readable notebook: {type(exc).__name__}: {exc}"
        raise ConfigError(msg) from exc


def installed_kernels() -> list[str]:
    """The names of the Jupyter kernels installed here, sorted."""
    kernelspec = require("jupyter_client.kernelspec")
    return sorted(kernelspec.KernelSpecManager().find_kernel_specs())


def _installed_kernel(kernel_name: str | None, notebook: Any, path: Path) -> str:
    wanted = kernel_name or notebook.metadata.get("kernelspec", {}).get("name")
    installed = installed_kernels()
    listed = ", ".join(repr(k) for k in installed) or "none"
    if not wanted:
        msg = (
            f"notebook {path.name!r} names no kernel in its metadata; pass "
            f"kernel_name=... (installed kernels: {listed})"
        )
        raise ConfigError(msg)
    if wanted not in installed:
        msg = (
            f"kernel {wanted!r} (for notebook {path.name!r}) is not installed here; "
            f"installed kernels: {listed}. Pass kernel_name= one of them, or install "
            f"it (python -m ipykernel install --user --name {wanted})."
        )
        raise ConfigError(msg)
    return str(wanted)


def _parameters(
    notebook: Any, kernel: str
) -> tuple[dict[str, str], dict[str, str], bool]:
    """Read the cell tagged ``parameters`` with papermill's translator.

    Returns its names with their defaults, the types checked at run time, and
    whether the notebook has such a cell at all.
    """
    cell = next(
        (c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])),
        None,
    )
    if cell is None:
        return {}, {}, False
    translators = require("papermill.translators").papermill_translators
    spec = notebook.metadata.get("kernelspec", {})
    language = spec.get("language") or notebook.metadata.get("language_info", {}).get(
        "name", "python"
    )
    found = translators.find_translator(kernel, language).inspect(cell)
    parameters = {p.name: p.default for p in found}
    types = {
        p.name: t
        for p in found
        if (t := _checked_type(p.inferred_type_name, p.default)) is not None
    }
    return parameters, types, True


def _checked_type(annotation: str, default: str) -> str | None:
    if annotation and annotation != "None":
        base = annotation.split("[", 1)[0].strip()
        return base if base in _JSON_TYPES else None
    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    kind = type(value).__name__
    return kind if kind in _JSON_TYPES else None


def _cell_timeout(value: float | None) -> float | None:
    if value is None:
        return None
    given: object = value
    if isinstance(given, bool) or not isinstance(given, int | float) or given <= 0:
        msg = f"cell_timeout_s must be a positive number of seconds, got {value!r}"
        raise ConfigError(msg)
    return float(value)


def _output_template(output: str | os.PathLike[str] | None, notebook: Path) -> str:
    if output is None:
        return str(notebook.parent / DEFAULT_OUTPUT)
    text = os.fspath(output)
    if not text.endswith(".ipynb"):
        msg = f"output must name an .ipynb file (a template), got {text!r}"
        raise ConfigError(msg)
    return text if os.path.isabs(text) else os.path.join(os.getcwd(), text)


def require(module: str) -> Any:
    """Import an optional ``module``, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = (
            f"notebook tasks need {(exc.name or module).split('.')[0]}: "
            "pip install 'icij_nb[notebook]'"
        )
        raise MissingDependency(msg) from exc
