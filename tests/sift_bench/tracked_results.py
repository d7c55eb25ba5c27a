"""A results folder for the tracker tests, written by the driver and the ResultStore (never by hand): a
suite of 4 trials (full and adapter, 2 seeds, held-out selection) with fake trial functions, so it takes
a second; one trial fails. Plus the Parquet view the trackers must reproduce."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console

from sift_bench.driver import OnRecorded, run_suite
from sift_bench.results import read_evals, read_manifest, read_trials
from sift_bench.spec import TrialResult, TrialSpec
from sift_bench.suite import validate_suite

SUITE: dict[str, Any] = {
    "name": "tracked",
    "schema_version": 1,
    "models": ["m"],
    "tasks": ["mrpc"],
    "methods": {"full": {}, "adapter": {"kind": "pfeiffer"}},
    "budgets": ["0.8%"],
    "seeds": [0, 1],
    "train": {"epochs": 2, "learning_rate": 3.0e-4, "heldout_fraction": 0.2},
}
ERROR = "RuntimeError: CUDA out of memory\n(a second line of the error)"


def fake_trial(fail: bool) -> Any:
    """A trial function: 2 epochs of values no float32 holds exactly; the adapter at seed 1 fails if `fail`."""

    def run(spec: TrialSpec) -> TrialResult:
        if fail and spec.method == "adapter" and spec.seed == 1:
            return TrialResult(trial_id=spec.trial_id, spec=spec, status="failed", error=ERROR)
        x = (1 + spec.seed) / 7 + (0.1 if spec.method == "adapter" else 0.0)
        epochs = [
            {"epoch": e, "train_loss": 1 / (3 * e + x), "accuracy": x + e / 30, "eval_loss": 1 / (e + x),
             "heldout_accuracy": x + e / 31}
            for e in (1, 2)
        ]  # fmt: skip
        best = 1 if spec.seed == 0 else 2  # not always the last epoch: the final metrics sit at the best one
        adapter = spec.method == "adapter"
        return TrialResult(
            trial_id=spec.trial_id, spec=spec, status="ok", primary_metric="accuracy", best_epoch=best,
            best={k: v for k, v in epochs[best - 1].items() if k != "epoch"}, epochs=epochs,
            trainable_params=181_000 if adapter else 22_000_000, total_params=22_700_000,
            knob="bottleneck" if adapter else None, knob_value=48.0 if adapter else None,
        )  # fmt: skip

    return run


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"), width=120)


def make_results(folder: Path, *, fail: bool = True, on_recorded: OnRecorded | None = None) -> Path:
    """Run the suite serially into `folder` (trials already ok are skipped, as in any run)."""
    suite = validate_suite(SUITE, "tracked.yaml")
    run_suite(suite, folder, serial=True, max_failures=0, console=quiet(), run_trial=fake_trial(fail),
              on_recorded=on_recorded)  # fmt: skip
    return folder


def parquet_view(folder: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, list[tuple[int, float]]]]]:
    """trial id -> trials row (with the manifest's git commit), and trial id -> metric -> [(epoch, value)]."""
    commit = read_manifest(folder)["git_commit"] or "unknown"
    rows = {r["trial_id"]: r | {"git_commit": commit} for r in read_trials(folder)}
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {tid: {} for tid in rows}
    for e in read_evals(folder):
        curves[e["trial_id"]].setdefault(e["metric"], []).append((e["epoch"], e["value"]))
    return rows, {tid: {k: sorted(v) for k, v in c.items()} for tid, c in curves.items()}


def final_metrics(row: dict[str, Any]) -> dict[str, float]:
    """`final/<name>` -> the trials row's metric.<name> value."""
    return {f"final/{k[7:]}": v for k, v in row.items() if k.startswith("metric.") and v is not None}


def expected_tags(row: dict[str, Any]) -> dict[str, str]:
    return {
        "suite": row["suite"], "trial_id": row["trial_id"], "config_key": row["config_key"],
        "method": row["method"], "budget": row["budget"] or "none", "seed": str(row["seed"]),
        "status": row["status"], "git_commit": row["git_commit"],
    }  # fmt: skip
