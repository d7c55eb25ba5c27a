"""Compare two result folders cell by cell: what got better, worse, slower, or broke.

The unit of judgement is the cell the leaderboard shows: (model, task, variant, budget). On each side
`sift_bench.aggregate` chooses the cell's config exactly as the leaderboard and the dashboard do: the grid
point with the best mean over seeds of the selection metric (dev, or the held-out slice when the trials
held one out). The chosen configs' seeds are compared, new against base, each side at its own choice: a
change that moves the best learning rate from 1e-3 to 3e-3 is judged on the two best scores, as a reader
of the two leaderboards would. Without a grid a cell has one config, and this is config-by-config matching
(`TrialSpec.config_key`, the trial identity without the seed).

Cells pair by (model, task, variant, budget); a base cell and a new cell left unpaired that share model,
task, budget and at least one config are one cell whose variant was renamed (the variant label is not part
of the config, see `sift_bench.spec`), said in a note. The two chosen configs may differ outside the grid
(epochs changed, another option of the method): the row is still compared, since that is what a regression
gate is for, with a note naming each setting that differs. "Outside the grid" means the config identity
(`TrialSpec.config_identity`) with the train settings of either side's grid keys removed.

Each metric is compared as mean over seeds (`sift_bench.aggregate.seed_stats`). The noise band (display
units: points for percent metrics, raw units otherwise) is

    band = max(tolerance, std_base if n_base >= 2, std_new if n_new >= 2)      (sample std, ddof=1)

so with several seeds a change of the mean within one seed-to-seed standard deviation is noise, and with a
single seed (spread unknown) only `tolerance` protects against noise. `tolerance` is also a floor: seeds
that happen to agree closely never turn a 0.1-point wobble into a CI failure; pass `--tolerance 0` for the
pure spread rule. Only the primary metric (or `metric`) gates the exit code; the others are reported.

When both folders hold dev predictions (predictions.parquet) for every seed of the two chosen configs, and
the gated metric can be computed from them (not `eval_loss`), its band comes from a paired bootstrap of
new - base over the shared dev examples, pooled over each side's seeds (`sift_bench.significance`, 95%
percentile interval [low, high]). The band is the distance from the change to the interval's end on the
side of 0, floored by `tolerance`:

    band = max(tolerance, high - delta if delta < 0 else delta - low)

so |delta| > band exactly when the interval excludes 0 and the change exceeds `tolerance`: the same rule as
above, with the bootstrap's spread in place of the seeds'. Each change records which band it used. Gating on
`forgetting` (lower is better: more forgetting beyond the band regresses) bootstraps over the items of the
forgetting sample instead (forgetting.parquet, `sift_bench.forgetting_bootstrap`); `tolerance` is then in
the measure's units (points, or nats/token, where the default of 1 is wide: pass e.g. `--tolerance 0.02`).

A cell also regresses when a seed that finished in the baseline failed in the new run at the same grid
point ("newly failed"), when such a seed is absent from the new run or the whole cell is ("missing"), or
when the chosen configs' mean train time / peak memory grew by more than a ratio (`time_threshold`,
`memory_threshold`; 0 turns the check off) and by more than a small absolute slack (timers and allocators
jitter on tiny trials). A grid point present on one side only (the grid changed) is a note, not a flag.

Each cell also shows the new run's tuning marks (`sift_bench.tuning`: "lr ↑edge", "lr untuned", "ext 1"), and
the baseline's before them when they differ ("lr ↑edge -> tuned"); they never change a verdict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sift_bench.aggregate import Cell, grid_text, seed_stats, tuning_legend
from sift_bench.compare_cells import Side, by_grid_point, outside_grid, pair_sides, sides
from sift_bench.compare_report import (
    CellComparison,
    Comparison,
    MetricChange,
    Status,
    columns,
    row_cells,
    row_verdict,
    summary_line,
    to_markdown,
    to_rich,
)
from sift_bench.defaults import MEMORY_THRESHOLD, TIME_THRESHOLD, TOLERANCE
from sift_bench.errors import SiftBenchError
from sift_bench.forgetting_bootstrap import METRIC as FORGETTING
from sift_bench.forgetting_bootstrap import TrialForgetting, forgetting_bootstrap
from sift_bench.metrics import metric_info
from sift_bench.registry import did_you_mean
from sift_bench.results import RunTables, load_run, read_forgetting, read_predictions
from sift_bench.schema import metric_column, metric_names
from sift_bench.significance import BootstrapResult, TrialPredictions, paired_bootstrap
from sift_bench.spec import Budget

# Absolute slack for the resource checks: below these, a ratio says nothing (a 0.2 s trial taking 0.4 s).
MIN_TIME_DELTA_S = 1.0
MIN_MEMORY_DELTA_BYTES = 16 * 2**20
# Columns of `metric.*` that are bookkeeping, not scores.
NOT_METRICS = frozenset({"epoch", "step"})

# The report's data and renderings live in compare_report; re-exported so callers import it all from here.
__all__ = [
    "CellComparison", "Comparison", "MetricChange", "columns", "compare_paths", "compare_runs", "judge",
    "row_cells", "row_verdict", "summary_line", "to_markdown", "to_rich",
]  # fmt: skip

# ----------------------------------------------------------------------------- judging one metric


def judge(
    metric: str,
    base: list[float],
    new: list[float],
    *,
    primary: bool,
    tolerance: float,
    bootstrap: BootstrapResult | None = None,
) -> MetricChange:
    """Compare one metric's per-seed values (raw units); see the module docstring for the band.
    `bootstrap` (new - base, raw units) replaces the seed spread when given."""
    info = metric_info(metric)
    scale = info.scale
    b, n = seed_stats(v * scale for v in base if v is not None), seed_stats(v * scale for v in new if v is not None)
    bm, bs, bn, nm, ns, nn = b.mean, b.std, b.n, n.mean, n.std, n.n
    change = MetricChange(
        metric=metric, primary=primary, higher_is_better=info.higher_is_better,
        unit=info.unit,
        base_mean=bm, base_std=bs, base_n=bn, new_mean=nm, new_std=ns, new_n=nn,
    )  # fmt: skip
    if bm is None or nm is None:
        return change
    band = max([tolerance] + [s for s in (bs, ns) if s is not None])
    delta = nm - bm
    change.band_kind = "seed std"
    if bootstrap is not None:
        lo, hi, d = bootstrap.low * scale, bootstrap.high * scale, bootstrap.diff * scale
        band = max(tolerance, hi - d if delta < 0 else d - lo)
        change.band_kind, change.ci_low, change.ci_high = "bootstrap", lo, hi
        change.n_examples = bootstrap.n_examples
    gain = info.signed(delta)  # > 0 is better whatever the direction
    change.delta, change.band = delta, band
    change.verdict = "regressed" if gain < -band else "improved" if gain > band else "noise"
    return change


# ----------------------------------------------------------------------------- comparing


@dataclass(frozen=True)
class _Rules:
    """What every cell is judged by (compare_runs' options, resolved)."""

    metrics: list[str]  # every metric in the tables
    gate: str | None  # --metric, else None: each trial's primary metric
    tolerance: float
    time_threshold: float
    memory_threshold: float
    predictions: tuple[TrialPredictions, TrialPredictions]
    forgetting: tuple[TrialForgetting, TrialForgetting]


def compare_runs(
    baseline: RunTables,
    new: RunTables,
    *,
    tolerance: float = TOLERANCE,
    time_threshold: float = TIME_THRESHOLD,
    memory_threshold: float = MEMORY_THRESHOLD,
    allow_different_suites: bool = False,
    metric: str | None = None,
    predictions: tuple[TrialPredictions, TrialPredictions] | None = None,
    forgetting: tuple[TrialForgetting, TrialForgetting] | None = None,
) -> Comparison:
    """Pair the cells of two runs and judge each at its chosen configs; see the module docstring.

    `metric` gates on that metric instead of each trial's primary one (e.g. `eval_loss`, which moves with
    every change to training even where a small run's accuracy sits at the majority class); configs are
    still chosen by the primary metric, as the leaderboard chooses them.
    `predictions` and `forgetting` (baseline's, new's per-example and per-item rows): read from the two
    folders when not given.
    """
    if baseline.suite != new.suite and not allow_different_suites:
        raise SiftBenchError(
            f"The tables come from different suites: {baseline.path} is '{baseline.suite}', "
            f"{new.path} is '{new.suite}'. Compare runs of the same suite."
        )
    if tolerance < 0 or time_threshold < 0 or memory_threshold < 0:
        raise SiftBenchError("--tolerance, --time-threshold and --memory-threshold must be >= 0.")
    known = metric_names([*baseline.trials.columns, *new.trials.columns])
    if metric is not None and metric not in known:
        raise SiftBenchError(f"--metric {metric!r} is not in the tables.{did_you_mean(metric, known)} Known: {known}.")
    if predictions is None:
        predictions = (TrialPredictions(read_predictions(baseline.path)), TrialPredictions(read_predictions(new.path)))
    if forgetting is None:
        forgetting = (TrialForgetting(read_forgetting(baseline.path)), TrialForgetting(read_forgetting(new.path)))
    rules = _Rules(
        [m for m in known if m not in NOT_METRICS], metric, tolerance, time_threshold, memory_threshold, predictions,
        forgetting,
    )  # fmt: skip
    base_sides, new_sides = sides(baseline.trials), sides(new.trials)
    judged = [_compare_cell(b, n, note, rules) for b, n, note in pair_sides(base_sides, new_sides)]
    judged.sort(key=lambda pair: pair[0])
    shown = [s.cell for s in (*base_sides.values(), *new_sides.values()) if s.cell is not None]
    return Comparison(
        baseline=str(baseline.path), new=str(new.path), suite=new.suite, tolerance=tolerance,
        time_threshold=time_threshold, memory_threshold=memory_threshold, cells=[c for _, c in judged],
        tuning_legend=tuning_legend(shown),
    )  # fmt: skip


def _compare_cell(
    base: Side | None, new: Side | None, note: str, rules: _Rules
) -> tuple[tuple[Any, ...], CellComparison]:
    """One cell's comparison, and its place in the report (task, method, budget, model)."""
    bs, ns = (base.spec if base else None), (new.spec if new else None)
    spec = ns or bs
    assert spec is not None  # pair_sides never yields a pair of two missing sides
    bc, nc = (base.cell if base else None), (new.cell if new else None)
    empty = pd.DataFrame(columns=["status", "seed", "spec", "trial_id", "config_key"])
    bg, ng = (base.rows if base else empty), (new.rows if new else empty)
    b_ok, n_ok = (base.ok if base else empty), (new.ok if new else empty)
    b_sel, n_sel = (base.chosen if base else empty), (new.chosen if new else empty)
    b_grid, n_grid = (dict(bs.grid) if bs else {}), (dict(ns.grid) if ns else {})
    cc = CellComparison(
        model=spec.model, task=spec.task, method=spec.label, base_method=spec.method, budget=Budget.text(spec.budget),
        chosen=_chosen_text(b_grid if base else None, n_grid if new else None), tuning=_tuning_text(bc, nc),
        base_grid=b_grid, new_grid=n_grid,
        base_config_key=bs.config_key if len(b_sel) and bs else None,
        new_config_key=ns.config_key if len(n_sel) and ns else None,
        n_configs=(nc or bc).n_configs if (nc or bc) else 1,
        selection=_selection(bc, nc), status=_status(bg, ng, b_ok, n_ok),
        base_seeds=_seed_list(b_sel), new_seeds=_seed_list(n_sel),
    )  # fmt: skip
    if note:
        cc.notes.append(note)
    _seed_flags(cc, b_ok, ng)
    n_failed = ng[ng["status"] != "ok"]
    if len(n_failed) and "error" in n_failed.columns:
        cc.new_error = next((str(e) for e in n_failed["error"] if isinstance(e, str) and e), None)
    if len(b_sel) and len(n_sel):
        assert bs is not None and ns is not None
        _grid_notes(cc, b_ok, ng)
        outside = outside_grid(bs, ns)
        if outside:
            cc.notes.append("settings differ outside the grid: " + ", ".join(outside))
        _judge_metrics(cc, spec.task, b_sel, n_sel, rules, _primary(bc, nc))
        _resources(cc, b_sel, n_sel, rules.time_threshold, rules.memory_threshold)
    return (cc.task, cc.method, Budget.order(spec.budget), cc.model), cc


def _chosen_text(base: dict[str, Any] | None, new: dict[str, Any] | None) -> str:
    """'lr=1e-3' when both sides chose it, 'lr=1e-3 -> lr=3e-3' otherwise; '' without a grid."""
    texts = [grid_text(g) if g is not None else None for g in (base, new)]
    shown = [t for t in texts if t is not None]
    if not any(shown):
        return ""
    if None in texts or texts[0] == texts[1]:
        return shown[0]
    return f"{texts[0] or '(no grid)'} -> {texts[1] or '(no grid)'}"


def _tuning_text(base: Cell | None, new: Cell | None) -> str:
    """The new cell's tuning marks ("lr ↑edge"), the baseline's before them when they differ ("lr untuned ->
    tuned"); "" when tuned inside on both sides or without a grid."""
    texts = [c.tuning_text() if c is not None else None for c in (base, new)]
    if texts[0] is None or texts[1] is None or texts[0] == texts[1]:
        return texts[1] if texts[1] is not None else texts[0] or ""
    named = [t or ("tuned" if c is not None and c.axes else "no grid") for t, c in zip(texts, (base, new), strict=True)]
    return " -> ".join(named)


def _selection(base: Cell | None, new: Cell | None) -> str:
    rules = list(dict.fromkeys(c.selection for c in (base, new) if c is not None))
    return " -> ".join(rules) if rules else "dev"


def _status(bg: pd.DataFrame, ng: pd.DataFrame, b_ok: pd.DataFrame, n_ok: pd.DataFrame) -> Status:
    if bg.empty:
        return "new"
    if ng.empty:
        return "missing" if len(b_ok) else "still_failing"
    if b_ok.empty:
        return "fixed" if len(n_ok) else "still_failing"
    return "newly_failed" if n_ok.empty else "compared"


def _seed_flags(cc: CellComparison, b_ok: pd.DataFrame, ng: pd.DataFrame) -> None:
    """Seeds that finished in the baseline and failed, or are absent, at the same grid point in the new run."""
    missing, failed = set(), set()
    new_points = by_grid_point(ng) if len(ng) else {}
    for point, rows in (by_grid_point(b_ok) if len(b_ok) else {}).items():
        seeds = set(rows["seed"].astype(int))
        if ng.empty:
            missing |= seeds
        elif point in new_points:
            there = new_points[point]
            missing |= seeds - set(there["seed"].astype(int))
            failed |= seeds & set(there[there["status"] != "ok"]["seed"].astype(int))
    if cc.status == "newly_failed":  # nothing finished in the new cell, whatever its grid points
        failed |= set(b_ok["seed"].astype(int)) & set(ng["seed"].astype(int))
    cc.missing_seeds, cc.newly_failed_seeds = sorted(missing), sorted(failed)
    if cc.status == "newly_failed" and not failed:
        cc.flags.append("newly failed: no trial of the cell finished in the new run")
    if cc.status == "missing":
        cc.flags.append(f"missing: seeds {_seeds(cc.missing_seeds)} not in the new run")
    elif cc.missing_seeds:
        cc.flags.append(f"missing seeds {_seeds(cc.missing_seeds)}")
    if cc.newly_failed_seeds:
        cc.flags.append(f"newly failed: seeds {_seeds(cc.newly_failed_seeds)}")


def _grid_notes(cc: CellComparison, b_ok: pd.DataFrame, ng: pd.DataFrame) -> None:
    """Grid points run on one side only: the grid changed (or a run stopped early); a note, not a flag."""
    base_points, new_points = by_grid_point(b_ok), by_grid_point(ng)
    for label, points, other in (("baseline", base_points, new_points), ("new run", new_points, base_points)):
        only = [grid_text(json.loads(p)) for p in points if p not in other]
        if only:
            cc.notes.append(f"grid points only in the {label}: {'; '.join(only)}")


def _judge_metrics(
    cc: CellComparison, task: str, b_sel: pd.DataFrame, n_sel: pd.DataFrame, rules: _Rules, primary: str | None
) -> None:
    primary = rules.gate or primary
    for name in sorted(rules.metrics, key=lambda m: (m != primary, m)):
        col = metric_column(name)
        bv = pd.to_numeric(b_sel[col], errors="coerce").tolist() if col in b_sel else []
        nv = pd.to_numeric(n_sel[col], errors="coerce").tolist() if col in n_sel else []
        boot, note = _bootstrap(task, name, b_sel, n_sel, rules) if name == primary else (None, None)
        change = judge(name, bv, nv, primary=name == primary, tolerance=rules.tolerance, bootstrap=boot)
        change.band_note = note
        if change.base_n or change.new_n:
            cc.metrics.append(change)
    p = cc.primary
    if p and p.verdict == "regressed" and p.delta is not None and p.band is not None:
        sign = "+" if p.delta >= 0 else ""
        cc.flags.append(f"{p.metric} {sign}{p.delta:.2f}{p.unit} beyond the noise band ±{p.band:.2f}")


def _bootstrap(
    task: str, metric: str, b_sel: pd.DataFrame, n_sel: pd.DataFrame, rules: _Rules
) -> tuple[BootstrapResult | None, str | None]:
    """new - base over the shared dev examples when every seed of both chosen configs has predictions; for
    forgetting, over the shared items of the forgetting sample when every seed has per-item values."""
    if metric == FORGETTING:
        base_items, new_items = (rules.forgetting[i].for_trials(s["trial_id"]) for i, s in ((0, b_sel), (1, n_sel)))
        if base_items is None or new_items is None:
            return None, None
        try:
            return forgetting_bootstrap(new_items, base_items, task=task), None
        except SiftBenchError as e:
            return None, f"bootstrap not used: {e}"
    base_sets = rules.predictions[0].for_trials(task, metric, b_sel["trial_id"])
    new_sets = rules.predictions[1].for_trials(task, metric, n_sel["trial_id"])
    if base_sets is None or new_sets is None:
        return None, None
    try:
        return paired_bootstrap(task, metric, new_sets, base_sets), None
    except SiftBenchError as e:  # e.g. other dev data on one side: the seed spread still judges the means
        return None, f"bootstrap not used: {e}"


def _primary(base: Cell | None, new: Cell | None) -> str | None:
    """The metric a cell is judged by: the one `aggregate` chose the new side's config by (its task's primary
    metric in the new run), else the baseline's; None when neither side has a scored trial."""
    cell = new or base
    return cell.metric if cell is not None else None


def _mean(df: pd.DataFrame, col: str) -> float | None:
    if col not in df.columns:
        return None
    vals = pd.to_numeric(df[col], errors="coerce").dropna()
    vals = vals[vals > 0]  # 0 means "not measured" in TrialResult
    return float(vals.mean()) if len(vals) else None


def _resources(cc: CellComparison, b_ok: pd.DataFrame, n_ok: pd.DataFrame, time_thr: float, mem_thr: float) -> None:
    cc.base_train_seconds, cc.new_train_seconds = _mean(b_ok, "train_seconds"), _mean(n_ok, "train_seconds")
    if cc.base_train_seconds and cc.new_train_seconds:
        cc.time_ratio = cc.new_train_seconds / cc.base_train_seconds
        grew = cc.new_train_seconds - cc.base_train_seconds
        if time_thr and cc.time_ratio > time_thr and grew > MIN_TIME_DELTA_S:
            cc.flags.append(
                f"slower: train {cc.base_train_seconds:.1f}s -> {cc.new_train_seconds:.1f}s (x{cc.time_ratio:.2f})"
            )
    cc.base_peak_memory_bytes = _mean(b_ok, "peak_memory_bytes")
    cc.new_peak_memory_bytes = _mean(n_ok, "peak_memory_bytes")
    if cc.base_peak_memory_bytes and cc.new_peak_memory_bytes:
        cc.memory_ratio = cc.new_peak_memory_bytes / cc.base_peak_memory_bytes
        grew = cc.new_peak_memory_bytes - cc.base_peak_memory_bytes
        if mem_thr and cc.memory_ratio > mem_thr and grew > MIN_MEMORY_DELTA_BYTES:
            cc.flags.append(
                f"memory: peak {_mib(cc.base_peak_memory_bytes)} -> {_mib(cc.new_peak_memory_bytes)} "
                f"(x{cc.memory_ratio:.2f})"
            )


def _seed_list(rows: pd.DataFrame) -> list[int]:
    return sorted(set(rows["seed"].astype(int))) if len(rows) else []


def _seeds(seeds: list[int]) -> str:
    return ",".join(map(str, seeds))


def _mib(b: float) -> str:
    return f"{b / 2**20:.0f} MiB"


def compare_paths(baseline: str | Path, new: str | Path, **kwargs: Any) -> Comparison:
    return compare_runs(load_run(baseline), load_run(new), **kwargs)
