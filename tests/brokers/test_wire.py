"""The icij-worker wire codec: golden messages, leniency, refusals, and properties.

The golden bodies are the messages observed live between real icij-worker 0.20.2
pools and managers (docs/protocol.md §2.4-§2.10), copied byte for byte.
"""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icij_nb.brokers import wire
from icij_nb.brokers.wire import (
    MAX_BODY_BYTES,
    MAX_VALUE_DEPTH,
    decode_broadcast,
    decode_event,
    decode_task,
    encode_broadcast,
    encode_event,
    encode_task,
    format_datetime,
    parse_datetime,
    to_snake_case,
)
from icij_nb.errors import IcijNbError, WireError
from icij_nb.jsonvalues import json_problem
from icij_nb.model import (
    CancelEvent,
    CancelledEvent,
    ErrorEvent,
    ErrorRecord,
    ProgressEvent,
    ResultEvent,
    ShutdownEvent,
    StackFrame,
    Task,
    TaskState,
)

# -- the observed messages (docs/protocol.md §2) --------------------------------

TASK_BARE = (
    b'{"id":"hello_world-425a550e","name":"hello_world","args":{"greeted":"world"},'
    b'"state":"CREATED","createdAt":"2026-11-27T21:39:04.760269+00:00","@type":"Task"}'
)
TASK_GROUPED = (
    b'{"id":"grouped_hello-2d8e9912","name":"grouped_hello","args":{"greeted":"nb"},'
    b'"state":"CREATED","createdAt":"2026-11-27T21:40:32.331825+00:00",'
    b'"retriesLeft":3,"maxRetries":3,"@type":"Task"}'
)
TASK_REPUBLISHED = (
    b'{"id":"flaky-ee874cb9","name":"flaky","args":{"fail_times":1,"key":"5be94f"},'
    b'"state":"QUEUED","progress":0.0,"createdAt":"2026-11-27T21:39:17.215279+00:00",'
    b'"retriesLeft":1,"maxRetries":2,"@type":"Task"}'
)
PROGRESS = (
    b'{"taskId":"with_progress-e168437e","createdAt":"2026-11-27T21:39:04.971479+00:00"'
    b',"progress":0.25,"@type":"ProgressEvent"}'
)
RESULT = (
    b'{"taskId":"with_progress-e168437e","createdAt":"2026-11-27T21:39:05.159090+00:00"'
    b',"result":{"value":{"steps":4,"arg":"camel","floats":[0.5,0.001],'
    b'"when":"2024-01-02T03:04:05Z","nested":{"a":null}},"@type":"TaskResult"},'
    b'"@type":"ResultEvent"}'
)
ERROR_RETRYABLE = (
    b'{"taskId":"flaky-ee874cb9","createdAt":"2026-11-27T21:39:17.232866+00:00",'
    b'"retriesLeft":1,"error":{"name":"Flaky","message":"attempt 1 failed",'
    b'"cause":"\'root cause\'","stacktrace":[{"name":"_retry_task",'
    b'"file":"/venv/lib/python3.11/site-packages/icij_worker/worker/worker.py",'
    b'"lineno":653},{"name":"flaky","file":"/scratch/nbapp.py","lineno":44}],'
    b'"@type":"TaskError"},"@type":"ErrorEvent"}'
)
ERROR_TIMEOUT = (
    b'{"taskId":"grouped_sleepy-e6fb9288","createdAt":"2026-11-27T21:40:34.485140+00:00"'
    b',"retriesLeft":0,"error":{"name":"WorkerTimeoutError","message":"Task(id=\\"id='
    b"'grouped_sleepy-e6fb9288' name='grouped_sleepy' args={'duration': 10} "
    b"state=<TaskState.RUNNING: 'RUNNING'> progress=0.0 created_at=datetime.datetime"
    b"(2026, 11, 27, 21, 40, 32, 461100, tzinfo=TzInfo(0)) completed_at=None "
    b'retries_left=3 max_retries=3\\") exceeded allocated timeout of 2s",'
    b'"stacktrace":[],"@type":"TaskError"},"@type":"ErrorEvent"}'
)
CANCELLED = (
    b'{"taskId":"sleepy-0940a2bd","createdAt":"2026-11-27T21:39:48.113814+00:00",'
    b'"requeue":true,"@type":"CancelledEvent"}'
)
CANCEL = (
    b'{"taskId":"sleepy-3b2ceac4","createdAt":"2026-11-27T21:39:36.493678+00:00",'
    b'"requeue":false,"@type":"CancelEvent"}'
)
SHUTDOWN = b'{"createdAt":"2026-11-27T21:44:25.919256+00:00","@type":"ShutdownEvent"}'

