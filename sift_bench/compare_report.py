"""`sift-bench compare`'s report: its data (one `CellComparison` per leaderboard cell, each metric's
`MetricChange`), and its renderings as a rich table, markdown (for bot comments) and a one-line summary.

The numbers come from `sift_bench.compare`; this module only holds and lays them out.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field
from rich.table import Table

Verdict = Literal["improved", "regressed", "noise", "n/a"]
BandKind = Literal["seed std", "bootstrap"]
Status = Literal["compared", "missing", "new", "newly_failed", "still_failing", "fixed"]


class MetricChange(BaseModel):
    metric: str
    primary: bool
    higher_is_better: bool
    unit: str = Field(description="'pt' (percentage points) for percent metrics, '' for raw units.")
    base_mean: float | None = None
    base_std: float | None = None
    base_n: int = 0
    new_mean: float | None = None
    new_std: float | None = None
    new_n: int = 0
    delta: float | None = Field(None, description="new - base in display units (points for percent metrics).")
    band: float | None = Field(None, description="Noise band the |delta| is judged against.")
    band_kind: BandKind | None = Field(None, description="What the band comes from (see the module docstring).")
    ci_low: float | None = Field(None, description="Bootstrap interval of new - base (display units).")
    ci_high: float | None = None
    n_examples: int | None = Field(None, description="Dev examples the bootstrap resampled.")
    band_note: str | None = Field(None, description="Why the bootstrap was not used although predictions exist.")
    verdict: Verdict = "n/a"


class CellComparison(BaseModel):
    model: str
    task: str
    method: str
    budget: str
    base_method: str = Field(description="The registered method; `method` is the suite's label (variant) for it.")
    chosen: str = Field(
        "", description="The grid point each side chose: 'lr=1e-3', or 'lr=1e-3 -> lr=3e-3' when they differ; "
        "'' without a grid.",
    )  # fmt: skip
    tuning: str = Field(
        "", description="The new side's tuning marks (sift_bench.tuning): 'lr ↑edge', 'lr untuned', 'ext 1'; the "
        "baseline's before them when they differ: 'lr untuned -> tuned'; '' when tuned inside or without a grid.",
    )  # fmt: skip
    base_grid: dict[str, Any] = Field(default_factory=dict)
    new_grid: dict[str, Any] = Field(default_factory=dict)
    base_config_key: str | None = Field(None, description="The baseline's chosen config (None: none finished).")
    new_config_key: str | None = None
    n_configs: int = Field(1, description="Grid points the new side chose among (the baseline's if it has none).")
    selection: str = Field("dev", description="What chose the configs: dev, heldout, or 'dev -> heldout'.")
    status: Status
    base_seeds: list[int] = Field(default_factory=list)
    new_seeds: list[int] = Field(default_factory=list)
    newly_failed_seeds: list[int] = Field(default_factory=list)
    missing_seeds: list[int] = Field(default_factory=list)
    new_error: str | None = None
    metrics: list[MetricChange] = Field(default_factory=list)
    base_train_seconds: float | None = None
    new_train_seconds: float | None = None
    time_ratio: float | None = None
    base_peak_memory_bytes: float | None = None
    new_peak_memory_bytes: float | None = None
    memory_ratio: float | None = None
    flags: list[str] = Field(default_factory=list, description="Why this cell regressed (empty when fine).")
    notes: list[str] = Field(default_factory=list, description="What differs besides scores; never gates.")

    @property
    def regressed(self) -> bool:
        return bool(self.flags)

    @property
    def primary(self) -> MetricChange | None:
        return next((m for m in self.metrics if m.primary), None)

    @property
    def settings(self) -> str:
        """The dashboard's name for `chosen`."""
        return self.chosen


class Comparison(BaseModel):
    baseline: str
    new: str
    suite: str
    tolerance: float
    time_threshold: float
    memory_threshold: float
    cells: list[CellComparison]
    tuning_legend: str = Field("", description="What the tuning marks shown mean ('' when none is shown).")

    @property
    def configs(self) -> list[CellComparison]:
        """The dashboard's name for `cells`."""
        return self.cells

    @property
    def regressed(self) -> bool:
        return any(c.regressed for c in self.cells)

    def counts(self) -> dict[str, int]:
        verdicts = [c.primary.verdict for c in self.cells if c.primary and c.status == "compared"]
        return {
            "cells": len(self.cells),
            "regressed": sum(c.regressed for c in self.cells),
            "improved": verdicts.count("improved"),
            "noise": verdicts.count("noise"),
            "newly_failed": sum(c.status == "newly_failed" or bool(c.newly_failed_seeds) for c in self.cells),
            "missing": sum(c.status == "missing" or bool(c.missing_seeds) for c in self.cells),
            "new": sum(c.status == "new" for c in self.cells),
            "slower": sum(any(f.startswith("slower") for f in c.flags) for c in self.cells),
            "more_memory": sum(any(f.startswith("memory") for f in c.flags) for c in self.cells),
        }

    def to_json(self) -> str:
        data = self.model_dump(mode="json")
        data["regressed"] = self.regressed
        data["counts"] = self.counts()
        for c, cd in zip(self.cells, data["cells"], strict=True):
            cd["regressed"] = c.regressed
        return json.dumps(data, indent=2)


