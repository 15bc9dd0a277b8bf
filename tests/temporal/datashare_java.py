"""A client doing what Datashare's Java ``TaskManagerTemporal`` does (TEMPORAL.md §2-5).

- ``start_task``: workflow id = task id (``<name>-<uuid4>``), type = task name, task
  queue by GROUP routing (group lower-cased), one ``json/plain`` input = the args
  plus ``user`` (Jackson's User, or null), workflow task timeout 7 days, id reuse
  REJECT_DUPLICATE and conflict FAIL, search attributes Progress=0.0,
  MaxProgress=1.0 and UserId. Then ``describe()``: the task is RUNNING.
- ``parse_task``: what the repository holds after completion or reconcile: state by
  ``asTaskState``, progress = Progress / MaxProgress from describe (0 if MaxProgress
  is 0), the result, and the error as ``TaskError(WorkflowFailedException.getCause())``:
  the ActivityError and its ApplicationError's type and non-retryable flag.
- ``cancel``: terminate with reason ``terminated_by_user`` when RUNNING.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ActivityError, ApplicationError

STATES = {
    WorkflowExecutionStatus.RUNNING: "RUNNING",
    WorkflowExecutionStatus.COMPLETED: "DONE",
    WorkflowExecutionStatus.FAILED: "ERROR",
    WorkflowExecutionStatus.TIMED_OUT: "ERROR",
    WorkflowExecutionStatus.CANCELED: "CANCELLED",
    WorkflowExecutionStatus.TERMINATED: "CANCELLED",
}


@dataclass
class JavaTask:
    """A row of Datashare's task repository."""

    id: str
    name: str
    state: str
    progress: float = 0.0
    result: Any = None
    error: dict[str, Any] | None = None


class DatashareJava:
    """Datashare's TaskManagerTemporal, as far as a worker can tell."""

    def __init__(self, client: Client, *, user_id: str | None = "local") -> None:
        self.client = client
        self.user_id = user_id

    def _user(self) -> dict[str, Any] | None:
        if self.user_id is None:
            return None
        return {
            "id": self.user_id,
            "name": None,
            "email": None,
            "provider": "local",
            "details": {},
        }

    async def start_task(
        self, name: str, group: str, args: dict[str, Any], task_id: str | None = None
    ) -> JavaTask:
        task_id = task_id or f"{name}-{uuid.uuid4()}"
        pairs: list[SearchAttributePair[Any]] = [
            SearchAttributePair(SearchAttributeKey.for_float("Progress"), 0.0),
            SearchAttributePair(SearchAttributeKey.for_float("MaxProgress"), 1.0),
        ]
        if self.user_id is not None:
            pairs.append(
                SearchAttributePair(
                    SearchAttributeKey.for_keyword("UserId"), self.user_id
                )
            )
        handle = await self.client.start_workflow(
            name,
            {**args, "user": self._user()},
            id=task_id,
            task_queue=group.lower(),
            task_timeout=timedelta(days=7),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=TypedSearchAttributes(pairs),
        )
        description = await handle.describe()
        return JavaTask(task_id, name, STATES[description.status])

    async def parse_task(self, task_id: str) -> JavaTask:
        handle = self.client.get_workflow_handle(task_id)
        description = await handle.describe()
        attrs = description.typed_search_attributes
        progress = attrs.get(SearchAttributeKey.for_float("Progress"))
        maximum = attrs.get(SearchAttributeKey.for_float("MaxProgress"))
        task = JavaTask(task_id, description.workflow_type, STATES[description.status])
        if progress is not None and maximum is not None:
            task.progress = 0.0 if maximum == 0 else progress / maximum
        if task.state == "DONE":
            task.result = await handle.result()
        elif task.state == "ERROR":
            try:
                await handle.result()
            except WorkflowFailureError as exc:
                task.error = _task_error(exc.cause)
        return task

    async def wait(self, task_id: str) -> JavaTask:
        handle = self.client.get_workflow_handle(task_id)
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()
        return await self.parse_task(task_id)

    async def cancel(self, task_id: str) -> bool:
        handle = self.client.get_workflow_handle(task_id)
        if (await handle.describe()).status is not WorkflowExecutionStatus.RUNNING:
            return False
        await handle.terminate(reason="terminated_by_user")
        status = (await handle.describe()).status
        return status is WorkflowExecutionStatus.TERMINATED


def _task_error(cause: BaseException) -> dict[str, Any]:
    error: dict[str, Any] = {"name": type(cause).__name__, "message": str(cause)}
    inner = cause.__cause__
    if isinstance(cause, ActivityError) and isinstance(inner, ApplicationError):
        error["cause_type"] = inner.type
        error["non_retryable"] = inner.non_retryable
        error["cause_message"] = inner.message
    return error