ALL_EVENTS = [PROGRESS, RESULT, ERROR_RETRYABLE, ERROR_TIMEOUT, CANCELLED]
ALL_BROADCASTS = [CANCEL, SHUTDOWN]
ALL_TASKS = [TASK_BARE, TASK_GROUPED, TASK_REPUBLISHED]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def body_of(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


def task_body(**overrides: Any) -> bytes:
    obj: dict[str, Any] = {
        "id": "t-1",
        "name": "ocr",
        "args": {"path": "a.pdf"},
        "state": "CREATED",
        "createdAt": "2026-11-27T21:39:04.760269+00:00",
        "@type": "Task",
    }
    obj.update(overrides)
    return body_of({k: v for k, v in obj.items() if v is not ...})


def event_body(tag: str, **fields: Any) -> bytes:
    obj: dict[str, Any] = {
        "taskId": "t-1",
        "createdAt": "2026-11-27T21:39:04.760269+00:00",
        **fields,
        "@type": tag,
    }
    return body_of({k: v for k, v in obj.items() if v is not ...})


# -- golden: decoding what icij-worker sends ------------------------------------


def test_decode_first_enqueue_of_a_bare_task_allows_one_attempt():
    task = decode_task(TASK_BARE)
    assert task.id == "hello_world-425a550e"
    assert task.name == "hello_world"
    assert task.group is None
    assert task.args == {"greeted": "world"}
    assert task.state is TaskState.CREATED
    assert task.progress == 0.0
    assert task.created_at == datetime(2026, 11, 27, 21, 39, 4, 760269, tzinfo=UTC)
    assert (task.max_attempts, task.attempts_left) == (1, 1)
    assert task.completed_at is None


def test_decode_grouped_task_reads_max_retries_as_attempts():
    task = decode_task(TASK_GROUPED)
    assert task.id == "grouped_hello-2d8e9912"
    assert task.args == {"greeted": "nb"}
    assert (task.max_attempts, task.attempts_left) == (3, 3)
    assert task.group is None  # the group is not on the wire


def test_decode_republished_task_keeps_lowered_retries_left_and_queued_state():
    task = decode_task(TASK_REPUBLISHED)
    assert task.state is TaskState.QUEUED
    assert task.progress == 0.0
    assert (task.max_attempts, task.attempts_left) == (2, 1)
    assert task.args == {"fail_times": 1, "key": "5be94f"}


def test_decode_progress_event():
    event = decode_event(PROGRESS)
    assert event == ProgressEvent(
        "with_progress-e168437e", 0.25, at("2026-11-27T21:39:04.971479+00:00")
    )
    assert event.worker_id is None


def test_decode_result_event_keeps_the_value_as_sent():
    event = decode_event(RESULT)
    assert isinstance(event, ResultEvent)
    assert event.task_id == "with_progress-e168437e"
    assert event.created_at == at("2026-11-27T21:39:05.159090+00:00")
    assert event.value == {
        "steps": 4,
        "arg": "camel",
        "floats": [0.5, 0.001],
        "when": "2024-01-02T03:04:05Z",  # a string in a value stays a string
        "nested": {"a": None},
    }


def test_decode_retryable_error_event_with_cause_and_stacktrace():
    event = decode_event(ERROR_RETRYABLE)
    assert isinstance(event, ErrorEvent)
    assert event.task_id == "flaky-ee874cb9"
    assert event.attempts_left == 1
    assert event.error.name == "Flaky"
    assert event.error.message == "attempt 1 failed"
    assert event.error.cause == "'root cause'"
    assert event.error.stacktrace == (
        StackFrame(
            "_retry_task",
            "/venv/lib/python3.11/site-packages/icij_worker/worker/worker.py",
            653,
        ),
        StackFrame("flaky", "/scratch/nbapp.py", 44),
    )
    assert event.error.created_at == event.created_at


def test_decode_timeout_error_event_with_empty_stacktrace_and_no_cause():
    event = decode_event(ERROR_TIMEOUT)
    assert isinstance(event, ErrorEvent)
    assert event.attempts_left == 0
    assert event.error.name == "WorkerTimeoutError"
    assert event.error.message.startswith("Task(id=\"id='grouped_sleepy-e6fb9288'")
    assert event.error.message.endswith("exceeded allocated timeout of 2s")
    assert event.error.cause is None
    assert event.error.stacktrace == ()


def test_decode_cancelled_event():
    assert decode_event(CANCELLED) == CancelledEvent(
        "sleepy-0940a2bd", True, at("2026-11-27T21:39:48.113814+00:00")
    )


def test_decode_cancel_broadcast():
    assert decode_broadcast(CANCEL) == CancelEvent(
        "sleepy-3b2ceac4", False, at("2026-11-27T21:39:36.493678+00:00")
    )


def test_decode_shutdown_broadcast():
    assert decode_broadcast(SHUTDOWN) == ShutdownEvent(
        at("2026-11-27T21:44:25.919256+00:00")
    )


# -- golden: encoding writes what icij-worker writes ----------------------------


def observed_task(body: bytes, *, max_attempts: int, attempts_left: int) -> Task:
    obj = json.loads(body)
    return Task(
        id=obj["id"],
        name=obj["name"],
        group="nb",
        args=obj["args"],
        state=TaskState(obj["state"]),
        progress=0.0,
        max_attempts=max_attempts,
        attempts_left=attempts_left,
        created_at=at(obj["createdAt"]),
        worker_id="somewhere",
    )


@pytest.mark.parametrize(
    ("body", "max_attempts", "attempts_left"),
    [(TASK_GROUPED, 3, 3), (TASK_REPUBLISHED, 2, 1)],
)
def test_encoded_task_is_byte_identical_to_the_observed_one(
    body, max_attempts, attempts_left
):
    task = observed_task(body, max_attempts=max_attempts, attempts_left=attempts_left)
    assert encode_task(task) == body


def test_encoded_bare_task_matches_observed_plus_retry_counts_in_icij_key_order():
    task = observed_task(TASK_BARE, max_attempts=1, attempts_left=1)
    sent = json.loads(encode_task(task))
    observed = json.loads(TASK_BARE)
    # We always send the retry counts (docs/protocol.md §5.2); the rest is identical.
    assert sent == {**observed, "retriesLeft": 1, "maxRetries": 1}
    assert list(sent) == [
        "id",
        "name",
        "args",
        "state",
        "createdAt",
        "retriesLeft",
        "maxRetries",
        "@type",
    ]


def test_encoded_task_never_carries_group_worker_or_completed_at():
    task = observed_task(TASK_GROUPED, max_attempts=3, attempts_left=3)
    task.completed_at = datetime(2026, 1, 1, tzinfo=UTC)
    sent = json.loads(encode_task(task))
    assert not {"group", "completedAt", "workerId", "worker_id"} & set(sent)
    assert "somewhere" not in encode_task(task).decode()


def test_encoded_task_sends_progress_only_when_queued():
    task = observed_task(TASK_REPUBLISHED, max_attempts=2, attempts_left=1)
    assert json.loads(encode_task(task))["progress"] == 0.0
    task.state = TaskState.CREATED
    assert "progress" not in json.loads(encode_task(task))


@pytest.mark.parametrize("body", ALL_EVENTS)
def test_encoded_event_is_byte_identical_to_the_observed_one(body):
    event = decode_event(body)
    assert encode_event(event) == body


@pytest.mark.parametrize("body", ALL_BROADCASTS)
def test_encoded_broadcast_is_byte_identical_to_the_observed_one(body):
    assert encode_broadcast(decode_broadcast(body)) == body


# -- encoding rules that keep icij peers alive ----------------------------------

NOW = datetime(2026, 11, 27, 21, 39, 4, 760269, tzinfo=UTC)


def test_none_result_is_sent_with_an_explicit_null_value():
    body = encode_event(ResultEvent("t-1", None, NOW))
    assert json.loads(body)["result"] == {"value": None, "@type": "TaskResult"}
    assert b'"value":null' in body


@pytest.mark.parametrize("attempts_left", [0, 1, 5])
def test_error_event_always_carries_retries_left(attempts_left):
    event = ErrorEvent("t-1", ErrorRecord("Boom", "boom"), attempts_left, NOW)
    assert json.loads(encode_event(event))["retriesLeft"] == attempts_left


def test_error_without_cause_omits_the_key_and_keeps_an_empty_stacktrace():
    event = ErrorEvent("t-1", ErrorRecord("Boom", "boom"), 0, NOW)
    error = json.loads(encode_event(event))["error"]
    assert error == {
        "name": "Boom",
        "message": "boom",
        "stacktrace": [],
        "@type": "TaskError",
    }


ONE_OF_EACH_EVENT = [
    ProgressEvent("t-1", 0.5, NOW, worker_id="w-7"),
    ResultEvent("t-1", {"a": 1}, NOW, worker_id="w-7"),
    ErrorEvent("t-1", ErrorRecord("E", "m", "c"), 2, NOW, worker_id="w-7"),
    CancelledEvent("t-1", False, NOW, worker_id="w-7"),
]


@pytest.mark.parametrize("event", ONE_OF_EACH_EVENT, ids=lambda e: type(e).__name__)
def test_events_never_carry_max_retries_nor_the_worker_id(event):
    body = encode_event(event)
    obj = json.loads(body)
    assert "maxRetries" not in obj
    assert "max_retries" not in obj
    assert "w-7" not in body.decode()
    assert decode_event(body).worker_id is None


def test_encoding_refuses_args_json_cannot_carry():
    task = Task("t-1", "ocr", None, {"pages": {1, 2}})
    with pytest.raises(WireError, match=r"args\['pages'\]"):
        encode_task(task)


def test_encoding_refuses_non_string_keys_instead_of_rewriting_them():
    with pytest.raises(WireError, match="key"):
        encode_event(ResultEvent("t-1", {1: "one"}, NOW))


def test_encoding_refuses_nan_results():
    with pytest.raises(WireError, match="NaN"):
        encode_event(ResultEvent("t-1", [float("nan")], NOW))


def test_encoding_refuses_progress_outside_unit_interval():
    with pytest.raises(WireError, match="progress"):
        encode_event(ProgressEvent("t-1", 1.5, NOW))


def test_encoding_refuses_strings_that_are_not_unicode():
    with pytest.raises(WireError):
        encode_event(ResultEvent("t-1", "half a pair: \ud800", NOW))


def test_encoding_refuses_bodies_over_the_size_limit():
    big = "x" * (MAX_BODY_BYTES + 1)
    with pytest.raises(WireError, match="limit"):
        encode_event(ResultEvent("t-1", big, NOW))


def test_encoding_refuses_what_is_not_an_event():
    with pytest.raises(WireError, match="not a manager event"):
        encode_event(ShutdownEvent(NOW))  # type: ignore[arg-type]
    with pytest.raises(WireError, match="not a worker broadcast"):
        encode_broadcast(ProgressEvent("t", 0.0, NOW))  # type: ignore[arg-type]


def test_non_ascii_text_is_sent_as_utf8():
    body = encode_event(ResultEvent("t-1", "Zoë 文字", NOW))
    assert "Zoë 文字".encode() in body
    assert decode_event(body).value == "Zoë 文字"  # type: ignore[union-attr]


# -- datetimes ------------------------------------------------------------------


def test_format_datetime_is_pythons_utc_isoformat():
    assert format_datetime(NOW) == "2026-11-27T21:39:04.760269+00:00"


def test_format_datetime_omits_a_zero_fraction():
    assert format_datetime(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == (
        "2026-01-02T03:04:05+00:00"
    )


def test_format_datetime_converts_offsets_and_takes_naive_as_utc():
    paris = timezone(timedelta(hours=2))
    assert format_datetime(datetime(2026, 1, 2, 5, 0, tzinfo=paris)) == (
        "2026-01-02T03:00:00+00:00"
    )
    assert format_datetime(datetime(2026, 1, 2, 3, 0)) == "2026-01-02T03:00:00+00:00"


@pytest.mark.parametrize(
    "value",
    [
        "2026-01-02T03:04:05Z",
        "2026-01-02T03:04:05+00:00",
        "2026-01-02T05:04:05+02:00",
        "2026-01-01T22:04:05-05:00",
        "2026-01-02T03:04:05",  # naive: UTC
        "2026-01-02 03:04:05",
        1767323045,  # epoch seconds
        1767323045.0,
        1767323045000,  # epoch milliseconds, as pydantic reads large numbers
    ],
)
def test_parse_datetime_accepts_every_form_icij_accepts(value):
    parsed = parse_datetime(value)
    assert parsed == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "",
        True,
        None,
        [2026],
        {"y": 2026},
        10**30,
        "0001-01-01T00:00+05:00",
    ],
)
def test_parse_datetime_refuses_what_is_not_a_datetime(value):
    with pytest.raises(WireError):
        parse_datetime(value)