# ----------------------------------------------------------------------------- renderings

_STYLE = {"improved": "green", "regressed": "bold red", "noise": "dim", "n/a": "dim"}


def _fmt(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return "-"
    s = f"{mean:.2f}"
    if std is not None:
        s += f" ± {std:.2f}"
    return f"{s} (n={n})"


def _fmt_delta(m: MetricChange | None) -> str:
    if m is None or m.delta is None:
        return "-"
    return f"{m.delta:+.2f}{m.unit}"


def row_cells(c: CellComparison) -> dict[str, str]:
    """One cell's row as text, by column name (see `columns`); every rendering shows these."""
    p = c.primary
    # Only the other metrics that moved (at display precision): the JSON output has them all.
    others = ", ".join(
        f"{m.metric} {_fmt_delta(m)}" for m in c.metrics if not m.primary and m.delta and abs(m.delta) >= 0.005
    )
    res = []
    if c.time_ratio:
        res.append(f"time x{c.time_ratio:.2f}")
    if c.memory_ratio:
        res.append(f"mem x{c.memory_ratio:.2f}")
    status = c.status if c.status != "compared" else (p.verdict if p else "n/a")
    return {
        "task": c.task, "method": c.method, "budget": c.budget, "model": c.model, "chosen": c.chosen,
        "tuning": c.tuning, "metric": p.metric if p else "-",
        "baseline": _fmt(p.base_mean, p.base_std, p.base_n) if p else "-",
        "new": _fmt(p.new_mean, p.new_std, p.new_n) if p else "-",
        "delta": _fmt_delta(p), "band": f"±{p.band:.2f} {p.band_kind}" if p and p.band is not None else "-",
        "95% CI": f"[{p.ci_low:+.2f}, {p.ci_high:+.2f}]" if p and p.ci_low is not None else "-",
        "verdict": "REGRESSED" if c.regressed else status, "resources": ", ".join(res), "others": others,
        "notes": "; ".join([*c.flags, *c.notes, *([p.band_note] if p and p.band_note else [])]),
    }  # fmt: skip


def columns(cmp: Comparison) -> list[str]:
    """The report's columns: those every cell has, and the optional ones some cell fills."""
    cols = ["task", "method", "budget"]
    if len({c.model for c in cmp.cells}) > 1:
        cols.append("model")
    if any(c.chosen for c in cmp.cells):
        cols.append("chosen")  # each side's grid point: "lr=1e-3", or "lr=1e-3 -> lr=3e-3"
    if any(c.tuning for c in cmp.cells):
        cols.append("tuning")  # "lr ↑edge", "lr untuned -> tuned"
    cols += ["metric", "baseline", "new", "delta", "band"]
    if any(c.primary and c.primary.ci_low is not None for c in cmp.cells):
        cols.append("95% CI")  # new - base, from the bootstrap
    cols += ["verdict", "resources"]
    if any(row_cells(c)["others"] for c in cmp.cells):
        cols.append("others")
    return [*cols, "notes"]


def summary_line(cmp: Comparison) -> str:
    k = cmp.counts()
    head = "REGRESSION" if cmp.regressed else "OK"
    return (
        f"{head}: {k['regressed']} of {k['cells']} cells regressed "
        f"({k['newly_failed']} newly failed, {k['missing']} missing, {k['slower']} slower, "
        f"{k['more_memory']} more memory); {k['improved']} improved, {k['noise']} within noise, "
        f"{k['new']} new."
    )


def row_verdict(c: CellComparison) -> str:
    """The verdict a row is styled by: regressed, improved, noise or n/a."""
    return "regressed" if c.regressed else (c.primary.verdict if c.primary else "n/a")


def to_rich(cmp: Comparison) -> Table:
    cols = columns(cmp)
    table = Table(title=f"{cmp.suite}: {cmp.baseline} -> {cmp.new}", caption=cmp.tuning_legend or None,
                  caption_justify="left")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="right" if col in ("baseline", "new", "delta", "band", "95% CI") else "left")
    for c in cmp.cells:
        cells = row_cells(c)
        style = _STYLE.get(row_verdict(c), "")
        if c.status in ("missing", "newly_failed") or c.regressed:
            style = "bold red"
        elif c.status in ("new", "fixed"):
            style = "cyan"
        cells["resources"] = cells["resources"].replace(", ", "\n")  # one ratio per line in a terminal
        table.add_row(*[cells[col] for col in cols], style=style)
    return table


def to_markdown(cmp: Comparison) -> str:
    cols = columns(cmp)
    lines = [
        f"### {cmp.suite}: `{cmp.baseline}` -> `{cmp.new}`",
        "",
        f"**{summary_line(cmp)}** (tolerance {cmp.tolerance} pt, time x{cmp.time_threshold}, "
        f"memory x{cmp.memory_threshold})",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for c in cmp.cells:
        cells = row_cells(c)
        if c.regressed:
            cells["verdict"] = "**REGRESSED**"
        lines.append("| " + " | ".join(cells[col].replace("|", "\\|") for col in cols) + " |")
    if cmp.tuning_legend:
        lines += ["", cmp.tuning_legend]
    return "\n".join(lines) + "\n"
