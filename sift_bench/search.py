"""Extending an edge choice (a suite's `search: {extend_edges: N}`): which trials to add, planned from the
planned specs and the stored results alone (pure: no I/O, no clock).

A cell is one (model, task, variant, budget). Once every trial planned for it so far is `ok`, the selection
(`sift_bench.aggregate`, the one rule) picks its grid point; where that point sits on an edge of a numeric
axis (`sift_bench.tuning`, the one edge rule), the optimum may lie beyond it, so the cell gets the point one
step further (`tuning.next_value`), run for every seed. The driver runs those trials and asks again, until no
cell has an edge left or each edge axis had its N points. A resumed run derives the same points from the
same stored results, and a point's trial id is the hash of its config, so finished extension trials are
found in the store and skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from pydantic import ValidationError

from sift_bench.aggregate import Cell, aggregate
from sift_bench.spec import Budget, TrainSettings, TrialSpec
from sift_bench.suite import Suite
from sift_bench.tuning import AxisMark, axis_marks, format_value, next_value

CellKey = tuple[str, str, str, Budget | None]  # model, task, variant label, budget: as `aggregate` groups


@dataclass
class Extensions:
    """One round of extensions: the new trials (every seed of each new point), how many cells they extend,
    and why an edge choice was left where it is (a value the setting forbids, the limit reached)."""

    specs: list[TrialSpec] = field(default_factory=list)
    cells: int = 0
    notes: list[str] = field(default_factory=list)


def plan_extensions(suite: Suite, planned: list[TrialSpec], trials: pd.DataFrame) -> Extensions:
    """The trials to add beyond the edges chosen in `trials` (a trials table as `results.trials_frame`
    reads it) among the cells of `planned` (the suite's grid and the extensions planned so far); none
    already planned."""
    limit = suite.search.extend_edges
    out = Extensions()
    if limit == 0:
        return out
    known = {s.trial_id for s in planned}
    ok = set(trials.loc[trials["status"] == "ok", "trial_id"])
    chosen = _chosen_cells(planned, trials)
    for key, specs in cells_of(planned).items():
        cell = chosen.get(key)
        # A failed or missing trial could change the choice: such a cell waits (a rerun retries the trial).
        if cell is None or not all(s.trial_id in ok for s in specs):
            continue
        new = []
        for mark in cell.axes:  # the selection already judged each axis over the cell's finished configs
            if not mark.edge:
                continue
            made, note = _extend(suite, specs, cell, mark, limit)
            new += [s for s in made if s.trial_id not in known]
            if note:
                out.notes.append(f"{cell_name(key)}: {note}")
        out.specs += new
        out.cells += bool(new)
    return out


def _extend(
    suite: Suite, specs: list[TrialSpec], cell: Cell, mark: AxisMark, limit: int
) -> tuple[list[TrialSpec], str | None]:
    """Every seed of the chosen point with `mark`'s axis one step beyond its edge; or why not."""
    done = extensions_on(mark.name, specs)
    side = f"{mark.name} is at its {mark.state} edge ({format_value(mark.chosen)})"
    if done >= limit:
        return [], f"{side} after {done} extension(s) (search.extend_edges: {limit})"
    value = next_value(mark)
    point = {**cell.chosen, mark.name: value}
    made = []
    for spec in specs:
        if spec.grid != cell.chosen:
            continue
        try:  # the settings' own bounds decide: a negative weight decay is no point to try
            train = TrainSettings.model_validate({**spec.train.model_dump(), mark.name: value})
        except ValidationError:
            return [], f"{side}; not extended: {format_value(value)} is not a valid {mark.name}"
        made.append(spec.model_copy(update={"train": train, "grid": point, "extension": done + 1}))
    return made, None


def extensions_on(axis: str, specs: list[TrialSpec]) -> int:
    """How many points the driver added on `axis`: its values outside the range of the suite's own grid."""
    base = [s.grid[axis] for s in specs if s.extension == 0 and axis in s.grid]
    if not base:
        return 0
    low, high = min(base), max(base)
    return len({s.grid[axis] for s in specs if axis in s.grid and not low <= s.grid[axis] <= high})


def _chosen_cells(planned: list[TrialSpec], trials: pd.DataFrame) -> dict[CellKey, Cell]:
    """The selection's cell per key, among the planned trials only (a results folder may hold trials of an
    older suite); rows in plan order, so a tie always goes to the same point."""
    order = {s.trial_id: i for i, s in enumerate(planned)}
    rows = trials[trials["trial_id"].isin(order)]
    rows = rows.iloc[rows["trial_id"].map(order).to_numpy().argsort(kind="stable")]
    return {(c.model, c.task, c.variant, c.budget): c for c in aggregate(rows)}


def cells_of(specs: Iterable[TrialSpec]) -> dict[CellKey, list[TrialSpec]]:
    cells: dict[CellKey, list[TrialSpec]] = {}
    for spec in specs:
        cells.setdefault((spec.model, spec.task, spec.label, spec.budget), []).append(spec)
    return cells


def cell_name(key: CellKey) -> str:
    model, task, variant, budget = key
    return " / ".join([model, task, variant] + ([] if budget is None else [str(budget)]))


def _points(specs: list[TrialSpec]) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for spec in specs:
        if spec.grid not in points:
            points.append(spec.grid)
    return points


# ---- what `plan` says and how long the driver may go on


def _extendable(specs: list[TrialSpec]) -> list[AxisMark]:
    """The cell's numeric axes of 3+ values in the suite's grid: the ones an edge choice can extend."""
    return [m for m in axis_marks(_points(specs), {}) if m.state not in ("untuned", "categorical")]


def worst_case_extensions(suite: Suite, planned: list[TrialSpec]) -> int:
    """The most trials extensions may add: N per extendable axis, per cell, per seed."""
    total = 0
    for specs in cells_of(planned).values():
        seeds = len({s.seed for s in specs})
        total += len(_extendable(specs)) * suite.search.extend_edges * seeds
    return total


def untuned_axes(planned: list[TrialSpec]) -> list[str]:
    """Numeric grid axes with fewer than 3 values in some cell: too few to call a choice an edge."""
    names: dict[str, None] = {}
    for specs in cells_of(planned).values():
        names.update((m.name, None) for m in axis_marks(_points(specs), {}) if m.state == "untuned")
    return list(names)


def max_rounds(suite: Suite, planned: list[TrialSpec]) -> int:
    """A bound on the driver's rounds: each round extends every continuing cell by at least one point, and a
    cell has at most N per axis; the last round finds nothing."""
    axes = max((len(s.grid) for s in planned), default=0)
    return suite.search.extend_edges * axes + 1