# -- argument names -------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("nSteps", "n_steps"),
        ("someHTTPArg", "some_h_t_t_p_arg"),
        ("already_snake", "already_snake"),
        ("plain", "plain"),
        ("NSteps", "n_steps"),  # icij drops the leading underscore
        ("createdAt", "created_at"),
    ],
)
def test_to_snake_case_converts_like_icij(key, expected):
    assert to_snake_case(key) == expected


# -- leniency (docs/protocol.md §2.12) --------------------------------------------


def test_task_in_snake_case_with_naive_datetime_is_accepted():
    body = body_of(
        {
            "id": "raw-2",
            "name": "ocr",
            "args": {},
            "state": "CREATED",
            "created_at": "2026-11-27T21:39:04",
            "max_retries": 2,
            "@type": "Task",
        }
    )
    task = decode_task(body)
    assert task.created_at == datetime(2026, 11, 27, 21, 39, 4, tzinfo=UTC)
    assert (task.max_attempts, task.attempts_left) == (2, 2)


def test_task_with_unknown_keys_is_accepted_and_the_keys_ignored():
    task = decode_task(task_body(group="nb", priority=3, somethingNew={"x": 1}))
    assert task.group is None
    assert task.id == "t-1"


@pytest.mark.parametrize("state", ["created", "Queued", "RUNNING", "cancelled"])
def test_task_state_is_read_in_any_case(state):
    assert decode_task(task_body(state=state)).state == TaskState.parse(state)


