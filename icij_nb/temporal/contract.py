"""What Datashare, datashare-python and icij_nb agree on over Temporal.

One task is one workflow (see /docs/temporal.md and the contract it follows):

- workflow id = task id, workflow type = task name, one JSON-object input: the args,
  plus ``user`` as Datashare's Java side adds it (``None`` unless the URL names one);
- task queue by Datashare's GROUP routing rule: the group's name lower-cased
  (:func:`task_queue`); ungrouped tasks go to ``default``;
- search attributes at start: ``Progress`` 0.0, ``MaxProgress`` 1.0 and, with a user,
  ``UserId``; progress is ``Progress / MaxProgress``;
- id reuse REJECT_DUPLICATE and conflict FAIL: an id is never used twice;
- a workflow's status maps to a TaskState as ``TemporalHelper.asTaskState`` does
  (:data:`STATE_OF_STATUS`), and a failure's cause chain becomes an
  :class:`~icij_nb.model.ErrorRecord` (:func:`error_record`).

URLs: ``temporal://host:port/namespace`` (port 7233 and namespace
``datashare-default`` by default), with ``?user=<id>`` to start tasks as that
Datashare user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

from icij_nb.errors import ConfigError
from icij_nb.model import ErrorRecord, StackFrame, TaskState

if TYPE_CHECKING:
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.common import SearchAttributeKey, TypedSearchAttributes

#: Datashare's namespace (``--temporalNamespace``) and datashare-python's default
DEFAULT_NAMESPACE: Final = "datashare-default"
DEFAULT_PORT: Final = 7233
#: the task queue of tasks without a group (Datashare has none: GROUP needs one)
UNGROUPED_QUEUE: Final = "default"
#: the reason Datashare gives when it terminates a workflow to cancel its task
CANCEL_REASON: Final = "terminated_by_user"
#: the signal datashare-python's activities send their workflow (snake_case)
PROGRESS_SIGNAL: Final = "update_progress"


@dataclass(frozen=True, slots=True)
class TemporalUrl:
    """A parsed ``temporal://host:port/namespace?user=<id>`` URL."""

    host: str
    port: int
    namespace: str
    user_id: str | None = None

    @classmethod
    def parse(cls, url: str) -> TemporalUrl:
        """Read a ``temporal://`` URL; ConfigError says what is wrong with it."""
        parts = urlsplit(url)
        if parts.scheme != "temporal":
            msg = f"a Temporal URL starts with temporal://, got {url!r}"
            raise ConfigError(msg)
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            msg = (
                f"bad port in Temporal URL {url!r}: use temporal://host:7233/namespace"
            )
            raise ConfigError(msg) from None
        namespace = parts.path.strip("/") or DEFAULT_NAMESPACE
        if "/" in namespace:
            msg = f"a Temporal URL names one namespace, got {namespace!r} in {url!r}"
            raise ConfigError(msg)
        users = parse_qs(parts.query).get("user", [])
        user_id = users[0] if users else None
        return cls(parts.hostname or "127.0.0.1", port, namespace, user_id)

    @property
    def address(self) -> str:
        """``host:port``, as Temporal clients take it."""
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        user = f"?user={self.user_id}" if self.user_id else ""
        return f"temporal://{self.address}/{self.namespace}{user}"


def task_queue(group: str | None) -> str:
    """The workflow task queue of a group: Datashare's GROUP rule (lower-cased)."""
    return group.lower() if group is not None else UNGROUPED_QUEUE


def user_object(user_id: str | None) -> dict[str, Any] | None:
    """Datashare's Jackson ``User`` for ``args["user"]`` (None without a user)."""
    if user_id is None:
        return None
    return {
        "id": user_id,
        "name": None,
        "email": None,
        "provider": "local",
        "details": {},
    }


