"""The committed results under results/: complete, and each row reproducible from the spec stored in it.

`results/budget_curve_cpu/` is data the README quotes, so it must be what the shipped suite plans (every trial,
finished, with its predictions), and a trial rerun from its stored spec must give its row's scores again.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from sift_bench.expand import expand
from sift_bench.results import load_run, read_manifest, read_predictions, read_trials
from sift_bench.search import plan_extensions
from sift_bench.spec import TrialSpec
from sift_bench.suite import load_suite
from sift_bench.trial import run_trial

REPO = Path(__file__).resolve().parents[2]
CURVE = REPO / "results" / "budget_curve_cpu"
DEV_ROWS = {"sst2": 872}


def planned_with_extensions(suite_path: Path, results: Path) -> dict[str, TrialSpec]:
    """The suite's grid plus every extension the driver's rule plans from the stored results, round after
    round, as `sift-bench run` does: what a complete folder must hold."""
    suite = load_suite(suite_path)
    planned = expand(suite)
    trials = load_run(results).trials
    while more := plan_extensions(suite, planned, trials).specs:
        planned += more
    return {s.trial_id: s for s in planned}


def test_budget_curve_results_are_the_whole_suite() -> None:
    rows = read_trials(CURVE)
    planned = planned_with_extensions(REPO / "suites" / "budget_curve_cpu.yaml", CURVE)
    assert {r["trial_id"] for r in rows} == set(planned)
    assert Counter(r["status"] for r in rows) == {"ok": len(planned)}
    assert sum(s.extension == 0 for s in planned.values()) == 99
    for row in rows:
        spec = TrialSpec.model_validate_json(row["spec"])
        assert spec.trial_id == row["trial_id"] and spec.identity() == planned[row["trial_id"]].identity()
        assert spec.train.heldout_fraction == 0.2 and row["metric.heldout_accuracy"] is not None
        assert row["isolated"] and row["forgetting"] is not None  # true memory, and what it cost
    per_trial = Counter(p["trial_id"] for p in read_predictions(CURVE))
    assert {t: per_trial[t] for t in planned} == {t: DEV_ROWS[s.task] for t, s in planned.items()}
    manifest = read_manifest(CURVE)
    assert manifest["suite"] == "budget_curve_cpu" and manifest["runs"][-1]["failed"] == 0
    assert (CURVE / "leaderboard.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["classifier_only", "sift"])
def test_a_committed_trial_reproduces_from_its_stored_spec(method: str) -> None:
    """Rerun the cheapest committed SST-2 trial of a method from its row's spec: same scores. Another CPU's
    float kernels may round differently, so scores may move by one dev example and predictions agree on 98%."""
    rows = [r for r in read_trials(CURVE) if r["task"] == "sst2" and r["method"] == method]
    row = min(rows, key=lambda r: r["train_seconds"])
    result = run_trial(TrialSpec.model_validate_json(row["spec"]))
    assert result.status == "ok", result.error
    one_example = 1 / DEV_ROWS["sst2"] + 1e-9
    assert result.best["accuracy"] == pytest.approx(row["metric.accuracy"], abs=one_example)
    assert result.best["heldout_accuracy"] == pytest.approx(row["metric.heldout_accuracy"], abs=0.01)
    stored = {p["example"]: p["prediction"] for p in read_predictions(CURVE) if p["trial_id"] == row["trial_id"]}
    same = sum(stored[p.example] == p.prediction for p in result.predictions)
    assert same >= 0.98 * len(stored), json.dumps({"same": same, "of": len(stored)})


def test_quickstart_baseline_tells_the_methods_apart() -> None:
    """The CI baseline (README's main job) separates the methods: on every task the six span >= 5 points,
    full and SIFT each beat classifier-only by >= 2, and SIFT beats random on average over the tasks."""
    baseline = REPO / "results" / "baselines" / "quickstart"
    planned = {s.trial_id for s in expand(load_suite(REPO / "suites" / "quickstart.yaml"))}
    rows = read_trials(baseline)
    assert {r["trial_id"] for r in rows} == planned and all(r["status"] == "ok" for r in rows)
    score = {(r["task"], r["method"]): 100 * r["metric.accuracy"] for r in rows}
    tasks = sorted({task for task, _ in score})
    for task in tasks:
        by_method = {m: s for (t, m), s in score.items() if t == task}
        assert len(by_method) == 6 and max(by_method.values()) - min(by_method.values()) >= 5, by_method
        assert by_method["full"] >= by_method["classifier_only"] + 2, by_method
        assert by_method["sift"] >= by_method["classifier_only"] + 2, by_method
    assert sum(score[t, "sift"] - score[t, "random"] for t in tasks) > 0, score