def test_task_without_state_reads_as_created():
    assert decode_task(task_body(state=...)).state is TaskState.CREATED


def test_task_with_null_args_has_empty_args():
    assert decode_task(task_body(args=None)).args == {}
    assert decode_task(task_body(args=...)).args == {}


def test_task_with_args_as_a_json_string_is_decoded():
    assert decode_task(task_body(args='{"nSteps": 3}')).args == {"nSteps": 3}


def test_task_args_keep_their_camel_case_keys():
    assert decode_task(task_body(args={"nSteps": 3})).args == {"nSteps": 3}


@pytest.mark.parametrize("args", ['"just text"', "[1, 2]", "not json", [1, 2], 3, True])
def test_task_with_args_that_are_no_object_is_refused(args):
    with pytest.raises(WireError, match="'args'"):
        decode_task(task_body(args=args))


def test_task_with_only_retries_left_may_run_that_many_times():
    task = decode_task(task_body(retriesLeft=2))
    assert (task.max_attempts, task.attempts_left) == (2, 2)


def test_task_completed_at_is_read_when_present():
    task = decode_task(task_body(completedAt="2026-11-28T00:00:00Z"))
    assert task.completed_at == datetime(2026, 11, 28, tzinfo=UTC)


def test_progress_event_with_epoch_created_at_is_accepted():
    event = decode_event(event_body("ProgressEvent", createdAt=1767323045, progress=0))
    assert event.created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert event == ProgressEvent("t-1", 0.0, event.created_at)


