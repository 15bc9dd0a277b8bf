"""docs/reliability.md shows every scenario of the fault suite, from a real run."""

from __future__ import annotations

import json

import pytest
from fault_report import END, FIGURES, PAGE, SCENARIOS, START, render

pytestmark = pytest.mark.rabbitmq


def test_the_page_has_a_row_for_every_scenario_between_its_markers():
    text = PAGE.read_text()
    assert text.count(START) == 1
    assert text.count(END) == 1
    table = text.split(START, 1)[1].split(END, 1)[0]
    for key, (what, _) in SCENARIOS.items():
        assert f"| {key.split('-', 1)[0]} | {what} |" in table, key


def test_the_page_shows_figures_of_a_run_not_placeholders():
    table = PAGE.read_text().split(START, 1)[1].split(END, 1)[0]
    assert "not run" not in table
    assert "**lost** 0" in table


def test_recorded_figures_name_only_described_scenarios_with_nothing_lost(figures):
    # The figures of this session's scenarios (they run first), else the last run's.
    if figures.scenarios:
        data = {"scenarios": figures.scenarios}
    else:
        assert FIGURES.exists(), f"no fault figures: run tests/faults (or {FIGURES})"
        data = json.loads(FIGURES.read_text())
    assert data["scenarios"], "no scenario recorded figures"
    assert set(data["scenarios"]) <= set(SCENARIOS)
    for key, values in data["scenarios"].items():
        assert values.get("lost", 0) == 0, key
        assert values.get("duplicates", 0) == 0, key
        assert values.get("left_in_queues", 0) == 0, key
    assert "| 1a |" in render(data)
