"""Notebooks as tasks: ``app.notebook_task(path)`` registers a notebook papermill runs.

The pieces, in the order a run goes through them:

- :mod:`~icij_nb.pipelines.notebook_task`: :func:`read_notebook_task` reads the
  notebook once (it must exist, its kernel be installed; its cell tagged
  ``parameters`` names the task's arguments) into a :class:`NotebookTask`.
- :mod:`~icij_nb.pipelines.task_function`: :func:`task_function` is the async
  function the app registers for it; a worker calls it, and it checks the argument
  types, names the output notebook and runs the notebook in a thread of its own.
- :mod:`~icij_nb.pipelines.run`: one run in that thread: nbclient's cell hooks
  (progress, the ``result`` cell's value, cell timeouts, stop between cells),
  cancel and kill of the kernel, failures as
  :class:`~icij_nb.errors.PipelineError`.
- :mod:`~icij_nb.pipelines.engine`: icij_nb's papermill engine (``"icij_nb"``,
  also a ``papermill.engine`` entry point) that executes a run; the only module here
  that imports papermill at its top, and it is imported only when a notebook runs.
- :mod:`~icij_nb.pipelines.demos`: :func:`choose_broker` and :func:`stop_notebook`
  for the demo notebooks.

:meth:`icij_nb.App.notebook_task` puts them together: it reads the notebook and
registers its task function with ``app.task``; nothing here imports the app.
"""

from icij_nb.pipelines.demos import choose_broker, stop_notebook
from icij_nb.pipelines.notebook_task import (
    NotebookTask,
    installed_kernels,
    read_notebook_task,
)
from icij_nb.pipelines.task_function import task_function

__all__ = [
    "NotebookTask",
    "choose_broker",
    "installed_kernels",
    "read_notebook_task",
    "stop_notebook",
    "task_function",
]