def test_progress_event_carrying_max_retries_is_accepted_and_it_ignored():
    event = decode_event(event_body("ProgressEvent", progress=0.5, maxRetries=3))
    assert event == ProgressEvent("t-1", 0.5, event.created_at)


def test_result_without_nested_type_is_accepted():
    event = decode_event(event_body("ResultEvent", result={"value": 1}))
    assert isinstance(event, ResultEvent)
    assert event.value == 1


def test_result_with_extra_keys_is_accepted():
    event = decode_event(event_body("ResultEvent", state="DONE", result={"value": 2}))
    assert isinstance(event, ResultEvent)
    assert event.value == 2


def test_icij_none_result_without_value_reads_as_none():
    # icij-worker drops the null value (docs/protocol.md §6 #1); we must not choke
    # on it.
    event = decode_event(event_body("ResultEvent", result={"@type": "TaskResult"}))
    assert isinstance(event, ResultEvent)
    assert event.value is None


def test_error_event_without_retries_left_has_no_attempts_left():
    # icij's model would default to 3 and retry forever; a missing count means none.
    event = decode_event(event_body("ErrorEvent", error={"name": "E", "message": "m"}))
    assert isinstance(event, ErrorEvent)
    assert event.attempts_left == 0
    assert event.error.stacktrace == ()


def test_error_event_frames_with_missing_details_still_decode():
    error = {"name": "E", "message": "m", "stacktrace": [{"name": "f"}, {}]}
    event = decode_event(event_body("ErrorEvent", retriesLeft=1, error=error))
    assert isinstance(event, ErrorEvent)
    assert event.error.stacktrace == (
        StackFrame("f", "<unknown>", 0),
        StackFrame("<unknown>", "<unknown>", 0),
    )


def test_negative_retry_counts_read_as_none_left():
    error = {"name": "E", "message": "m"}
    event = decode_event(event_body("ErrorEvent", retriesLeft=-1, error=error))
    assert event.attempts_left == 0  # type: ignore[union-attr]


def test_events_in_snake_case_are_accepted():
    body = body_of(
        {
            "task_id": "t-1",
            "created_at": "2026-01-02T03:04:05Z",
            "requeue": True,
            "@type": "CancelledEvent",
        }
    )
    assert decode_event(body) == CancelledEvent(
        "t-1", True, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    )


def test_body_may_be_a_bytearray_or_memoryview():
    assert decode_event(bytearray(PROGRESS)) == decode_event(PROGRESS)
    assert decode_broadcast(memoryview(SHUTDOWN)) == decode_broadcast(SHUTDOWN)


def test_surrogate_pairs_decode_to_one_character():
    body = event_body("ResultEvent", result={"value": "\U0001f600"})
    assert b"\\ud83d\\ude00" in body  # json.dumps escapes it as a pair
    assert decode_event(body).value == "\U0001f600"  # type: ignore[union-attr]


