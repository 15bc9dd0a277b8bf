"""Task arguments and results must travel as JSON unchanged (icij_nb.jsonvalues)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icij_nb.errors import InvalidArguments
from icij_nb.jsonvalues import check_args, json_problem

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@settings(database=None, deadline=None)
@given(json_values)
def test_any_json_value_has_no_problem_and_round_trips(value):
    assert json_problem(value) is None
    assert json.loads(json.dumps(value)) == value


@settings(database=None, deadline=None)
@given(st.dictionaries(st.text(), json_values, max_size=5))
def test_any_dict_of_json_values_is_valid_args(args):
    assert check_args(args, task_name="ocr") is args


def test_nested_values_and_tuples_are_accepted():
    args = {
        "docs": [{"path": "a.pdf", "pages": (1, 2, 3)}, {"path": "b.pdf"}],
        "lang": None,
        "threshold": 0.5,
        "strict": False,
        "big": 10**30,
    }
    assert json_problem(args) is None
    assert check_args(args, task_name="ocr") is args


def test_missing_args_mean_no_arguments():
    assert check_args(None, task_name="ocr") == {}


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque>"


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        ({1, 2}, "set"),
        (datetime(2024, 1, 1, tzinfo=UTC), "datetime"),
        (b"%PDF", "bytes"),
        (Opaque(), "Opaque"),
        (np.int64(3), "int64"),
        (frozenset(), "frozenset"),
    ],
)
def test_a_value_json_cannot_carry_is_named_with_its_path_and_type(bad, kind):
    args = {"docs": [0, 1, 2, {"when": bad}]}
    problem = json_problem(args, "args")
    assert problem is not None
    assert problem.startswith(f"args['docs'][3]['when'] is a {kind} (")
    assert "Convert it to a str, number, bool, None, list or dict" in problem


def test_a_long_repr_is_shortened():
    problem = json_problem({"x": {"a" * 500}}, "args")
    assert problem is not None
    assert len(problem) < 250
    assert "..." in problem


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_refused(bad):
    problem = json_problem({"scores": [0.1, bad]}, "args")
    assert problem is not None
    assert problem.startswith(f"args['scores'][1] is {bad!r}; JSON has no NaN")


@pytest.mark.parametrize(
    ("key", "kind"), [(1, "int"), (None, "NoneType"), ((1,), "tuple")]
)
def test_non_string_keys_are_refused(key, kind):
    problem = json_problem({"counts": {key: 1}}, "args")
    assert problem is not None
    assert problem.startswith(f"args['counts'] has the key {key!r} of type {kind}")


def test_too_deep_nesting_is_refused_without_recursion_error():
    value: list[object] = []
    for _ in range(10_000):
        value = [value]
    problem = json_problem({"tree": value}, "args")
    assert problem is not None
    assert problem.startswith("args['tree'][0][0]")
    assert "nested more than" in problem


def test_check_args_refuses_a_non_dict_with_the_task_name_and_type():
    with pytest.raises(InvalidArguments) as info:
        check_args(["a.pdf"], task_name="ocr")
    message = str(info.value)
    assert "arguments of task 'ocr' must be a dict of keyword arguments" in message
    assert "got a list: ['a.pdf']" in message


def test_check_args_names_the_offending_argument():
    args = {"docs": ["a", "b", "c", {1, 2}]}
    with pytest.raises(InvalidArguments) as info:
        check_args(args, task_name="ocr")
    message = str(info.value)
    assert message.startswith("arguments of task 'ocr' cannot be sent: ")
    assert "args['docs'][3] is a set" in message
    assert isinstance(info.value, TypeError)  # what callers of a bad call expect
