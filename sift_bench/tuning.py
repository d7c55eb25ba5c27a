"""Was a grid choice tuned? The one rule for edges, used by every report and by the driver's edge extension.

A cell (model, task, variant, budget) chooses one grid point among its configs (`sift_bench.aggregate`). Per
grid axis (a TrainSettings field the grid varies, e.g. learning_rate), that choice is:

- `interior`: the axis has at least `MIN_TUNED_POINTS` numeric values and the choice lies strictly inside them;
- `low` / `high`: the same, but the choice is the smallest / largest value tried, so the optimum may lie
  beyond it (an *edge* choice);
- `untuned`: the axis has fewer than `MIN_TUNED_POINTS` values: with two points every choice is an edge, and
  nothing says whether the optimum lies between or beyond them;
- `categorical`: the values are not numbers (an edge means nothing there).

The values an axis has are the ones tried in the cell, extension points included: after the driver added a
point beyond an edge (`sift_bench.search`), the choice is judged against the widened axis. `next_value` is
that extension point: one more step beyond the edge, at the ratio of the axis's outermost step (for positive
values, e.g. learning rates 1e-4, 3e-4, 1e-3 -> 3.3e-3), else at its difference.

Every report shows the verdict the same way: `mark_text` ("lr ↑edge"), `marked_grid_text` ("lr=3e-3 ↑edge")
and, under a table, `mark_legend`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

MIN_TUNED_POINTS = 3

State = Literal["interior", "low", "high", "untuned", "categorical"]


@dataclass(frozen=True)
class AxisMark:
    """One grid axis of a cell: the values tried (sorted when numeric), the chosen one, and the verdict."""

    name: str
    values: tuple[Any, ...]
    chosen: Any
    state: State

    @property
    def edge(self) -> bool:
        return self.state in ("low", "high")


def is_numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def axis_marks(points: Iterable[Mapping[str, Any]], chosen: Mapping[str, Any]) -> list[AxisMark]:
    """The marks of every axis the `points` (the cell's configs' grid points) vary or set, in first-seen order."""
    values: dict[str, list[Any]] = {}
    for point in points:
        for name, value in point.items():
            if value not in values.setdefault(name, []):
                values[name].append(value)
    return [_mark(name, vals, chosen.get(name)) for name, vals in values.items()]


def _mark(name: str, values: list[Any], chosen: Any) -> AxisMark:
    if not all(is_numeric(v) for v in values):
        return AxisMark(name, tuple(values), chosen, "categorical")
    ordered = tuple(sorted(values))
    if len(ordered) < MIN_TUNED_POINTS:
        return AxisMark(name, ordered, chosen, "untuned")
    if chosen == ordered[0]:
        return AxisMark(name, ordered, chosen, "low")
    if chosen == ordered[-1]:
        return AxisMark(name, ordered, chosen, "high")
    return AxisMark(name, ordered, chosen, "interior")


def next_value(mark: AxisMark) -> Any:
    """The point one step beyond the edge `mark` chose (see the module docstring); ints stay ints."""
    if not mark.edge:
        raise ValueError(f"axis {mark.name} was not chosen at an edge ({mark.state})")
    values = mark.values
    edge, inner = (values[0], values[1]) if mark.state == "low" else (values[-1], values[-2])
    value = edge * (edge / inner) if all(v > 0 for v in values) else edge + (edge - inner)
    if all(isinstance(v, int) for v in values):
        stepped = round(value)
        return stepped if stepped != edge else edge + (1 if mark.state == "high" else -1)
    return _round_sig(value)


def _round_sig(value: float, digits: int = 3) -> float:
    """Three significant digits: 1e-3 * (1e-3 / 3e-4) is 3.33e-3, not 0.0033333333333333335, so the point
    reads well in tables and hashes to the same trial id on every machine."""
    if value == 0:
        return 0.0
    return float(f"{value:.{digits - 1}e}")


# Short names for the grid keys tables show most (grid keys are TrainSettings fields).
_SHORT = {"learning_rate": "lr", "batch_size": "bs", "weight_decay": "wd", "warmup_ratio": "warmup"}


def grid_text(point: dict[str, Any]) -> str:
    """A grid point in short form, e.g. "lr=1e-3, bs=16"; "" for the empty point (no grid)."""
    return ", ".join(f"{_SHORT.get(k, k)}={format_value(v)}" for k, v in point.items())


def format_value(value: Any) -> str:
    """A grid value as a table shows it: 0.001 -> "1e-3", 3e-05 -> "3e-5", 16 -> "16", 0.1 -> "0.1"."""
    if isinstance(value, float) and value != 0 and abs(value) < 1e-2:
        mantissa, exponent = f"{value:.6e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


SYMBOLS: dict[State, str] = {"interior": "", "low": "↓edge", "high": "↑edge", "untuned": "untuned", "categorical": ""}


def marked_grid_text(point: Mapping[str, Any], marks: Iterable[AxisMark], extended: int = 0) -> str:
    """A chosen grid point with each axis's mark beside its value, for tables: "lr=3e-3 ↑edge",
    "lr=1e-3 untuned, bs=16", "lr=3.33e-3, ext 1"; "" for the empty point (no grid)."""
    symbols = {m.name: SYMBOLS[m.state] for m in marks}
    parts = [grid_text({k: v}) + (f" {symbols[k]}" if symbols.get(k) else "") for k, v in point.items()]
    if extended:
        parts.append(f"ext {extended}")
    return ", ".join(parts)


def mark_text(marks: Iterable[AxisMark], extended: int = 0) -> str:
    """A short verdict for tables: "" when every numeric axis was chosen inside a tuned grid, else e.g.
    "lr ↑edge" or "lr untuned"; "ext 2" when the driver extended the cell's grid twice."""
    parts = []
    for m in marks:
        symbol = SYMBOLS[m.state]
        if symbol:
            short = _SHORT.get(m.name, m.name)
            parts.append(f"{short} {symbol}")
    if extended:
        parts.append(f"ext {extended}")
    return ", ".join(parts)


def mark_legend(marks: Iterable[AxisMark], extended: bool = False) -> str:
    """What the marks that occur among `marks` (and "ext k", when `extended`) mean; "" when none occurs."""
    states = {m.state for m in marks}
    parts = []
    if "interior" in states:  # said too, so that a reader can tell a tuned choice from one never judged
        parts.append(f"no mark = tuned: chosen inside {MIN_TUNED_POINTS}+ values tried")
    if states & {"low", "high"}:
        parts.append(
            f"↑edge/↓edge = chosen at the largest/smallest of {MIN_TUNED_POINTS}+ values tried: the optimum may "
            "lie beyond"
        )
    if "untuned" in states:
        parts.append(f"untuned = fewer than {MIN_TUNED_POINTS} values tried")
    if extended:
        parts.append("ext k = the driver added k points beyond an edge (search.extend_edges)")
    return "; ".join(parts)
