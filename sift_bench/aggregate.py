"""One aggregation of a trials table for every report: the leaderboard (terminal, markdown, CSV), the
dashboard's plots, and the seed statistics `compare` judges changes by.

From finished trials (status ok, with a primary score), per (model, task, variant, budget): each config
(`config_key`: one grid point, every seed) gets a selection score, the mean over its seeds of the selection
metric; the config with the best mean is chosen, and its dev scores' mean and sample standard deviation over
seeds make one `Cell`, with the same seeds' forgetting (`sift_bench.forgetting`; it plays no part in the
choice). Picking the best grid point per seed instead would mix grid points across seeds and report the
luckiest of each, which is biased upwards.

The selection metric is dev `<primary>` unless the trials held out part of the training set
(`train.heldout_fraction` > 0, a suite's `selection: heldout`): then it is `heldout_<primary>`, so the
reported dev score played no part in the choice. Scores stay in raw units here (0.85, not 85);
`Cell.display` scales percent metrics to points.

Each cell also says whether its choice was tuned (`sift_bench.tuning`: per grid axis interior, at an edge, or
untuned, judged over the configs that finished) and how many points the driver added beyond an edge.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sift_bench.metrics import heldout_metric, metric_info
from sift_bench.schema import metric_column
from sift_bench.spec import Budget, TrialSpec
from sift_bench.tuning import AxisMark, axis_marks, format_value, grid_text, mark_legend, mark_text, marked_grid_text

__all__ = ["Cell", "SeedStats", "aggregate", "format_value", "grid_text", "seed_stats", "tuning_legend"]


@dataclass(frozen=True)
class SeedStats:
    mean: float | None
    std: float | None  # sample std (ddof=1); None below two seeds, where the spread is unknown
    n: int


def seed_stats(values: Iterable[float | None]) -> SeedStats:
    """Mean, sample std and count of the values that were measured (None and NaN are not)."""
    vals = [float(v) for v in values if _measured(v)]
    if not vals:
        return SeedStats(None, None, 0)
    return SeedStats(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals))


@dataclass(frozen=True)
class Cell:
    """One (model, task, variant, budget): the chosen config's dev scores over its seeds."""

    model: str
    task: str
    variant: str  # the suite's label for the method (e.g. sift_qv)
    method: str  # the registered method
    budget: Budget | None
    metric: str  # the task's primary metric (dev: what the cell reports)
    mean: float
    std: float  # 0.0 for a single seed
    n: int
    params: int  # median trainable parameters over the seeds, task head excluded
    memory_bytes: float | None  # mean peak memory (None: not measured)
    train_seconds: float | None
    chosen: dict[str, Any] = field(default_factory=dict)  # the chosen grid point; {} without a grid
    selection: str = "dev"  # what chose it: "dev" or "heldout"
    trial_ids: tuple[str, ...] = ()  # the chosen config's trials, one per seed (for the bootstrap)
    n_configs: int = 1  # configs (grid points) the choice was made among
    heldout_fraction: float = 0.0  # share of the training set held out, with selection "heldout"
    selection_score: float | None = None  # the chosen config's mean selection metric (raw units)
    # The chosen config's forgetting over its seeds (never used to choose), and its measure (None: not measured).
    forgetting: SeedStats = SeedStats(None, None, 0)
    forgetting_measure: str | None = None
    axes: tuple[AxisMark, ...] = ()  # per grid axis: the values tried and the verdict on the choice; () without a grid
    extended: int = 0  # points the driver added beyond an edge (the highest `extension` among the cell's trials)

    def display(self) -> tuple[float, float]:
        """(mean, std) in display units: points for percent metrics."""
        scale = metric_info(self.metric).scale
        return self.mean * scale, self.std * scale

    def text(self) -> str:
        mean, std = self.display()
        return f"{mean:.2f} ± {std:.2f}" if self.n > 1 else f"{mean:.2f}"

    def chosen_text(self) -> str:
        """The chosen grid point in short form, e.g. "lr=1e-3, bs=16"; "" without a grid."""
        return grid_text(self.chosen)

    def chosen_marked(self) -> str:
        """The chosen grid point with its tuning marks: "lr=3e-3 ↑edge", "lr=1e-3 untuned"; "" without a grid."""
        return marked_grid_text(self.chosen, self.axes, self.extended)

    def tuning_text(self) -> str:
        """The tuning marks alone: "lr ↑edge", "lr untuned", "ext 1"; "" when tuned inside or without a grid."""
        return mark_text(self.axes, self.extended)

    @property
    def edge(self) -> bool:
        return any(a.edge for a in self.axes)

    @property
    def untuned(self) -> bool:
        return any(a.state == "untuned" for a in self.axes)


def tuning_legend(cells: Iterable[Cell]) -> str:
    """The line under a table saying what the tuning marks shown on `cells` mean (only those that occur); ""
    when none does."""
    cells = list(cells)
    legend = mark_legend([a for c in cells for a in c.axes], extended=any(c.extended for c in cells))
    return f"Tuning of the grid point chosen: {legend}." if legend else ""


