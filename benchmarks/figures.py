"""What the benchmark scripts share: a figure measured over repeats, percentiles.

The scripts run as ``python benchmarks/<name>.py``, so this module is imported from
the scripts' own folder.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    """One measured figure: its values over repeats, reported by their median."""

    label: str
    unit: str
    target: str = ""
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "unit": self.unit,
            "target": self.target,
            "median": self.median,
            "min": min(self.values),
            "max": max(self.values),
            "values": self.values,
        }


def percentile(samples: list[float], q: float) -> float:
    """The sample at quantile ``q`` (0..1) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]
