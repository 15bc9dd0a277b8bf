"""App, TaskGroup and the task registry that @app.task fills.

The ``app`` fixture (conftest.py) is a fresh ``App("testapp")``.
"""

from __future__ import annotations

import pytest

from icij_nb import (
    App,
    ConfigError,
    DuplicateTask,
    InvalidArguments,
    TaskGroup,
    UnknownGroup,
    UnknownTask,
)

# -- registration ---------------------------------------------------------------


def test_bare_decorator_registers_under_the_function_name(app):
    @app.task
    def tokenize(doc: str) -> list[str]:
        return doc.split()

    spec = app.get("tokenize")
    assert spec.fn is tokenize
    assert spec.group is None
    assert spec.group_name is None
    assert (spec.max_retries, spec.max_attempts) == (3, 4)
    assert tokenize("a b") == ["a", "b"]  # the function stays callable


def test_called_decorator_takes_options_and_a_name_override(app):
    @app.task(name="ocr.v2", max_retries=0, recover_from=(OSError,), timeout_s=30)
    def ocr(path: str) -> str:
        return path

    assert "ocr.v2" in app
    assert "ocr" not in app
    spec = app.get("ocr.v2")
    assert spec.fn is ocr
    assert (spec.max_retries, spec.max_attempts) == (0, 1)
    assert spec.recover_from == (OSError,)
    assert spec.timeout_s == 30


def test_sync_and_async_functions_are_told_apart(app):
    @app.task
    def sync_task() -> None:
        return None

    @app.task
    async def async_task() -> None:
        return None

    assert not app.get("sync_task").is_async
    assert app.get("async_task").is_async


def test_a_progress_parameter_is_detected(app):
    @app.task
    async def with_progress(n: int, progress) -> int:
        await progress(1.0)
        return n

    @app.task
    def without_progress(n: int) -> int:
        return n

    assert app.get("with_progress").takes_progress
    assert not app.get("without_progress").takes_progress


def test_task_names_are_listed_sorted(app):
    for name in ("b", "a", "c"):
        app.task(name=name)(lambda: None)
    assert app.task_names == ["a", "b", "c"]
    assert sorted(s.name for s in app) == ["a", "b", "c"]


# -- groups -----------------------------------------------------------------------


def test_group_given_as_a_name_declares_a_group_without_limits(app):
    @app.task(group="cpu")
    def work() -> None:
        return None

    assert app.get("work").group == TaskGroup("cpu")
    assert app.group("cpu") == TaskGroup("cpu")
    assert app.get("work").group_name == "cpu"


def test_group_given_as_a_task_group_keeps_its_limits(app):
    gpu = TaskGroup("gpu", timeout_s=60, max_task_queue_size=10)

    @app.task(group=gpu)
    def work() -> None:
        return None

    assert app.get("work").group == gpu
    assert app.groups == {"gpu": gpu}


def test_a_group_name_refers_to_the_group_already_declared(app):
    gpu = TaskGroup("gpu", timeout_s=60)
    app.task(name="a", group=gpu)(lambda: None)
    app.task(name="b", group="gpu")(lambda: None)
    assert app.get("b").group == gpu


def test_groups_can_be_declared_up_front():
    cpu = TaskGroup("cpu", timeout_s=5)
    app = App("pipeline", groups=(cpu,))
    assert app.group("cpu") == cpu
    assert app.group(None) is None


def test_redeclaring_a_group_with_other_limits_fails(app):
    app.task(name="a", group=TaskGroup("cpu", timeout_s=10))(lambda: None)
    with pytest.raises(ConfigError, match="group 'cpu' is already declared") as info:
        app.task(name="b", group=TaskGroup("cpu", timeout_s=20))(lambda: None)
    assert "timeout_s=20" in str(info.value)
    assert "b" not in app
    assert app.group("cpu").timeout_s == 10


def test_unknown_group_lists_the_declared_groups(app):
    app.add_group("cpu")
    app.add_group("io")
    with pytest.raises(UnknownGroup) as info:
        app.group("gpu")
    message = str(info.value)
    assert message.startswith("no task group named 'gpu'")
    assert "'cpu', 'io'" in message


# -- duplicates and notebook re-runs ---------------------------------------------------


def test_a_second_function_under_a_taken_name_is_refused(app):
    @app.task(name="ocr")
    def first(path: str) -> str:
        return path

    def second(path: str) -> str:
        return path

    with pytest.raises(DuplicateTask, match="a task named 'ocr' is already") as info:
        app.task(name="ocr")(second)
    assert "first" in str(info.value)  # says which function holds the name
    assert app.get("ocr").fn is first


def test_rerunning_a_cell_replaces_the_task(app):
    @app.task(group="cpu")
    def ocr(path: str) -> str:
        return "old"

    old = ocr

    @app.task(group="cpu", max_retries=1)
    def ocr(path: str) -> str:  # the same cell, run again
        return "new"

    assert ocr is not old
    spec = app.get("ocr")
    assert spec.fn is ocr
    assert spec.max_retries == 1
    assert app.task_names == ["ocr"]