def workflow_input(args: dict[str, Any], user_id: str | None) -> dict[str, Any]:
    """The one payload a workflow starts with: the args and ``user`` (Task.addTo)."""
    return {**args, "user": args.get("user", user_object(user_id))}


def progress_keys() -> tuple[SearchAttributeKey[float], SearchAttributeKey[float]]:
    """The ``Progress`` and ``MaxProgress`` search attribute keys."""
    from temporalio.common import SearchAttributeKey

    return (
        SearchAttributeKey.for_float("Progress"),
        SearchAttributeKey.for_float("MaxProgress"),
    )


def start_search_attributes(user_id: str | None) -> TypedSearchAttributes:
    """``Progress`` 0, ``MaxProgress`` 1 and ``UserId`` (generateSearchAttributes)."""
    from temporalio.common import (
        SearchAttributeKey,
        SearchAttributePair,
        TypedSearchAttributes,
    )

    progress, max_progress = progress_keys()
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(progress, 0.0),
        SearchAttributePair(max_progress, 1.0),
    ]
    if user_id is not None:
        pairs.append(
            SearchAttributePair(SearchAttributeKey.for_keyword("UserId"), user_id)
        )
    return TypedSearchAttributes(pairs)


def progress_of(attributes: TypedSearchAttributes) -> float | None:
    """``Progress / MaxProgress`` in [0, 1]; None when either is absent."""
    progress_key, max_key = progress_keys()
    progress, maximum = attributes.get(progress_key), attributes.get(max_key)
    if progress is None or maximum is None:
        return None
    if maximum <= 0:
        return 0.0
    return min(max(progress / maximum, 0.0), 1.0)


def state_of(status: WorkflowExecutionStatus | None) -> TaskState:
    """A workflow status as a TaskState (TemporalHelper.asTaskState).

    Raises:
        ValueError: CONTINUED_AS_NEW (Datashare throws too) or an unknown status.
    """
    from temporalio.client import WorkflowExecutionStatus as S

    mapping = {
        S.RUNNING: TaskState.RUNNING,
        S.COMPLETED: TaskState.DONE,
        S.FAILED: TaskState.ERROR,
        S.TIMED_OUT: TaskState.ERROR,
        S.CANCELED: TaskState.CANCELLED,
        S.TERMINATED: TaskState.CANCELLED,
    }
    if status not in mapping:
        msg = f"workflow status {status!r} has no task state"
        raise ValueError(msg)
    return mapping[status]


_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<name>.+)')


def error_record(exc: BaseException) -> ErrorRecord:
    """A failed workflow's error, from its cause chain, as Datashare reads it.

    The innermost ApplicationError gives the name (its ``type``: the exception class
    of the task) and the message; the wrapping failures (ActivityError...) are the
    ``cause`` text. Python stack traces carried by the failure become frames.
    """
    from temporalio.exceptions import ApplicationError, FailureError, TimeoutError

    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__
    failures = [e for e in chain if isinstance(e, FailureError)]
    innermost = failures[-1] if failures else chain[-1]
    name = type(innermost).__name__
    if isinstance(innermost, ApplicationError) and innermost.type:
        name = innermost.type
    elif isinstance(innermost, TimeoutError):
        name = "TaskTimeout"
    message = (
        innermost.message if isinstance(innermost, FailureError) else str(innermost)
    )
    outer = [f"{type(e).__name__}: {_message(e)}" for e in failures[:-1]]
    trace = (
        innermost.failure.stack_trace
        if isinstance(innermost, FailureError) and innermost.failure
        else ""
    )
    frames = tuple(
        StackFrame(name=m["name"].strip(), file=m["file"], lineno=int(m["line"]))
        for m in _FRAME.finditer(trace or "")
    )
    return ErrorRecord(
        name=name, message=message, cause=" <- ".join(outer) or None, stacktrace=frames
    )


def _message(exc: BaseException) -> str:
    from temporalio.exceptions import FailureError

    return exc.message if isinstance(exc, FailureError) else str(exc)