# -- refusals -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"", "not valid JSON"),
        (b"{'id': 1}", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'"Task"', "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (b'{"progress": NaN, "@type": "ProgressEvent"}', "NaN"),
        (b'{"progress": Infinity, "@type": "ProgressEvent"}', "Infinity"),
        (b'{"progress": -Infinity, "@type": "ProgressEvent"}', "Infinity"),
        (b'{"progress": 1e999, "@type": "ProgressEvent"}', "too large"),
        (b'{"x": "\\ud800", "@type": "ProgressEvent"}', "surrogate"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),  # a BOM is not JSON
    ],
)
@pytest.mark.parametrize("decode", [decode_task, decode_event, decode_broadcast])
def test_bodies_that_are_not_json_objects_are_refused_with_the_reason(
    decode, body, reason
):
    with pytest.raises(WireError, match=reason):
        decode(body)


def test_refusal_is_a_value_error_and_an_icij_nb_error():
    with pytest.raises(ValueError, match="not valid JSON") as caught:
        decode_task(b"nope")
    assert isinstance(caught.value, IcijNbError)


def test_oversized_body_is_refused_before_parsing():
    # Parsed, this body would fail as "nested too deeply"; the size check comes first.
    body = b"[" * (MAX_BODY_BYTES + 1)
    with pytest.raises(WireError, match="over the 67108864-byte limit"):
        decode_event(body)


def test_refusal_never_echoes_much_of_the_body():
    garbage = b"\x00garbage" * 100_000
    with pytest.raises(WireError) as caught:
        decode_task(garbage)
    assert len(str(caught.value)) < 300
    secret = "s3cr3t" * 10_000
    with pytest.raises(WireError) as caught:
        decode_task(task_body(state=secret))
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        ({"id": 3}, "'id'", "string"),
        ({"id": ""}, "'id'", "non-empty"),
        ({"id": ...}, "'id'", "missing"),
        ({"name": ["ocr"]}, "'name'", "string"),
        ({"state": "SLEEPING"}, "'state'", "CREATED"),
        ({"state": 1}, "'state'", "string"),
        ({"createdAt": ...}, "'createdAt'", "missing"),
        ({"createdAt": "tomorrow"}, "'createdAt'", "ISO-8601"),
        ({"createdAt": True}, "'createdAt'", "ISO-8601"),
        ({"maxRetries": "3"}, "'maxRetries'", "integer"),
        ({"maxRetries": 2.5}, "'maxRetries'", "integer"),
        ({"retriesLeft": True}, "'retriesLeft'", "integer"),
        ({"progress": 1.5}, "'progress'", r"within \[0, 1\]"),
        ({"progress": "0.5"}, "'progress'", "number"),
        ({"@type": "ProgressEvent"}, "'@type'", "'Task'"),
        ({"@type": ...}, "'@type'", "missing"),
    ],
)
def test_task_with_a_bad_field_is_refused_naming_the_field(overrides, field, expected):
    with pytest.raises(WireError, match=field) as caught:
        decode_task(task_body(**overrides))
    assert caught.match(expected)


@pytest.mark.parametrize(
    ("tag", "fields", "field", "expected"),
    [
        ("ProgressEvent", {"progress": 1.5}, "'progress'", "within"),
        ("ProgressEvent", {"progress": -0.1}, "'progress'", "within"),
        ("ProgressEvent", {"progress": 10**400}, "'progress'", "within"),
        ("ProgressEvent", {"progress": True}, "'progress'", "number"),
        ("ProgressEvent", {}, "'progress'", "missing"),
        ("ProgressEvent", {"progress": 0.5, "taskId": 7}, "'taskId'", "string"),
        ("ResultEvent", {}, "'result'", "missing"),
        ("ResultEvent", {"result": 5}, "'result'", "object"),
        ("ErrorEvent", {}, "'error'", "missing"),
        ("ErrorEvent", {"error": {"message": "m"}}, "'error.name'", "missing"),
        ("ErrorEvent", {"error": {"name": "E", "message": 1}}, "'error.message'", ""),
        (
            "ErrorEvent",
            {"error": {"name": "E", "message": "m", "stacktrace": "x"}},
            "'error.stacktrace'",
            "array",
        ),
        (
            "ErrorEvent",
            {"error": {"name": "E", "message": "m", "stacktrace": [{"lineno": "9"}]}},
            r"'error.stacktrace\[0\].lineno'",
            "integer",
        ),
        (
            "ErrorEvent",
            {"retriesLeft": "1", "error": {"name": "E", "message": "m"}},
            "'retriesLeft'",
            "integer",
        ),
        ("CancelledEvent", {}, "'requeue'", "missing"),
        ("CancelledEvent", {"requeue": "yes"}, "'requeue'", "true or false"),
        ("Task", {}, "'@type'", "ProgressEvent"),
        ("CancelEvent", {"requeue": True}, "'@type'", "wrong exchange"),
    ],
)
def test_event_with_a_bad_field_is_refused_naming_the_field(
    tag, fields, field, expected
):
    with pytest.raises(WireError, match=field) as caught:
        decode_event(event_body(tag, **fields))
    assert caught.match(expected)


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"createdAt": "2026-01-01T00:00:00Z", "@type": "ProgressEvent"}, "'@type'"),
        ({"taskId": "t", "createdAt": "2026-01-01", "@type": "CancelEvent"}, "requeue"),
        ({"@type": "ShutdownEvent"}, "'createdAt'"),
        (
            {"createdAt": "2026-01-01", "requeue": False, "@type": "CancelEvent"},
            "taskId",
        ),
    ],
)
def test_broadcast_with_a_bad_field_is_refused_naming_the_field(obj, field):
    with pytest.raises(WireError, match=field):
        decode_broadcast(body_of(obj))


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def test_values_nested_up_to_the_limit_decode_and_can_be_sent_again():
    value = nested(MAX_VALUE_DEPTH)
    assert json_problem(value) is None
    event = decode_event(event_body("ResultEvent", result={"value": value}))
    assert encode_event(event)
    task = decode_task(task_body(args={"a": nested(MAX_VALUE_DEPTH - 1)}))
    assert encode_task(task)


