"""The leaderboard's significance marks: per (model, task, budget) the best cell gets ★, and each cell a paired
bootstrap cannot tell from it ≈. On the score the bootstrap runs over dev examples (`sift_bench.significance`);
on forgetting (lower is better) over the items of the forgetting sample (`sift_bench.forgetting_bootstrap`).
Both pool each cell's seeds. Knob-less cells (full, classifier_only) join every budget's comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sift_bench.aggregate import Cell
from sift_bench.defaults import CONFIDENCE, N_RESAMPLES
from sift_bench.errors import SiftBenchError
from sift_bench.forgetting_bootstrap import TrialForgetting, forgetting_bootstrap
from sift_bench.metrics import metric_info
from sift_bench.significance import bootstrap_metric, paired_bootstrap, prediction_sets
from sift_bench.spec import Budget

BEST, SAME = "★", "≈"

CellKey = tuple[str, str, str, Budget | None]  # (model, task, variant, budget)
Marks = dict[CellKey, str]


def cell_key(cell: Cell) -> CellKey:
    return (cell.model, cell.task, cell.variant, cell.budget)


def mark_cells(
    cells: list[Cell],
    *,
    score: Callable[[Cell], float],
    ready: Callable[[Cell], bool],
    distinguishable: Callable[[Cell, Cell], bool],
    lacking: str,
    skip: Callable[[list[Cell]], str | None] = lambda group: None,
    what: str = "",
) -> tuple[Marks, list[str]]:
    """The marks of `cells` per (model, task, budget): the cell of highest `score` ★ (the first of equals), each
    cell `distinguishable(best, cell)` says no to ≈. `ready(cell)`: the cell has the per-item data the test
    needs (else a note saying it has no `lacking`); `skip(group)`: a note when a task cannot be tested at all;
    `what` prefixes the notes. Returns the marks and the notes, each once."""
    notes: list[str] = []
    per_group: dict[CellKey, dict[Budget | None, str]] = {}  # cell -> budget compared at -> mark
    n_budgets: dict[tuple[str, str], int] = {}
    tested: dict[tuple[CellKey, CellKey], bool] = {}  # (best, other) -> distinguishable, shared across budgets

    by_task: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        by_task.setdefault((c.model, c.task), []).append(c)
    for (model, task), group in by_task.items():
        note = skip(group)
        if note:
            notes.append(note)
            continue
        budgets = list(dict.fromkeys(c.budget for c in group if c.budget is not None)) or [None]
        n_budgets[(model, task)] = len(budgets)
        for budget in budgets:
            members = [c for c in group if c.budget in (budget, None)]
            best = max(members, key=score)  # max keeps the first of equal scores
            where = f"{what}{task}" + (f" at {budget}" if budget is not None else "")
            if not ready(best):
                notes.append(f"{where}: the best cell ({best.variant}) has no {lacking}; no marks.")
                continue
            per_group.setdefault(cell_key(best), {})[budget] = BEST
            for c in members:
                if c is best:
                    continue
                if not ready(c):
                    notes.append(f"{where}: {c.variant} has no {lacking}; not compared.")
                    continue
                pair = (cell_key(best), cell_key(c))
                if pair not in tested:
                    try:
                        tested[pair] = distinguishable(best, c)
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


def significance_marks(
    cells: list[Cell],
    predictions: Iterable[Mapping[str, Any]],
    *,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> tuple[Marks, list[str]]:
    """Marks on the cells' scores, by a paired bootstrap over dev examples. Notes: comparisons not made
    (missing predictions, a metric predictions cannot give)."""
    wanted = {tid for c in cells for tid in c.trial_ids}
    sets = prediction_sets(r for r in predictions if r["trial_id"] in wanted)

    def skip(group: list[Cell]) -> str | None:
        task, metric = group[0].task, group[0].metric
        if bootstrap_metric(task, metric) is None:
            return f"{task}: {metric} cannot be computed from predictions; no marks."
        return None

    def distinguishable(best: Cell, c: Cell) -> bool:
        return paired_bootstrap(
            c.task, c.metric, [sets[t] for t in best.trial_ids], [sets[t] for t in c.trial_ids],
            n_resamples=n_resamples, confidence=confidence,
        ).distinguishable  # fmt: skip

    def ready(c: Cell) -> bool:
        return all(t in sets for t in c.trial_ids)

    return mark_cells(cells, score=lambda c: metric_info(c.metric).signed(c.mean), ready=ready,
                      distinguishable=distinguishable, lacking="predictions", skip=skip)  # fmt: skip


def forgetting_marks(
    cells: list[Cell],
    forgetting: Iterable[Mapping[str, Any]],
    *,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> tuple[Marks, list[str]]:
    """Marks on the cells' forgetting (lowest best), by a paired bootstrap over the forgetting sample's items;
    cells without a forgetting value take no part."""
    wanted = {tid for c in cells for tid in c.trial_ids}
    items = TrialForgetting(r for r in forgetting if r["trial_id"] in wanted)

    def distinguishable(best: Cell, c: Cell) -> bool:
        a, b = items.for_trials(best.trial_ids), items.for_trials(c.trial_ids)
        assert a is not None and b is not None  # `ready` checked both
        return forgetting_bootstrap(a, b, task=c.task, n_resamples=n_resamples, confidence=confidence).distinguishable

    def ready(c: Cell) -> bool:
        return items.for_trials(c.trial_ids) is not None

    measured = [c for c in cells if c.forgetting.mean is not None]
    return mark_cells(
        measured, score=lambda c: -(c.forgetting.mean or 0.0), ready=ready, distinguishable=distinguishable,
        lacking="per-item forgetting", what="forgetting on ",
    )  # fmt: skip
