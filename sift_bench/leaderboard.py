"""The Table-2-style leaderboard: methods x tasks, mean +- std over seeds, an average column, parameters.

Its cells come from `sift_bench.aggregate` (per method and budget, the grid point with the best mean over
seeds), the same cells the dashboard plots; each shows the grid point chosen with its tuning marks
(`sift_bench.tuning`: "↑edge", "untuned", "ext 1"; explained under the table when they occur), and a line
under the table states the selection rule. Knob-less methods (full, classifier_only) have no budget and stay
in the table whatever `--budget` filter is given: they are the references.

With per-example predictions (predictions.parquet), each (model, task, budget) comparison marks its best
cell ★ and each cell a paired bootstrap over dev examples (`sift_bench.significance`) cannot tell from it ≈.
Knob-less methods take part in every budget's comparison (`sift_bench.leaderboard_marks`).

When some trial measured forgetting (`sift_bench.forgetting`), a forgetting column per task follows the
average: mean ± std over the chosen grid point's seeds (the score chose it; forgetting never does), in the
measure's units, "-" where not measured, marked like the scores (lowest ★) by a paired bootstrap over the
forgetting sample's items (`sift_bench.forgetting_bootstrap`). A table without forgetting is unchanged.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from sift_bench.aggregate import Cell, aggregate, tuning_legend
from sift_bench.defaults import CONFIDENCE, N_RESAMPLES
from sift_bench.errors import SiftBenchError
from sift_bench.forgetting_bootstrap import UNITS, stats_text, units
from sift_bench.leaderboard_marks import BEST, SAME, CellKey, cell_key, forgetting_marks, significance_marks
from sift_bench.results import atomic_write_text, load_run, read_forgetting, read_predictions
from sift_bench.spec import Budget

__all__ = ["BEST", "SAME", "Leaderboard", "Row", "build", "cell_key", "selection_rules", "write_leaderboard"]

_MAX_NOTES = 5
_FORGETTING_CSV = ("measure", "mean", "std", "n", "mark")
# What each forgetting measure is, for the line under the table.
_MEASURE_TEXT = {
    "sts_zero_shot": "sts_zero_shot = the drop of zero-shot STS-B Spearman x 100",
    "mlm_loss": "mlm_loss = the rise of the pre-trained masked-LM head's loss on general text",
    "lm_loss": "lm_loss = the rise of the next-token loss on general text",
}

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
    rules: list[str] = field(default_factory=list)  # the selection rule(s), one line each
    marks: dict[CellKey, str] = field(default_factory=dict)  # significance marks ("★", "≈", "★0.8% ≈2%")
    legend: str = ""  # what the marks mean, or why there are none
    notes: list[str] = field(default_factory=list)  # comparisons the bootstrap could not make, and why
    forgetting_marks: dict[CellKey, str] = field(default_factory=dict)  # marks on the forgetting columns
    forgetting_legend: str = ""

    @property
    def forgetting_tasks(self) -> list[str]:
        """Tasks with a forgetting column: some cell measured it (none: the table is as before forgetting)."""
        return [t for t in self.tasks if any(t in r.cells and r.cells[t].forgetting.n for r in self.rows)]

    def _measures(self, task: str | None = None) -> list[str]:
        cells = [c for r in self.rows for t, c in r.cells.items() if task in (None, t) and c.forgetting_measure]
        return sorted({c.forgetting_measure for c in cells if c.forgetting_measure})

    def header(self) -> list[str]:
        head = ["model"] if len(self.models) > 1 else []
        forgot = []
        for t in self.forgetting_tasks:
            measures = self._measures(t)
            forgot.append(f"{t} forgetting" + (f" ({units(measures[0])})" if len(measures) == 1 else ""))
        return [*head, "method", "budget", "params", *[f"{t} ({self.metrics[t]})" for t in self.tasks], "avg",
                *forgot]  # fmt: skip

    def forgetting_text(self, cell: Cell | None) -> str:
        """Forgetting over the seeds with its mark: "1.25 ± 0.31 ★"; "-" where not measured."""
        f = cell.forgetting if cell is not None else None
        if cell is None or f is None or f.mean is None:
            return "-"
        mark = self.forgetting_marks.get(cell_key(cell), "")
        return stats_text(f.mean, f.std, f.n, cell.forgetting_measure) + (f" {mark}" if mark else "")

    def cell_text(self, cell: Cell) -> str:
        """Score, significance mark and chosen grid point with its tuning marks: "85.00 ± 7.07 ★ (lr=1e-3 ↑edge)"."""
        mark = self.marks.get(cell_key(cell), "")
        chosen = cell.chosen_marked()
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
            *[self.forgetting_text(row.cells.get(t)) for t in self.forgetting_tasks],
        ]

    def forgetting_footer(self) -> list[str]:
        """What the forgetting columns show (nothing when there are none)."""
        if not self.forgetting_tasks:
            return []
        measures = self._measures()
        which = "; ".join(f"{_MEASURE_TEXT.get(m, m)} ({UNITS.get(m, '?')})" for m in measures)
        per_model = ""
        if len(measures) > 1:
            by_model = {c.model: c.forgetting_measure for r in self.rows for c in r.cells.values()}
            named = [f"{m} {x}" for m, x in sorted(by_model.items()) if x]
            per_model = " Measure per model: " + ", ".join(named) + "."
        return [
            "Forgetting: the pre-trained ability the chosen grid point lost in fine-tuning, mean ± std over the "
            f"same seeds (not used to choose it); positive = forgot, - = not measured. {which}.{per_model}",
            self.forgetting_legend,
        ]

    def footer(self) -> list[str]:
        """The lines under the table: what a cell shows, the selection rule, the significance legend and the
        first notes (a run older than predictions.parquet can have one per cell)."""
        more = len(self.notes) - _MAX_NOTES
        gridded = any(c.chosen for row in self.rows for c in row.cells.values())
        partial = any(not row.average(self.tasks)[1] for row in self.rows)
        tuning = tuning_legend(c for row in self.rows for c in row.cells.values())
        return [
            "Mean ± std over seeds of dev"
            + ("; (…) = the grid point chosen" if gridded else "")
            + ("; * = average over the tasks present" if partial else "")
            + ".",
            *([tuning] if tuning else []),
            *self.rules,
            self.legend,
            *self.forgetting_footer(),
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
        forgot = self.forgetting_tasks  # after avg, so the columns before it stay where they were
        # The tuning marks last, for the same reason: "lr ↑edge", "lr untuned", "ext 1"; "" when tuned inside.
        w.writerow([*cols, "avg", *[f"{t}.forgetting_{c}" for t in forgot for c in _FORGETTING_CSV],
                    *[f"{t}.tuning" for t in self.tasks]])  # fmt: skip
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
            out.append("" if avg is None else avg)
            for t in forgot:
                c = r.cells.get(t)
                f = c.forgetting if c is not None else None
                if c is None or f is None or f.mean is None:
                    out += ["", "", "", 0, ""]
                else:
                    out += [c.forgetting_measure, f.mean, "" if f.std is None else f.std, f.n,
                            self.forgetting_marks.get(cell_key(c), "")]  # fmt: skip
            out += [r.cells[t].tuning_text() if t in r.cells else "" for t in self.tasks]
            w.writerow(out)
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
    forgetting: list[dict[str, Any]] | None = None,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Leaderboard:
    """The leaderboard of a trials table (`sift_bench.results.load_run(...).trials`); with the rows of the
    run's predictions.parquet (`sift_bench.results.read_predictions`), also its significance marks, and with
    those of its forgetting.parquet (`read_forgetting`) the marks on the forgetting columns."""
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
    if board.forgetting_tasks and forgetting:
        board.forgetting_marks, notes = forgetting_marks(cells, forgetting, n_resamples=n_resamples,
                                                         confidence=confidence)  # fmt: skip
        board.notes += notes
        board.forgetting_legend = (
            f"On forgetting, {BEST} the lowest per task and budget, {SAME} not distinguishable from it: the "
            f"{confidence:.0%} interval of the difference, a paired bootstrap over the items of the forgetting "
            f"sample pooled over seeds ({n_resamples} resamples), contains 0."
        )
    elif board.forgetting_tasks:
        board.forgetting_legend = "No per-item forgetting (forgetting.parquet): no marks on forgetting."
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
    """Build from `results_dir/trials.parquet` (and its predictions.parquet and forgetting.parquet, when there
    are, for the significance marks); write leaderboard.md and leaderboard.csv (to `out_dir`)."""
    run = load_run(results_dir)
    board = build(run.trials, budget=budget, model=model, task=task, predictions=read_predictions(run.path),
                  forgetting=read_forgetting(run.path))  # fmt: skip
    out = Path(out_dir or run.path)
    md = atomic_write_text(out / "leaderboard.md", board.to_markdown())
    return board, md, atomic_write_text(out / "leaderboard.csv", board.to_csv())
