"""The cells `sift_bench.compare` judges: one run's trials grouped by leaderboard cell (model, task, variant,
budget) with the config `aggregate` chose, the two runs' cells paired (a renamed variant included), and the
grid points and settings in which two chosen configs differ."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sift_bench.aggregate import Cell, aggregate
from sift_bench.spec import Budget, TrialSpec

CellKey = tuple[str, str, str, Budget | None]  # model, task, variant, budget: a leaderboard cell


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@dataclass(frozen=True)
class Side:
    """One run's trials of one cell, and the config `aggregate` chose among them."""

    rows: pd.DataFrame  # every trial of the cell, failed ones included
    cell: Cell | None  # None: no trial finished with a score

    @property
    def ok(self) -> pd.DataFrame:
        return self.rows[self.rows["status"] == "ok"]

    @property
    def chosen(self) -> pd.DataFrame:
        """The chosen config's finished trials (without a choice: the first config's)."""
        ok = self.ok
        if self.cell is not None:
            return ok[ok["trial_id"].isin(self.cell.trial_ids)]
        return ok[ok["config_key"] == ok["config_key"].iloc[0]] if len(ok) else ok

    @property
    def spec(self) -> TrialSpec:
        rows = self.chosen if len(self.chosen) else self.rows
        return rows["spec"].iloc[0]


def sides(trials: pd.DataFrame) -> dict[CellKey, Side]:
    """A run's cells in first-seen order."""
    chosen = {(c.model, c.task, c.variant, c.budget): c for c in aggregate(trials)}
    keys = list(zip(trials["model"], trials["task"], trials["variant"], trials["budget"], strict=True))
    return {key: Side(trials[[k == key for k in keys]], chosen.get(key)) for key in dict.fromkeys(keys)}


def pair_sides(base: dict[CellKey, Side], new: dict[CellKey, Side]) -> list[tuple[Side | None, Side | None, str]]:
    """(base, new, note) per cell: same key, else a renamed variant (same model, task, budget and a config
    in common), else one side only."""
    pairs: list[tuple[Side | None, Side | None, str]] = [(base[k], new[k], "") for k in base if k in new]
    new_only = [k for k in new if k not in base]
    for bk in (k for k in base if k not in new):
        configs = set(base[bk].rows["config_key"])
        nk = next((k for k in new_only if _same_slot(k, bk) and configs & set(new[k].rows["config_key"])), None)
        if nk is None:
            pairs.append((base[bk], None, ""))
        else:
            new_only.remove(nk)
            pairs.append((base[bk], new[nk], f"variant renamed: {bk[2]} -> {nk[2]}"))
    return pairs + [(None, new[k], "") for k in new_only]


def _same_slot(a: CellKey, b: CellKey) -> bool:
    return a[0] == b[0] and a[1] == b[1] and a[3] == b[3]


def grid_point(spec: TrialSpec) -> str:
    return json.dumps(spec.grid, sort_keys=True, default=str)


def by_grid_point(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    points = [grid_point(s) for s in rows["spec"]]
    return {p: rows[[q == p for q in points]] for p in dict.fromkeys(points)}


def outside_grid(base: TrialSpec, new: TrialSpec) -> list[str]:
    """Settings in which the two chosen configs differ, apart from either side's grid keys: 'a.b x -> y'."""
    grid_keys = {f"train.{k}" for k in (*base.grid, *new.grid)}
    ident = [{k: v for k, v in _flatten(s.config_identity()).items() if k not in grid_keys} for s in (base, new)]
    full = [_flatten(s.model_dump(mode="json")) for s in (base, new)]  # values also for fields at their default
    fields = sorted(set(ident[0]) | set(ident[1]))
    return [f"{f} {full[0].get(f)} -> {full[1].get(f)}" for f in fields if ident[0].get(f) != ident[1].get(f)]
