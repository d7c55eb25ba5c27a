"""The Table-2-style leaderboard: methods x tasks, mean +- std over seeds, an average column, parameters.

Its cells come from `sift_bench.aggregate` (per method and budget, the grid point with the best mean over
seeds), the same cells the dashboard plots; each shows the grid point chosen, and a line under the table
states the selection rule. Knob-less methods (full, classifier_only) have no budget and stay in the table
whatever `--budget` filter is given: they are the references.

With per-example predictions (predictions.parquet), each (model, task, budget) comparison marks its best
cell ★ and each cell a paired bootstrap over dev examples (`sift_bench.significance`) cannot tell from it ≈.
Knob-less methods take part in every budget's comparison.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from sift_bench.aggregate import Cell, aggregate
from sift_bench.defaults import CONFIDENCE, N_RESAMPLES
from sift_bench.errors import SiftBenchError
from sift_bench.metrics import metric_info
from sift_bench.results import atomic_write_text, load_run, read_predictions
from sift_bench.significance import bootstrap_metric, paired_bootstrap, prediction_sets
from sift_bench.spec import Budget

BEST, SAME = "★", "≈"
_MAX_NOTES = 5

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


CellKey = tuple[str, str, str, Budget | None]  # (model, task, variant, budget)


def cell_key(cell: Cell) -> CellKey:
    return (cell.model, cell.task, cell.variant, cell.budget)


@dataclass
class Leaderboard:
    tasks: list[str]
    metrics: dict[str, str]  # task -> primary metric shown
    rows: list[Row]
    models: list[str]
    rules: list[str] = field(default_factory=list)  # the selection rule(s), one line each
    marks: dict[CellKey, str] = field(default_factory=dict)  # significance marks ("★", "≈", "★0.8% ≈2%")
    legend: str = ""  # what the marks mean, or why there are none
    notes: list[str] = field(default_factory=list)  # comparisons the bootstrap could not make, and why

    def header(self) -> list[str]:
        head = ["model"] if len(self.models) > 1 else []
        return [*head, "method", "budget", "params", *[f"{t} ({self.metrics[t]})" for t in self.tasks], "avg"]

    def cell_text(self, cell: Cell) -> str:
        """Score, significance mark and chosen grid point: "85.00 ± 7.07 ★ (lr=1e-3)"."""
        mark = self.marks.get(cell_key(cell), "")
        chosen = cell.chosen_text()
        return cell.text() + (f" {mark}" if mark else "") + (f" ({chosen})" if chosen else "")

    def cells(self, row: Row) -> list[str]:
        avg, complete = row.average(self.tasks)
        head = [row.model] if len(self.models) > 1 else []
        return [
            *head,
            row.method,
            Budget.text(row.budget),
            format_params(row.trainable_params),
            *[self.cell_text(row.cells[t]) if t in row.cells else "-" for t in self.tasks],
            "-" if avg is None else f"{avg:.2f}" + ("" if complete else "*"),
        ]

    def footer(self) -> list[str]:
        """The lines under the table: what a cell shows, the selection rule, the significance legend and the
        first notes (a run older than predictions.parquet can have one per cell)."""
        more = len(self.notes) - _MAX_NOTES
        gridded = any(c.chosen for row in self.rows for c in row.cells.values())
        partial = any(not row.average(self.tasks)[1] for row in self.rows)
        return [
            "Mean ± std over seeds of dev"
            + ("; (…) = the grid point chosen" if gridded else "")
            + ("; * = average over the tasks present" if partial else "")
            + ".",
            *self.rules,
            self.legend,
            *self.notes[:_MAX_NOTES],
            *([f"... and {more} more comparisons not made."] if more > 0 else []),
        ]

    def to_rich(self, title: str = "Leaderboard") -> Table:
        table = Table(title=title, caption="\n".join(self.footer()), caption_justify="left")
        for i, h in enumerate(self.header()):
            table.add_column(h, justify="left" if i < 2 + (len(self.models) > 1) else "right")
        for row in self.rows:
            table.add_row(*self.cells(row))
        return table

    def to_markdown(self) -> str:
        head = self.header()
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(self.cells(r)) + " |" for r in self.rows]
        return "\n".join(lines) + "\n\n" + "\n\n".join(self.footer()) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        cols = ["model", "method", "base_method", "budget", "trainable_params"]
        for t in self.tasks:
            cols += [f"{t}.{c}" for c in ("metric", "mean", "std", "n", "chosen", "selection", "mark")]
        w.writerow([*cols, "avg"])
        for r in self.rows:
            out: list[Any] = [r.model, r.method, r.base_method, Budget.text(r.budget, ""), r.trainable_params]
            for t in self.tasks:
                c = r.cells.get(t)
                if c is None:
                    out += [self.metrics[t], "", "", 0, "", "", ""]
                else:
                    out += [self.metrics[t], *c.display(), c.n, c.chosen_text(), c.selection,
                            self.marks.get(cell_key(c), "")]  # fmt: skip
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
    predictions: list[dict[str, Any]] | None = None,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Leaderboard:
    """The leaderboard of a trials table (`sift_bench.results.load_run(...).trials`); with the rows of the
    run's predictions.parquet (`sift_bench.results.read_predictions`), also its significance marks."""
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
    board = Leaderboard(tasks, metrics, sorted(rows.values(), key=order), models, rules=selection_rules(cells))
    if predictions:
        board.marks, board.notes = significance_marks(
            cells, predictions, n_resamples=n_resamples, confidence=confidence
        )
        board.legend = (
            f"{BEST} best per task and budget (knob-less methods compete at every budget; on their rows a mark "
            f"followed by a budget is that budget's); {SAME} not distinguishable from it: the {confidence:.0%} "
            f"interval of the difference, a paired bootstrap over dev examples pooled over seeds "
            f"({n_resamples} resamples), contains 0."
        )
    else:
        board.legend = "No predictions: no significance marks."
    return board