def test_values_nested_beyond_the_limit_are_refused():
    with pytest.raises(WireError, match=r"'result\.value' is nested more than"):
        decode_event(
            event_body("ResultEvent", result={"value": nested(MAX_VALUE_DEPTH + 1)})
        )
    with pytest.raises(WireError, match="'args'"):
        decode_task(task_body(args={"a": nested(MAX_VALUE_DEPTH)}))


def test_deeply_nested_args_in_a_json_string_are_refused():
    text = json.dumps({"a": nested(MAX_VALUE_DEPTH)})
    with pytest.raises(WireError, match="'args'"):
        decode_task(task_body(args=text))


# -- pickle is never loaded -----------------------------------------------------

UNPICKLED: list[str] = []


def _mark_unpickled() -> None:
    UNPICKLED.append("ran")


class Booby:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_mark_unpickled, ())


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("decode", [decode_task, decode_event, decode_broadcast])
def test_pickle_payload_is_refused_and_never_unpickled(decode, protocol):
    payload = pickle.dumps({"@type": "Task", "obj": Booby()}, protocol=protocol)
    pickle.loads(pickle.dumps(1))  # the mark works only through our __reduce__
    with pytest.raises(WireError):
        decode(payload)
    assert UNPICKLED == []


def test_the_pickle_trap_would_spring_if_unpickled():
    # Guards the test above against a trap that cannot fire.
    try:
        pickle.loads(pickle.dumps(Booby()))
        assert UNPICKLED == ["ran"]
    finally:
        UNPICKLED.clear()


# -- properties -----------------------------------------------------------------

# No example database (nothing written to the checkout), no deadline (a slow CI
# machine must not turn a pass into a flaky failure).
PROPERTY = settings(
    database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

aware_datetimes = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.just(UTC),
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ids = st.text(min_size=1, max_size=30)
fractions = st.floats(min_value=0.0, max_value=1.0)
counts = st.integers(min_value=0, max_value=10**6)


@st.composite
def tasks(draw: st.DrawFn) -> Task:
    max_attempts = draw(st.integers(min_value=1, max_value=50))
    state = draw(st.sampled_from(TaskState))
    return Task(
        id=draw(ids),
        name=draw(ids),
        group=draw(st.none() | st.text(max_size=5)),
        args=draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4)),
        state=state,
        progress=draw(fractions) if state is TaskState.QUEUED else 0.0,
        max_attempts=max_attempts,
        attempts_left=draw(st.integers(min_value=0, max_value=max_attempts)),
        created_at=draw(aware_datetimes),
    )


@st.composite
def error_events(draw: st.DrawFn) -> ErrorEvent:
    created_at = draw(aware_datetimes)
    frames = st.builds(StackFrame, st.text(min_size=1), st.text(min_size=1), counts)
    record = ErrorRecord(
        name=draw(st.text(max_size=20)),
        message=draw(st.text()),
        cause=draw(st.none() | st.text()),
        stacktrace=tuple(draw(st.lists(frames, max_size=3))),
        created_at=created_at,
    )
    return ErrorEvent(draw(ids), record, draw(counts), created_at)


manager_events = (
    st.builds(ProgressEvent, ids, fractions, aware_datetimes)
    | st.builds(ResultEvent, ids, json_values, aware_datetimes)
    | error_events()
    | st.builds(CancelledEvent, ids, st.booleans(), aware_datetimes)
)
broadcasts = st.builds(CancelEvent, ids, st.booleans(), aware_datetimes) | st.builds(
    ShutdownEvent, aware_datetimes
)


