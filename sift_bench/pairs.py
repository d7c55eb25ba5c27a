"""Method A against method B at every budget of a run: `sift-bench pairs RESULTS A B`.

For each (model, task, budget) where both labels have a cell (`sift_bench.aggregate`: the grid point with
the best mean over seeds), the paired bootstrap of `sift_bench.significance` over dev examples, pooled
over the chosen configs' seeds, gives A - B and its interval. A knob-less method (full, classifier_only:
no budget) is a reference: it is paired with every budget of the other side, as the leaderboard's marks do.
A row's verdict is "A better" / "B better" when the interval excludes 0, else "indistinguishable". Each
side's chosen grid point carries its tuning marks ("lr=3e-3 ↑edge", `sift_bench.tuning`), as on the leaderboard.

With `metric="forgetting"` (`sift-bench pairs RESULTS A B --metric forgetting`) the statistic is the
difference of forgetting (`sift_bench.forgetting`; lower is better), with the paired bootstrap over the items
of the forgetting sample, pooled over seeds (`sift_bench.forgetting_bootstrap`).

`compare_pairs` is pure (cells and per-item rows in, a PairReport out); `load_pairs` reads a results
folder first. Means and differences are in display units: points for percent metrics; forgetting in its
measure's units (points, or nats/token).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from sift_bench.aggregate import Cell, aggregate, tuning_legend
from sift_bench.defaults import CONFIDENCE, N_RESAMPLES
from sift_bench.errors import SiftBenchError
from sift_bench.evaluators.glue import GLUE_METRICS
from sift_bench.forgetting_bootstrap import METRIC as FORGETTING
from sift_bench.forgetting_bootstrap import UNITS, TrialForgetting, forgetting_bootstrap, value_text
from sift_bench.leaderboard import selection_rules
from sift_bench.metrics import metric_info
from sift_bench.results import load_run, read_forgetting, read_predictions
from sift_bench.significance import BootstrapResult, TrialPredictions, bootstrap_metric, paired_bootstrap
from sift_bench.spec import Budget

NOT_COMPARED = "not compared"
SAME = "indistinguishable"


@dataclass(frozen=True)
class Pair:
    """A's and B's chosen configs on one (model, task, budget), and their bootstrap (None: not compared)."""

    a: Cell
    b: Cell
    budget: Budget | None  # the budget compared at; None only when both sides are knob-less
    metric: str  # what was compared: the task's primary metric, or --metric
    result: BootstrapResult | None = None
    note: str = ""  # why there is no result

    @property
    def a_better(self) -> bool | None:
        """A's mean is better than B's (by the metric's direction); None when not compared or equal."""
        if self.result is None or self.result.diff == 0:
            return None
        return metric_info(self.metric).signed(self.result.diff) > 0

    @property
    def verdict(self) -> str:
        if self.result is None:
            return NOT_COMPARED
        if not self.result.distinguishable or self.a_better is None:
            return SAME
        return f"{self.a.variant if self.a_better else self.b.variant} better"


@dataclass
class PairReport:
    a: str
    b: str
    pairs: list[Pair]
    n_resamples: int = N_RESAMPLES
    confidence: float = CONFIDENCE
    rules: list[str] = field(default_factory=list)  # how the grid points were chosen (the leaderboard's lines)

    @property
    def models(self) -> list[str]:
        return sorted({p.a.model for p in self.pairs})

    def counts(self) -> tuple[int, int, int, int]:
        """(budgets where A's mean was better, budgets compared, A significantly better, B significantly better)."""
        compared = [p for p in self.pairs if p.result is not None]
        wins = sum(1 for p in compared if p.a_better)
        a_sig = sum(1 for p in compared if p.verdict == f"{self.a} better")
        b_sig = sum(1 for p in compared if p.verdict == f"{self.b} better")
        return wins, len(compared), a_sig, b_sig

    def summary_line(self) -> str:
        wins, n, a_sig, b_sig = self.counts()
        line = f"{self.a} beat {self.b} at {wins} of {n} budgets ({a_sig} significantly)"
        if b_sig:
            line += f"; {self.b} was significantly better at {b_sig}"
        return line + "."

    def header(self) -> list[str]:
        head = ["model"] if len(self.models) > 1 else []
        a, b = self.a, self.b
        ci = f"{self.confidence:.0%} CI"
        return [*head, "task", "budget", f"{a} chosen", a, f"{b} chosen", b, f"{a} − {b}", ci, "verdict"]

    def cells(self, pair: Pair) -> list[str]:
        head = [pair.a.model] if len(self.models) > 1 else []
        r = pair.result
        if r is None:  # the cells' own means when they are of the compared metric
            a_mean, b_mean = (_cell_mean(c, pair.metric) for c in (pair.a, pair.b))
            diff = ci = "-"
        elif pair.metric == FORGETTING:
            m = pair.a.forgetting_measure
            a_mean, b_mean = value_text(r.a_mean, m), value_text(r.b_mean, m)
            diff = value_text(r.diff, m, sign=True)
            ci = f"[{value_text(r.low, m, sign=True)}, {value_text(r.high, m, sign=True)}]"
        else:
            s = metric_info(pair.metric).scale
            a_mean, b_mean = f"{r.a_mean * s:.2f}", f"{r.b_mean * s:.2f}"
            diff, ci = f"{r.diff * s:+.2f}", f"[{r.low * s:+.2f}, {r.high * s:+.2f}]"
        task = f"{pair.a.task} ({pair.metric})"
        return [*head, task, Budget.text(pair.budget), _chosen(pair.a), a_mean, _chosen(pair.b), b_mean, diff, ci,
                pair.verdict]  # fmt: skip

    def footer(self) -> list[str]:
        units, items = "points for % metrics", "dev examples"
        if self.pairs and all(p.metric == FORGETTING for p in self.pairs):
            found = sorted({p.a.forgetting_measure for p in self.pairs if p.a.forgetting_measure})
            units = "forgetting, lower is better: " + ", ".join(f"{m} in {UNITS.get(m, '?')}" for m in found)
            items = "items of the forgetting sample"
        tuning = tuning_legend(c for p in self.pairs for c in (p.a, p.b))
        return [
            f"{self.a} − {self.b}: mean over seeds of {self.a}'s chosen config minus {self.b}'s, on the {items} "
            f"both have ({units}); {self.confidence:.0%} interval of a paired bootstrap over {items} pooled "
            f"over seeds ({self.n_resamples} resamples). A knob-less method (full, classifier_only: no budget) is "
            "paired with every budget of the other side.",
            *self.rules,
            *([tuning] if tuning else []),
            *list(dict.fromkeys(p.note for p in self.pairs if p.note)),
            self.summary_line(),
        ]

    def to_rich(self, title: str | None = None) -> Table:
        table = Table(title=title or f"{self.a} vs {self.b}", caption="\n".join(self.footer()), caption_justify="left")
        head = self.header()
        n_left = len(head) - 7
        for i, h in enumerate(head):
            table.add_column(h, justify="left" if i < n_left or h.endswith("chosen") or h == "verdict" else "right")
        for p in self.pairs:
            table.add_row(*self.cells(p), style=_style(p, self.a))
        return table

    def to_markdown(self) -> str:
        head = self.header()
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for p in self.pairs:
            cells = self.cells(p)
            if p.verdict not in (SAME, NOT_COMPARED):
                cells[-1] = f"**{cells[-1]}**"
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n\n" + "\n\n".join(self.footer()) + "\n"


def _chosen(cell: Cell) -> str:
    return cell.chosen_marked() or "-"


def _cell_mean(cell: Cell, metric: str) -> str:
    if metric == FORGETTING:
        mean = cell.forgetting.mean
        return "-" if mean is None else value_text(mean, cell.forgetting_measure)
    return f"{cell.display()[0]:.2f}" if cell.metric == metric else "-"


def _style(pair: Pair, a: str) -> str:
    """Green where A is significantly better, red where B is, dim where nothing was compared."""
    return {SAME: "", NOT_COMPARED: "dim", f"{a} better": "green"}.get(pair.verdict, "red")


# ----------------------------------------------------------------------------- pairing and testing


def pair_cells(cells: list[Cell], a: str, b: str) -> list[tuple[Cell, Cell, Budget | None]]:
    """(A's cell, B's cell, budget) for every (model, task, budget) where both labels have a cell; a
    knob-less cell pairs with every budget of the other side. In first-seen task order, then by budget.
    Raises SiftBenchError for an unknown label, A == B, or labels that never share a task."""
    labels = list(dict.fromkeys(c.variant for c in cells))
    for label in (a, b):
        if label not in labels:
            raise SiftBenchError(
                f"No method labelled '{label}' in this run (labels: {', '.join(labels)}); pass two of those."
            )
    if a == b:
        raise SiftBenchError(f"A and B are both '{a}'; pass two different method labels.")
    out: list[tuple[Cell, Cell, Budget | None]] = []
    tasks = list(dict.fromkeys((c.model, c.task) for c in cells))
    for model, task in tasks:
        mine = [c for c in cells if (c.model, c.task) == (model, task)]
        found = [
            (ca, cb, ca.budget if ca.budget is not None else cb.budget)
            for ca in mine
            if ca.variant == a
            for cb in mine
            if cb.variant == b and (ca.budget is None or cb.budget is None or ca.budget == cb.budget)
        ]
        out += sorted(found, key=lambda t: Budget.order(t[2]))
    if not out:
        raise SiftBenchError(
            f"'{a}' and '{b}' never ran on the same task and budget in this run; check the labels "
            "(`sift-bench leaderboard RESULTS` lists each method's tasks and budgets)."
        )
    return out


def compare_pairs(
    cells: list[Cell],
    predictions: Iterable[Mapping[str, Any]],
    a: str,
    b: str,
    *,
    metric: str | None = None,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    forgetting: Iterable[Mapping[str, Any]] = (),
) -> PairReport:
    """The paired bootstrap of A - B at every budget both labels share (see `pair_cells`), on `metric` or
    each task's primary metric. A pair whose trials lack predictions, or whose metric predictions cannot
    give, is kept with a note and no result. Raises SiftBenchError when `metric` is given and no paired
    task can compute it from predictions. `metric="forgetting"` reads the per-item `forgetting` rows
    (forgetting.parquet) instead of `predictions`."""
    found = pair_cells(cells, a, b)
    if metric == FORGETTING:
        items = TrialForgetting(forgetting)
        pairs = [_forgetting_pair(ca, cb, budget, items, n_resamples, confidence, seed) for ca, cb, budget in found]
        rules = selection_rules([c for p in found for c in p[:2]])
        return PairReport(a, b, pairs, n_resamples=n_resamples, confidence=confidence, rules=rules)
    preds = TrialPredictions(predictions)
    pairs: list[Pair] = []
    for ca, cb, budget in found:
        name = metric or ca.metric
        where = f"{ca.task}" + (f" at {budget}" if budget is not None else "")
        if bootstrap_metric(ca.task, name) is None:
            known = ", ".join(GLUE_METRICS.get(ca.task, ())) or "none: not a GLUE task"
            note = f"{ca.task}: {name} cannot be computed from per-example predictions (known: {known})."
            pairs.append(Pair(ca, cb, budget, name, note=note))
            continue
        a_sets, b_sets = preds.for_trials(ca.task, name, ca.trial_ids), preds.for_trials(cb.task, name, cb.trial_ids)
        if a_sets is None or b_sets is None:
            missing = ca.variant if a_sets is None else cb.variant
            pairs.append(Pair(ca, cb, budget, name, note=f"{where}: {missing}'s trials have no dev predictions."))
            continue
        try:
            result = paired_bootstrap(ca.task, name, a_sets, b_sets, n_resamples=n_resamples, seed=seed,
                                      confidence=confidence)  # fmt: skip
        except SiftBenchError as e:
            pairs.append(Pair(ca, cb, budget, name, note=f"{where}: not compared: {e}"))
            continue
        pairs.append(Pair(ca, cb, budget, name, result=result))
    if metric is not None and all(bootstrap_metric(p.a.task, metric) is None for p in pairs):
        tasks = sorted({p.a.task for p in pairs})
        known = "; ".join(f"{t}: {', '.join(GLUE_METRICS.get(t, ())) or '-'}" for t in tasks)
        raise SiftBenchError(
            f"--metric {metric}: no task of this pair can compute it from per-example predictions; pass one of "
            f"the tasks' metrics ({known}) or leave --metric out for each task's primary metric."
        )
    rules = selection_rules([c for p in found for c in p[:2]])
    return PairReport(a, b, pairs, n_resamples=n_resamples, confidence=confidence, rules=rules)


def _forgetting_pair(
    ca: Cell, cb: Cell, budget: Budget | None, items: TrialForgetting, n_resamples: int, confidence: float, seed: int
) -> Pair:
    """A - B of forgetting, bootstrapped over the forgetting sample's items; a note when a side has none."""
    where = f"{ca.task}" + (f" at {budget}" if budget is not None else "")
    a_sets, b_sets = items.for_trials(ca.trial_ids), items.for_trials(cb.trial_ids)
    if a_sets is None or b_sets is None:
        missing = ca if a_sets is None else cb
        why = "per-item forgetting values" if missing.forgetting_measure else "forgetting measured"
        return Pair(ca, cb, budget, FORGETTING, note=f"{where}: {missing.variant}'s trials have no {why}.")
    try:
        result = forgetting_bootstrap(a_sets, b_sets, task=ca.task, n_resamples=n_resamples, seed=seed,
                                      confidence=confidence)  # fmt: skip
    except SiftBenchError as e:
        return Pair(ca, cb, budget, FORGETTING, note=f"{where}: not compared: {e}")
    return Pair(ca, cb, budget, FORGETTING, result=result)


def load_pairs(results_dir: str | Path, a: str, b: str, **kwargs: Any) -> PairReport:
    """`compare_pairs` on a results folder's trials and predictions.parquet, or forgetting.parquet for
    `metric="forgetting"` (keywords as there). Raises SiftBenchError for a folder without those rows, or any
    bad input `compare_pairs` rejects."""
    run = load_run(results_dir)
    if kwargs.get("metric") == FORGETTING:
        items = read_forgetting(run.path)
        if not items:
            raise SiftBenchError(
                f"{run.path}: no per-item forgetting (forgetting.parquet is missing or empty), which `sift-bench "
                "pairs --metric forgetting` needs; runs before forgetting was measured, or with `forgetting: off`, "
                "have none. Rerun the suite into a new results folder (--results) to measure it."
            )
        cells = aggregate(run.trials)
        if not cells:
            raise SiftBenchError(f"{run.path}: no finished (status ok) trials; run the suite first.")
        return compare_pairs(cells, [], a, b, forgetting=items, **kwargs)
    rows = read_predictions(run.path)
    if not rows:
        raise SiftBenchError(
            f"{run.path}: no per-example dev predictions (predictions.parquet is missing or empty), which "
            "`sift-bench pairs` needs; rerun the suite into a new results folder (--results) to write them."
        )
    cells = aggregate(run.trials)
    if not cells:
        raise SiftBenchError(f"{run.path}: no finished (status ok) trials; run the suite first.")
    return compare_pairs(cells, rows, a, b, **kwargs)