def selection_rules(cells: list[Cell]) -> list[str]:
    """One line per selection rule the cells used (a suite uses one; a merged table may hold more)."""
    groups: dict[tuple[str, float], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.selection, c.heldout_fraction), []).append(c)
    lines = []
    for (selection, fraction), group in groups.items():
        ns = sorted({c.n for c in group})
        seeds = f"{ns[0]} seed{'s' if ns[0] != 1 else ''}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]} seeds"
        names = sorted({c.metric for c in group})
        metric = names[0] if len(names) == 1 else "primary metric"
        if selection == "heldout":
            of = f"{metric} on a held-out {fraction * 100:g}% of the training set"
            tail = "each trial's best epoch picked there too; dev reported, not used to select"
        else:
            of = f"dev {metric}"
            tail = "each trial at its best dev epoch; dev is also reported, so these scores are optimistic"
        if any(c.n_configs > 1 for c in group):
            rule = f"for each method and budget, the grid point with the best mean over {seeds} of {of} ({tail})"
        else:
            rule = f"one configuration per method and budget (no grid), mean over {seeds} ({tail})"
        scope = f" [{len(group)} of {len(cells)} cells]" if len(groups) > 1 else ""
        lines.append(f"Selection{scope}: {rule}.")
    return lines


def significance_marks(
    cells: list[Cell],
    predictions: Iterable[Mapping[str, Any]],
    *,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> tuple[dict[CellKey, str], list[str]]:
    """Per (model, task, budget): the best cell gets ★, and each cell the paired bootstrap against it cannot
    tell apart gets ≈. Knob-less cells join every budget's comparison. Returns the marks and a note per
    comparison that could not be made (missing predictions, a metric predictions cannot give)."""
    wanted = {tid for c in cells for tid in c.trial_ids}
    sets = prediction_sets(r for r in predictions if r["trial_id"] in wanted)
    notes: list[str] = []
    per_group: dict[CellKey, dict[Budget | None, str]] = {}  # cell -> budget compared at -> mark
    n_budgets: dict[tuple[str, str], int] = {}
    tested: dict[tuple[CellKey, CellKey], bool] = {}  # (best, other) -> distinguishable, shared across budgets

    by_task: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        by_task.setdefault((c.model, c.task), []).append(c)
    for (model, task), group in by_task.items():
        metric = group[0].metric
        if bootstrap_metric(task, metric) is None:
            notes.append(f"{task}: {metric} cannot be computed from predictions; no marks.")
            continue
        budgets = list(dict.fromkeys(c.budget for c in group if c.budget is not None)) or [None]
        n_budgets[(model, task)] = len(budgets)
        info = metric_info(metric)
        for budget in budgets:
            members = [c for c in group if c.budget in (budget, None)]
            best = max(members, key=lambda c: info.signed(c.mean))  # max keeps the first of equal means
            where = f"{task}" + (f" at {budget}" if budget is not None else "")
            if not all(t in sets for t in best.trial_ids):
                notes.append(f"{where}: the best cell ({best.variant}) has no predictions; no marks.")
                continue
            per_group.setdefault(cell_key(best), {})[budget] = BEST
            for c in members:
                if c is best:
                    continue
                if not all(t in sets for t in c.trial_ids):
                    notes.append(f"{where}: {c.variant} has no predictions; not compared.")
                    continue
                pair = (cell_key(best), cell_key(c))
                if pair not in tested:
                    try:
                        tested[pair] = paired_bootstrap(
                            task, metric, [sets[t] for t in best.trial_ids], [sets[t] for t in c.trial_ids],
                            n_resamples=n_resamples, confidence=confidence,
                        ).distinguishable  # fmt: skip
                    except SiftBenchError as e:
                        notes.append(f"{where}: {c.variant} vs {best.variant} not compared: {e}")
                        tested[pair] = True  # not compared: claim no "indistinguishable"
                if not tested[pair]:
                    per_group.setdefault(cell_key(c), {})[budget] = SAME
    # A budgeted cell is in one comparison, a knob-less one in each of its task's budgets.
    marks = {k: _mark_text(g, 1 if k[3] is not None else n_budgets[k[:2]]) for k, g in per_group.items()}
    return marks, list(dict.fromkeys(notes))


def _mark_text(groups: dict[Budget | None, str], n_budgets: int) -> str:
    """A cell's marks: one symbol when it has the same one in each of its `n_budgets` comparisons, else (a
    knob-less cell) one per budget it is marked at: "★0.8% ≈2%"."""
    symbols = set(groups.values())
    if len(symbols) == 1 and len(groups) == n_budgets:
        return symbols.pop()
    return " ".join(f"{sym}{Budget.text(b, '')}" for b, sym in groups.items())


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
    """Build from `results_dir/trials.parquet` (and its predictions.parquet, when there is one, for the
    significance marks); write leaderboard.md and leaderboard.csv (to `out_dir`)."""
    run = load_run(results_dir)
    board = build(run.trials, budget=budget, model=model, task=task, predictions=read_predictions(run.path))
    out = Path(out_dir or run.path)
    md = atomic_write_text(out / "leaderboard.md", board.to_markdown())
    return board, md, atomic_write_text(out / "leaderboard.csv", board.to_csv())
