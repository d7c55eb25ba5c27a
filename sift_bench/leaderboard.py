"""The Table-2-style leaderboard: methods x tasks, mean +- std over seeds, an average column, parameters.

Its cells come from `sift_bench.aggregate` (best grid point per seed, then mean and sample std over
seeds), the same cells the dashboard plots. Knob-less methods (full, classifier_only) have no budget and
stay in the table whatever `--budget` filter is given: they are the references.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from sift_bench.aggregate import Cell, aggregate
from sift_bench.errors import SiftBenchError
from sift_bench.results import atomic_write_text, load_run
from sift_bench.spec import Budget

# Rows in the paper's order: the references first, then the PEFT baselines, then SIFT.
_METHOD_ORDER = ["full", "classifier_only", "adapter", "lora", "random", "sift"]


@dataclass
class Row:
    model: str
    method: str  # the variant label
    base_method: str
    budget: Budget | None
    trainable_params: int
    cells: dict[str, Cell] = field(default_factory=dict)

    def average(self, tasks: list[str]) -> tuple[float | None, bool]:
        """Mean of the per-task means (display scale); the flag says every task is present."""
        values = [self.cells[t].display()[0] for t in tasks if t in self.cells]
        if not values:
            return None, False
        return sum(values) / len(values), len(values) == len(tasks)


@dataclass
class Leaderboard:
    tasks: list[str]
    metrics: dict[str, str]  # task -> primary metric shown
    rows: list[Row]
    models: list[str]

    def header(self) -> list[str]:
        head = ["model"] if len(self.models) > 1 else []
        return [*head, "method", "budget", "params", *[f"{t} ({self.metrics[t]})" for t in self.tasks], "avg"]

    def cells(self, row: Row) -> list[str]:
        avg, complete = row.average(self.tasks)
        head = [row.model] if len(self.models) > 1 else []
        return [
            *head,
            row.method,
            Budget.text(row.budget),
            format_params(row.trainable_params),
            *[row.cells[t].text() if t in row.cells else "-" for t in self.tasks],
            "-" if avg is None else f"{avg:.2f}" + ("" if complete else "*"),
        ]

    def to_rich(self, title: str = "Leaderboard") -> Table:
        table = Table(title=title, caption="mean ± std over seeds; * = average over the tasks present")
        for i, h in enumerate(self.header()):
            table.add_column(h, justify="left" if i < 2 + (len(self.models) > 1) else "right")
        for row in self.rows:
            table.add_row(*self.cells(row))
        return table

    def to_markdown(self) -> str:
        head = self.header()
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(self.cells(r)) + " |" for r in self.rows]
        note = (
            "\nMean ± std over seeds (best dev epoch; best grid point per seed); * = average over the tasks present.\n"
        )
        return "\n".join(lines) + "\n" + note

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        cols = ["model", "method", "base_method", "budget", "trainable_params"]
        for t in self.tasks:
            cols += [f"{t}.metric", f"{t}.mean", f"{t}.std", f"{t}.n"]
        w.writerow([*cols, "avg"])
        for r in self.rows:
            out: list[Any] = [r.model, r.method, r.base_method, Budget.text(r.budget, ""), r.trainable_params]
            for t in self.tasks:
                c = r.cells.get(t)
                out += [self.metrics[t], *(c.display() if c else ("", "")), c.n if c else 0]
            avg, _ = r.average(self.tasks)
            w.writerow([*out, "" if avg is None else avg])
        return buf.getvalue()


def format_params(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}K"
    return str(n)


def build(
    trials: pd.DataFrame,
    *,
    budget: str | Budget | None = None,
    model: str | None = None,
    task: str | None = None,
) -> Leaderboard:
    """The leaderboard of a trials table (`sift_bench.results.load_run(...).trials`)."""
    want = None if budget is None else Budget.parse(budget, source="--budget")
    cells = aggregate(trials, model=model, task=task, budget=want)
    if not cells:
        raise SiftBenchError(
            "No finished (status ok) trials match"
            + (f" model={model}" if model else "")
            + (f" task={task}" if task else "")
            + (f" budget={want}" if want is not None else "")
            + "; check the filters or run the suite first."
        )
    rows: dict[tuple[str, str, Budget | None], Row] = {}
    metrics: dict[str, str] = {}
    for c in cells:
        row = rows.setdefault((c.model, c.variant, c.budget), Row(c.model, c.variant, c.method, c.budget, c.params))
        row.cells[c.task] = c
        metrics.setdefault(c.task, c.metric)

    def order(row: Row) -> tuple[Any, ...]:
        rank = _METHOD_ORDER.index(row.base_method) if row.base_method in _METHOD_ORDER else len(_METHOD_ORDER)
        return (row.model, rank, row.method, Budget.order(row.budget))

    tasks = sorted(metrics, key=lambda t: (_TASK_ORDER.get(t, 99), t))
    models = sorted({r.model for r in rows.values()})
    return Leaderboard(tasks, metrics, sorted(rows.values(), key=order), models)


# Columns in the paper's Table 2 order.
_TASK_ORDER = {t: i for i, t in enumerate(["mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb"])}


def write_leaderboard(
    results_dir: str | Path,
    *,
    budget: str | None = None,
    model: str | None = None,
    task: str | None = None,
    out_dir: str | Path | None = None,
) -> tuple[Leaderboard, Path, Path]:
    """Build from `results_dir/trials.parquet`; write leaderboard.md and leaderboard.csv (to `out_dir`)."""
    board = build(load_run(results_dir).trials, budget=budget, model=model, task=task)
    out = Path(out_dir or results_dir)
    md = atomic_write_text(out / "leaderboard.md", board.to_markdown())
    return board, md, atomic_write_text(out / "leaderboard.csv", board.to_csv())
