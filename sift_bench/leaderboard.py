"""The Table-2-style leaderboard: methods x tasks, mean +- std over seeds, an average column, parameters.

From `trials.parquet` rows with status ok: first the best hyper-parameter grid point per (model, task,
method, budget, seed) by the task's primary metric on dev (as the paper reports), then mean and sample
std over seeds per (model, method, budget, task). Knob-less methods (full, classifier_only) have no
budget and stay in the table whatever `--budget` filter is given: they are the references.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from sift_bench.errors import SiftBenchError
from sift_bench.metrics import metric_info
from sift_bench.results import read_trials

# Rows in the paper's order: the references first, then the PEFT baselines, then SIFT.
_METHOD_ORDER = ["full", "classifier_only", "adapter", "lora", "random", "sift"]


@dataclass
class Cell:
    mean: float
    std: float
    n: int
    metric: str
    percent: bool

    def scaled(self) -> tuple[float, float]:
        k = 100.0 if self.percent else 1.0
        return self.mean * k, self.std * k

    def text(self) -> str:
        mean, std = self.scaled()
        return f"{mean:.2f} ± {std:.2f}" if self.n > 1 else f"{mean:.2f}"


@dataclass
class Row:
    model: str
    method: str  # the variant label
    base_method: str
    budget: str | None
    trainable_params: int
    cells: dict[str, Cell] = field(default_factory=dict)

    def average(self, tasks: list[str]) -> tuple[float | None, bool]:
        """Mean of the per-task means (display scale); the flag says every task is present."""
        values = [self.cells[t].scaled()[0] for t in tasks if t in self.cells]
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
            row.budget or "-",
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
            out: list[Any] = [r.model, r.method, r.base_method, r.budget or "", r.trainable_params]
            for t in self.tasks:
                c = r.cells.get(t)
                out += [self.metrics[t], *(c.scaled() if c else ("", "")), c.n if c else 0]
            avg, _ = r.average(self.tasks)
            w.writerow([*out, "" if avg is None else avg])
        return buf.getvalue()


def format_params(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}K"
    return str(n)


def _budget_key(budget: str | None) -> tuple[int, float]:
    if budget is None:
        return (0, 0.0)
    if budget.endswith("%"):
        return (1, float(budget[:-1]))
    return (2, float(budget))


def normalize_budget(budget: str | None) -> str | None:
    """'0.80%' and '0.8%' are the same budget; counts stay as written."""
    if budget is None:
        return None
    b = budget.strip()
    return f"{float(b[:-1]):g}%" if b.endswith("%") else str(int(float(b)))


def build(
    rows: list[dict[str, Any]],
    *,
    budget: str | None = None,
    model: str | None = None,
    task: str | None = None,
) -> Leaderboard:
    ok = [r for r in rows if r["status"] == "ok" and r.get("primary_value") is not None]
    if model:
        ok = [r for r in ok if r["model"] == model]
    if task:
        ok = [r for r in ok if r["task"] == task]
    if budget:
        want = normalize_budget(budget)
        ok = [r for r in ok if r["budget"] is None or normalize_budget(r["budget"]) == want]
    if not ok:
        raise SiftBenchError(
            "No finished (status ok) trials match"
            + (f" model={model}" if model else "")
            + (f" task={task}" if task else "")
            + (f" budget={budget}" if budget else "")
            + "; check the filters or run the suite first."
        )

    # 1) Best grid point on dev per (model, task, variant, budget, seed).
    best: dict[tuple, dict[str, Any]] = {}
    for r in ok:
        key = (r["model"], r["task"], r["variant"], r["budget"], r["seed"])
        higher = metric_info(r["primary_metric"]).higher_is_better
        cur = best.get(key)
        if cur is None or (
            r["primary_value"] > cur["primary_value"] if higher else r["primary_value"] < cur["primary_value"]
        ):
            best[key] = r

    # 2) Mean / std over seeds per (model, variant, budget, task).
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for (m, t, v, b, _seed), r in best.items():
        groups[(m, v, b, t)].append(r)
    table_rows: dict[tuple, Row] = {}
    metrics: dict[str, str] = {}
    for (m, v, b, t), rs in groups.items():
        row = table_rows.setdefault(
            (m, v, b), Row(m, v, rs[0]["method"], b, int(statistics.median(r["trainable_params"] for r in rs)))
        )
        values = [float(r["primary_value"]) for r in rs]
        metric = rs[0]["primary_metric"]
        metrics.setdefault(t, metric)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        row.cells[t] = Cell(statistics.fmean(values), std, len(values), metric, metric_info(metric).percent)

    def order(row: Row) -> tuple:
        rank = _METHOD_ORDER.index(row.base_method) if row.base_method in _METHOD_ORDER else len(_METHOD_ORDER)
        return (row.model, rank, row.method, _budget_key(row.budget))

    tasks = sorted({t for (_m, _v, _b, t) in groups}, key=lambda t: (_TASK_ORDER.get(t, 99), t))
    models = sorted({r.model for r in table_rows.values()})
    return Leaderboard(tasks, metrics, sorted(table_rows.values(), key=order), models)


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
    board = build(read_trials(results_dir), budget=budget, model=model, task=task)
    out = Path(out_dir or results_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path = out / "leaderboard.md", out / "leaderboard.csv"
    md.write_text(board.to_markdown())
    csv_path.write_text(board.to_csv())
    return board, md, csv_path