@PROPERTY
@given(tasks())
def test_tasks_round_trip(task):
    decoded = decode_task(encode_task(task))
    assert decoded.group is None
    assert (
        decoded.id,
        decoded.name,
        decoded.args,
        decoded.state,
        decoded.progress,
        decoded.created_at,
        decoded.max_attempts,
        decoded.attempts_left,
    ) == (
        task.id,
        task.name,
        task.args,
        task.state,
        task.progress,
        task.created_at,
        task.max_attempts,
        task.attempts_left,
    )


@PROPERTY
@given(manager_events)
def test_manager_events_round_trip(event):
    assert decode_event(encode_event(event)) == event


@PROPERTY
@given(broadcasts)
def test_broadcasts_round_trip(event):
    assert decode_broadcast(encode_broadcast(event)) == event


def check_model(decoded: Any) -> None:
    """What decoding returned is a sound model object."""
    assert decoded.created_at.tzinfo is UTC
    if isinstance(decoded, Task):
        assert decoded.id
        assert decoded.name
        assert isinstance(decoded.args, dict)
        assert json_problem(decoded.args) is None
        assert 0.0 <= decoded.progress <= 1.0
        assert decoded.max_attempts >= 0
        assert decoded.attempts_left >= 0
        encode_task(decoded)  # what we accept, we can send again
    elif isinstance(decoded, ShutdownEvent | CancelEvent):
        encode_broadcast(decoded)
    else:
        assert decoded.task_id
        assert decoded.worker_id is None
        if isinstance(decoded, ProgressEvent):
            assert 0.0 <= decoded.progress <= 1.0
        if isinstance(decoded, ErrorEvent):
            assert decoded.attempts_left >= 0
        encode_event(decoded)


DECODERS = [decode_task, decode_event, decode_broadcast]


def decodes_or_refuses(body: bytes) -> None:
    for decode in DECODERS:
        try:
            decoded = decode(body)
        except WireError:
            continue
        check_model(decoded)


@PROPERTY
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_wire_error(body):
    decodes_or_refuses(body)


@PROPERTY
@given(json_values)
def test_arbitrary_json_values_decode_or_raise_wire_error(value):
    decodes_or_refuses(json.dumps(value).encode())


KNOWN_KEYS = [
    "id",
    "name",
    "args",
    "state",
    "progress",
    "createdAt",
    "created_at",
    "completedAt",
    "maxRetries",
    "max_retries",
    "retriesLeft",
    "taskId",
    "task_id",
    "result",
    "error",
    "requeue",
]
TYPES = [
    "Task",
    *wire.EVENT_TYPES,
    *wire.BROADCAST_TYPES,
    "TaskResult",
    "Nope",
]
plausible_values = (
    json_values
    | st.sampled_from(["2026-01-02T03:04:05Z", "created", "QUEUED", '{"a": 1}', ""])
    | st.dictionaries(
        st.sampled_from(["value", "name", "message", "cause", "stacktrace"]),
        json_values | st.lists(st.dictionaries(st.text(max_size=6), json_values)),
    )
)


@st.composite
def near_messages(draw: st.DrawFn) -> dict[str, Any]:
    obj = draw(st.dictionaries(st.sampled_from(KNOWN_KEYS), plausible_values))
    obj["@type"] = draw(st.sampled_from(TYPES) | json_values)
    return obj


@PROPERTY
@given(near_messages())
def test_almost_messages_decode_or_raise_wire_error(obj):
    decodes_or_refuses(json.dumps(obj).encode())


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    """A valid message with one key replaced by an arbitrary value, or dropped."""
    body = draw(st.sampled_from([*ALL_TASKS, *ALL_EVENTS, *ALL_BROADCASTS]))
    obj = json.loads(body)
    key = draw(st.sampled_from(sorted(obj)))
    if draw(st.booleans()):
        del obj[key]
    else:
        obj[key] = draw(plausible_values)
    return json.dumps(obj).encode()


@PROPERTY
@given(mutated_messages())
def test_mutated_messages_decode_or_raise_wire_error(body):
    decodes_or_refuses(body)


def compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@PROPERTY
@given(tasks() | manager_events | broadcasts)
def test_encoding_is_compact_utf8_json_with_type_tags_last(item):
    if isinstance(item, Task):
        body = encode_task(item)
    elif isinstance(item, CancelEvent | ShutdownEvent):
        body = encode_broadcast(item)
    else:
        body = encode_event(item)
    obj = json.loads(body)
    assert body == compact(obj)
    assert list(obj)[-1] == "@type"
    for nested_key in ("result", "error"):
        if nested_key in obj:
            assert list(obj[nested_key])[-1] == "@type"
