"""The Parquet store: rows, evals, resume ids, replacement of failed attempts, atomic writes, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sift_bench import results as results_mod
from sift_bench.errors import SiftBenchError
from sift_bench.results import ResultStore, read_trials
from sift_bench.spec import TrainSettings, TrialResult, TrialSpec


def make_result(task: str = "mrpc", seed: int = 0, status: str = "ok", f1: float = 0.8) -> TrialResult:
    spec = TrialSpec(model="m", task=task, method="lora", budget="0.8%", seed=seed, train=TrainSettings(epochs=2))
    ok = status == "ok"
    return TrialResult(
        trial_id=spec.trial_id,
        spec=spec.model_dump(mode="json"),
        status=status,
        error=None if ok else "boom",
        primary_metric="f1" if ok else None,
        best_epoch=2 if ok else None,
        best={"f1": f1, "accuracy": 0.7} if ok else {},
        epochs=[{"f1": f1 - 0.1, "accuracy": 0.6}, {"f1": f1, "accuracy": 0.7}] if ok else [],
        trainable_params=1000,
        head_params=10,
        total_params=100000,
        knob="rank",
        knob_value=4,
        train_seconds=1.5,
    )


def test_rows_columns_and_evals(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    res = make_result()
    store.add(res, suite="s", variant="lora_qv", grid={"learning_rate": 1e-4})
    table = pq.read_table(tmp_path / "trials.parquet")
    row = table.to_pylist()[0]
    assert row["trial_id"] == res.trial_id and row["variant"] == "lora_qv" and row["budget"] == "0.8%"
    assert row["metric.f1"] == pytest.approx(0.8) and row["primary_value"] == pytest.approx(0.8)
    assert row["train.epochs"] == 2 and row["train.max_steps"] is None
    assert json.loads(row["grid"]) == {"learning_rate": 1e-4}
    assert TrialSpec.model_validate(json.loads(row["spec"])).trial_id == res.trial_id
    expected = ["knob", "knob_value", "trainable_params", "head_params", "seed", "best_epoch", "status", "error",
                "schema_version", "finished_at", "peak_memory_bytes", "device", "tokens_per_second"]  # fmt: skip
    assert set(expected) <= set(table.column_names)
    evals = pq.read_table(tmp_path / "evals.parquet").to_pylist()
    assert len(evals) == 4 and {e["epoch"] for e in evals} == {1, 2}


def test_resume_ids_and_replacement(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    failed = make_result(task="rte", status="failed")
    store.add(make_result(), suite="s")
    store.add(failed, suite="s")
    reopened = ResultStore(tmp_path)
    assert reopened.done_ids() == {make_result().trial_id}
    assert len(reopened) == 2
    # A successful retry replaces the failed row: one row per trial id, never two.
    retry = make_result(task="rte")
    assert retry.trial_id == failed.trial_id
    reopened.add(retry, suite="s")
    rows = read_trials(tmp_path)
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    # Metric columns union across rows: a failed row has nulls, not missing columns.
    assert {r["metric.f1"] is None for r in rows} == {False}


def test_crash_during_write_keeps_old_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultStore(tmp_path)
    store.add(make_result(), suite="s")

    def broken(table, where):  # simulates a crash half-way through writing the temp file
        Path(where).write_bytes(b"PAR1 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(results_mod.pq, "write_table", broken)
    with pytest.raises(KeyboardInterrupt):
        store.add(make_result(seed=1), suite="s")
    monkeypatch.undo()
    assert len(read_trials(tmp_path)) == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_corrupt_table_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "trials.parquet").write_bytes(b"not parquet")
    with pytest.raises(SiftBenchError, match="Cannot read the result tables"):
        ResultStore(tmp_path)
    with pytest.raises(SiftBenchError, match=r"No trials\.parquet"):
        read_trials(tmp_path / "missing")


def test_manifest_records_runs(tmp_path: Path) -> None:
    suite_file = tmp_path / "s.yaml"
    suite_file.write_text("name: s\n")
    store = ResultStore(tmp_path / "out")
    store.start_run("s", suite_file, "serial", planned=2)
    store.finish_run(ran=2, failed=0)
    store.start_run("s", suite_file, "ray", planned=2)
    m = store.read_manifest()
    assert m["suite_sha256"] and len(m["runs"]) == 2 and m["runs"][0]["ran"] == 2
    assert m["finished_at"] is None and m["runs"][1]["scheduler"] == "ray"
    assert m["packages"]["pyarrow"] and m["hardware"]["cpu_count"]