def test_unregister_frees_the_name(app):
    app.task(name="ocr")(lambda: "a")
    app.unregister("ocr")
    assert "ocr" not in app
    with pytest.raises(UnknownTask):
        app.unregister("ocr")


def test_unknown_task_lists_the_registered_names(app):
    app.task(name="ocr")(lambda: None)
    app.task(name="index")(lambda: None)
    with pytest.raises(UnknownTask) as info:
        app.get("orc")
    assert str(info.value) == (
        "no task named 'orc' in app 'testapp'; registered: 'index', 'ocr'. "
        "Did you decorate it with @app.task?"
    )


# -- invalid options ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "bad name", "-x", "a/b", 5, None])
def test_invalid_group_names_are_refused(name):
    with pytest.raises(ConfigError, match=f"invalid group name {name!r}"):
        TaskGroup(name)


@pytest.mark.parametrize("name", ["", "1st", "has space", "a/b", "<lambda>"])
def test_invalid_task_names_are_refused(app, name):
    with pytest.raises(ConfigError, match=f"invalid task name {name!r}"):
        app.task(name=name)(lambda: None)
    assert app.task_names == []


def test_a_lambda_needs_a_name(app):
    with pytest.raises(ConfigError, match="invalid task name '<lambda>'"):
        app.task(lambda: None)


@pytest.mark.parametrize("value", [-1, 1.5, True, "3", None])
def test_invalid_max_retries_is_refused(app, value):
    with pytest.raises(
        ConfigError, match=r"max_retries of task 'work' must be an int >= 0, got"
    ) as info:
        app.task(name="work", max_retries=value)(lambda: None)
    assert repr(value) in str(info.value)
    assert "work" not in app


@pytest.mark.parametrize(
    "value", [ValueError, (ValueError, 3), ("ValueError",), (int,), None]
)
def test_invalid_recover_from_is_refused(app, value):
    with pytest.raises(
        ConfigError,
        match="recover_from of task 'work' must be a tuple of exception classes",
    ):
        app.task(name="work", recover_from=value)(lambda: None)


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), "10"])
def test_invalid_task_timeout_is_refused(app, value):
    with pytest.raises(
        ConfigError, match="timeout_s of task 'work' must be a positive number"
    ):
        app.task(name="work", timeout_s=value)(lambda: None)


@pytest.mark.parametrize("value", [0, -5, "10"])
def test_invalid_group_timeout_is_refused(value):
    with pytest.raises(
        ConfigError, match="timeout_s of group 'cpu' must be a positive number"
    ):
        TaskGroup("cpu", timeout_s=value)


def test_invalid_queue_size_is_refused():
    with pytest.raises(ConfigError, match="max_task_queue_size of group 'cpu'"):
        TaskGroup("cpu", max_task_queue_size=0)


def test_decorating_a_non_callable_is_refused(app):
    with pytest.raises(ConfigError, match=r"@app\.task decorates functions, got int"):
        app.task(name="x")(3)


@pytest.mark.parametrize("name", ["", "my app", "-x", None])
def test_an_app_needs_a_valid_name(name):
    with pytest.raises(ConfigError, match=f"an App needs a name .*, got {name!r}"):
        App(name)


# -- TaskSpec -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_timeout", "group_timeout", "expected"),
    [
        (10, 5, 5),
        (5, 10, 5),
        (None, 5, 5),
        (7, None, 7),
        (None, None, None),
    ],
)
def test_effective_timeout_is_the_tighter_of_task_and_group(
    app, task_timeout, group_timeout, expected
):
    group = TaskGroup("cpu", timeout_s=group_timeout)
    app.task(name="work", group=group, timeout_s=task_timeout)(lambda: None)
    assert app.get("work").effective_timeout_s == expected


def test_effective_timeout_without_a_group_is_the_task_timeout(app):
    app.task(name="work", timeout_s=3)(lambda: None)
    assert app.get("work").effective_timeout_s == 3


@pytest.fixture
def ocr_spec(app):
    @app.task
    async def ocr(path: str, progress, lang: str = "eng") -> str:
        return path

    return app.get("ocr")


def test_check_call_accepts_fitting_arguments(ocr_spec):
    ocr_spec.check_call({"path": "a.pdf"})
    ocr_spec.check_call({"path": "a.pdf", "lang": "fra"})


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"path": "a.pdf", "page": 3}, "unexpected keyword argument 'page'"),
        ({}, "missing a required argument: 'path'"),
        ({"path": "a.pdf", "progress": 1}, "progress"),
    ],
)
def test_check_call_rejects_arguments_that_do_not_fit(ocr_spec, args, problem):
    with pytest.raises(InvalidArguments, match="do not fit task 'ocr'") as info:
        ocr_spec.check_call(args)
    message = str(info.value)
    assert problem in message
    assert message.endswith("It takes: path, lang.")


def test_check_call_of_a_task_without_parameters_says_so(app):
    app.task(name="ping")(lambda: None)
    with pytest.raises(InvalidArguments, match="It takes: no arguments"):
        app.get("ping").check_call({"x": 1})
