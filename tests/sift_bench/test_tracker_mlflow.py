"""MLflow (the `mlflow` extra), offline against a SQLite store, read back with MLflow's own client: the
exported runs hold the Parquet values, re-exporting updates them (no duplicates), live logging during a
run gives the same runs, and an unusable tracking URI costs no result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

mlflow = pytest.importorskip("mlflow")

from tracked_results import ERROR, expected_tags, final_metrics, make_results, parquet_view  # noqa: E402

from sift_bench.results import read_trials  # noqa: E402
from sift_bench.trackers import LiveTracking, export  # noqa: E402
from sift_bench.trackers.records import load_records, param_text  # noqa: E402


@pytest.fixture
def uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite store of this test's own; also MLflow's default here, for its fluent `search_runs`."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def trial_runs(uri: str) -> tuple[dict[str, Any], list[Any]]:
    """trial id -> its run, and the suite's parent runs, as MLflow reads them back."""
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    trials = [r for r in runs if r.data.tags.get("sift_bench.kind") == "trial"]
    parents = [r for r in runs if r.data.tags.get("sift_bench.kind") == "suite"]
    by_id = {r.data.tags["trial_id"]: r for r in trials}
    assert len(by_id) == len(trials), "two runs for one trial"
    return by_id, parents


def assert_runs_hold(folder: Path, uri: str) -> dict[str, str]:
    """Every trial of `folder` is one run whose params, metric histories, final metrics and tags are the
    Parquet values; returns trial id -> run id."""
    client = mlflow.MlflowClient(uri)
    rows, curves = parquet_view(folder)
    runs, parents = trial_runs(uri)
    assert set(runs) == set(rows) and len(parents) == 1
    records = {r.trial_id: r for r in load_records(folder)}
    for tid, row in rows.items():
        run = runs[tid]
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.params == {k: param_text(v) for k, v in records[tid].params.items()}
        assert run.data.params["train.learning_rate"] == str(row["train.learning_rate"])
        assert {k: run.data.tags[k] for k in expected_tags(row)} == expected_tags(row)
        for metric, points in curves[tid].items():  # per epoch, held-out metrics included; exact floats
            history = client.get_metric_history(run.info.run_id, metric)
            assert sorted((m.step, m.value) for m in history) == points
        for key, value in final_metrics(row).items():
            assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)] == [
                (row["best_epoch"], value)
            ]
        assert run.info.status == ("FINISHED" if row["status"] == "ok" else "FAILED")
        if row["status"] != "ok":
            assert run.data.tags["error"] == ERROR and run.data.tags["mlflow.note.content"] == ERROR
            assert not run.data.metrics
    # The search a user would type finds the runs.
    failed = mlflow.search_runs(experiment_names=["tracked"], filter_string="tags.status = 'failed'")
    want = sorted(tid for tid, row in rows.items() if row["status"] == "failed")
    assert sorted(failed.get("tags.trial_id", [])) == want
    return {tid: run.info.run_id for tid, run in runs.items()}


def test_export_reads_back_and_reexport_updates_in_place(tmp_path: Path, uri: str) -> None:
    folder = make_results(tmp_path / "tracked")
    assert export(folder, "mlflow", uri) == 4
    first = assert_runs_hold(folder, uri)
    assert export(folder, "mlflow", uri) == 4  # again: the same runs, no metric point twice
    assert assert_runs_hold(folder, uri) == first

    # The failed trial is rerun and passes: its run is replaced (params and history cannot change in
    # MLflow), the others are kept; still one run per trial.
    make_results(folder, fail=False)
    assert all(r["status"] == "ok" for r in read_trials(folder))
    export(folder, "mlflow", uri)
    again = assert_runs_hold(folder, uri)
    changed = {tid for tid in first if again[tid] != first[tid]}
    assert len(changed) == 1 and read_trials(folder)[-1]["trial_id"] in changed


def test_live_tracking_logs_each_trial_as_the_export_does(tmp_path: Path, uri: str) -> None:
    warnings: list[str] = []
    live = LiveTracking(f"mlflow={uri}", warn=warnings.append)
    folder = make_results(tmp_path / "tracked", on_recorded=live)
    assert warnings == [] and live.logged == 4
    live_ids = assert_runs_hold(folder, uri)
    export(folder, "mlflow", uri)
    assert assert_runs_hold(folder, uri) == live_ids  # the export finds the live runs and keeps them


def test_an_unusable_tracking_uri_costs_no_result(tmp_path: Path) -> None:
    warnings: list[str] = []
    folder = make_results(tmp_path / "tracked", on_recorded=LiveTracking("mlflow=nosuchscheme://x", warnings.append))
    assert len(read_trials(folder)) == 4 and len(warnings) == 1 and "nosuchscheme" in warnings[0]


@pytest.mark.slow
def test_run_track_mlflow_logs_a_real_suite_live(tmp_path: Path, uri: str) -> None:
    """`sift-bench run SUITE --serial --track mlflow=URI` on a tiny random BERT: the runs appear with the
    run's own values, and `export` afterwards finds them (same run ids)."""
    from test_orchestrate import tiny_suite
    from typer.testing import CliRunner

    from sift_bench.cli import app

    suite = tiny_suite(tmp_path, "tracked", {"full": {}, "classifier_only": {}}, seeds=[0])
    folder = tmp_path / "results"
    res = CliRunner().invoke(app, ["run", str(suite), "--serial", "--results", str(folder), "--track", f"mlflow={uri}"])
    assert res.exit_code == 0 and "warning" not in res.output, res.output
    live = assert_runs_hold(folder, uri)
    assert len(live) == 2
    res = CliRunner().invoke(app, ["export", str(folder), "--to", "mlflow", "--uri", uri])
    assert res.exit_code == 0 and "Exported 2 trial(s)" in res.output, res.output
    assert assert_runs_hold(folder, uri) == live
