"""One aggregation of a trials table for every report: the leaderboard (terminal, markdown, CSV), the
dashboard's plots, and the seed statistics `compare` judges changes by.

From finished trials (status ok, with a primary score): first the best hyper-parameter grid point per
(model, task, variant, budget, seed) by the task's primary metric on dev, as the paper reports; then mean
and sample standard deviation over seeds per (model, task, variant, budget): one `Cell`. Scores stay in
raw units here (0.85, not 85); `Cell.display` scales percent metrics to points.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sift_bench.metrics import metric_info
from sift_bench.spec import Budget


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
    """One (model, task, variant, budget) over its seeds, each seed at its best grid point."""

    model: str
    task: str
    variant: str  # the suite's label for the method (e.g. sift_qv)
    method: str  # the registered method
    budget: Budget | None
    metric: str  # the task's primary metric
    mean: float
    std: float  # 0.0 for a single seed
    n: int
    params: int  # median trainable parameters over the seeds, task head excluded
    memory_bytes: float | None  # mean peak memory (None: not measured)
    train_seconds: float | None

    @property
    def scale(self) -> float:
        return 100.0 if metric_info(self.metric).percent else 1.0

    def display(self) -> tuple[float, float]:
        """(mean, std) in display units: points for percent metrics."""
        return self.mean * self.scale, self.std * self.scale

    def text(self) -> str:
        mean, std = self.display()
        return f"{mean:.2f} ± {std:.2f}" if self.n > 1 else f"{mean:.2f}"


def aggregate(
    trials: pd.DataFrame, *, model: str | None = None, task: str | None = None, budget: Budget | None = None
) -> list[Cell]:
    """The cells of a trials table (as `sift_bench.results.load_run` reads it), in first-seen order.

    Filters: `model`, `task`, and `budget` (knob-less trials have no budget and always stay: they are the
    references every budget is compared with).
    """
    best: dict[tuple[Any, ...], tuple[float, dict[str, Any]]] = {}
    for row in trials.to_dict("records"):
        metric = row.get("primary_metric")
        score = row.get(f"metric.{metric}") if isinstance(metric, str) else None
        if row["status"] != "ok" or not _measured(score):
            continue
        if (model and row["model"] != model) or (task and row["task"] != task):
            continue
        if budget is not None and row["budget"] is not None and row["budget"] != budget:
            continue
        signed = score if metric_info(metric).higher_is_better else -score  # larger is better either way
        key = (row["model"], row["task"], row["variant"], row["budget"], row["seed"])
        if key not in best or signed > best[key][0]:  # ties keep the first grid point
            best[key] = (signed, row)

    seeds: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for (m, t, v, b, _seed), (_score, row) in best.items():
        seeds.setdefault((m, t, v, b), []).append(row)
    cells = []
    for (m, t, v, b), rows in seeds.items():
        metric = rows[0]["primary_metric"]
        stats = seed_stats(r[f"metric.{metric}"] for r in rows)
        cells.append(
            Cell(
                model=m, task=t, variant=v, method=rows[0]["method"], budget=b, metric=metric,
                mean=stats.mean, std=stats.std or 0.0, n=stats.n,
                params=int(statistics.median(_count(r.get("trainable_params")) for r in rows)),
                memory_bytes=_positive_mean(r.get("peak_memory_bytes") for r in rows),
                train_seconds=_positive_mean(r.get("train_seconds") for r in rows),
            )
        )  # fmt: skip
    return cells


def _measured(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _count(value: Any) -> int:
    return int(value) if _measured(value) else 0


def _positive_mean(values: Iterable[Any]) -> float | None:
    """Mean of the positive values: 0 means "not measured" in a TrialResult."""
    vals = [float(v) for v in values if _measured(v) and v > 0]
    return statistics.fmean(vals) if vals else None