def aggregate(
    trials: pd.DataFrame, *, model: str | None = None, task: str | None = None, budget: Budget | None = None
) -> list[Cell]:
    """The cells of a trials table (as `sift_bench.results.load_run` reads it), in first-seen order.

    Filters: `model`, `task`, and `budget` (knob-less trials have no budget and always stay: they are the
    references every budget is compared with).
    """
    groups: dict[tuple[Any, ...], dict[str, list[dict[str, Any]]]] = {}  # cell key -> config key -> rows
    for row in trials.to_dict("records"):
        metric = row.get("primary_metric")
        score = row.get(metric_column(metric)) if isinstance(metric, str) else None
        if row["status"] != "ok" or not _measured(score):
            continue
        if (model and row["model"] != model) or (task and row["task"] != task):
            continue
        if budget is not None and row["budget"] is not None and row["budget"] != budget:
            continue
        key = (row["model"], row["task"], row["variant"], row["budget"])
        config = row.get("config_key") or row["trial_id"]
        groups.setdefault(key, {}).setdefault(config, []).append(row)
    return [_cell(key, configs) for key, configs in groups.items()]


def _cell(key: tuple[Any, ...], configs: dict[str, list[dict[str, Any]]]) -> Cell:
    """Choose the config with the best mean selection score (ties: the first seen) and describe it."""
    rows = [r for config_rows in configs.values() for r in config_rows]
    metric = rows[0]["primary_metric"]
    fraction = min(_heldout_fraction(r) for r in rows)
    # Held-out selection only when every trial of the cell held out a slice and scored it: a mixed cell
    # would rank configs on different data, so it falls back to dev (the suite's rule is one per run).
    heldout = fraction > 0 and all(_measured(r.get(metric_column(heldout_metric(metric)))) for r in rows)
    select = heldout_metric(metric) if heldout else metric
    info = metric_info(metric)

    best_rows, best_mean = None, None
    for config_rows in configs.values():
        mean = seed_stats(r[metric_column(select)] for r in config_rows).mean
        if mean is not None and (best_mean is None or info.is_better(mean, best_mean)):  # ties keep the first
            best_rows, best_mean = config_rows, mean
    assert best_rows is not None  # every row has a measured dev score, and held-out only when all are measured

    m, t, v, b = key
    chosen = _grid(best_rows[0])
    stats = seed_stats(r[metric_column(metric)] for r in best_rows)
    forgot = [r for r in best_rows if _measured(r.get("forgetting"))]
    return Cell(
        model=m, task=t, variant=v, method=best_rows[0]["method"], budget=b, metric=metric,
        mean=stats.mean, std=stats.std or 0.0, n=stats.n,
        params=int(statistics.median(_count(r.get("trainable_params")) for r in best_rows)),
        memory_bytes=_positive_mean(r.get("peak_memory_bytes") for r in best_rows),
        train_seconds=_positive_mean(r.get("train_seconds") for r in best_rows),
        chosen=chosen, selection="heldout" if heldout else "dev",
        trial_ids=tuple(r["trial_id"] for r in best_rows), n_configs=len(configs),
        heldout_fraction=fraction if heldout else 0.0, selection_score=best_mean,
        forgetting=seed_stats(r["forgetting"] for r in forgot),
        forgetting_measure=forgot[0].get("forgetting_measure") if forgot else None,
        axes=tuple(axis_marks([_grid(config_rows[0]) for config_rows in configs.values()], chosen)),
        extended=max(_extension(r) for r in rows),
    )  # fmt: skip


def _heldout_fraction(row: dict[str, Any]) -> float:
    """The trial's held-out share; tables from before the setting have no column or null: 0 (dev)."""
    value = row.get("train.heldout_fraction")
    return float(value) if _measured(value) else 0.0


def _grid(row: dict[str, Any]) -> dict[str, Any]:
    """The row's grid point: from its parsed spec, else from the `grid` JSON column ({} when empty)."""
    spec = row.get("spec")
    if isinstance(spec, TrialSpec):
        return dict(spec.grid)
    text = row.get("grid")
    return dict(json.loads(text)) if isinstance(text, str) and text.strip() else {}


def _extension(row: dict[str, Any]) -> int:
    """The row's extension (0: a point of the suite's grid): from its parsed spec, else the `extension` column;
    tables from before extensions have neither: 0."""
    spec = row.get("spec")
    if isinstance(spec, TrialSpec):
        return spec.extension
    value = row.get("extension")
    return int(value) if _measured(value) else 0


def _measured(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _count(value: Any) -> int:
    return int(value) if _measured(value) else 0


def _positive_mean(values: Iterable[Any]) -> float | None:
    """Mean of the positive values: 0 means "not measured" in a TrialResult."""
    vals = [float(v) for v in values if _measured(v) and v > 0]
    return statistics.fmean(vals) if vals else None
