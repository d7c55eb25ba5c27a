"""The Parquet store: rows, evals, predictions, resume ids, replacement of failed attempts, atomic writes,
manifest; damaged files; schema-1 tables (the committed CI baseline) and schema-2 rows read and upgraded."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sift_bench import results as results_mod
from sift_bench.errors import SiftBenchError
from sift_bench.results import (
    ResultStore,
    load_run,
    read_evals,
    read_manifest,
    read_predictions,
    read_trials,
    write_predictions,
)
from sift_bench.spec import SCHEMA_VERSION, Budget, Prediction, TrainSettings, TrialResult, TrialSpec

REPO = Path(__file__).resolve().parents[2]
# The CI baseline as first committed (schema 1), kept as a fixture of the upgrade path.
BASELINE = REPO / "tests" / "data" / "schema1_quickstart"


def make_result(
    task: str = "mrpc",
    seed: int = 0,
    status: str = "ok",
    f1: float = 0.8,
    predictions: list[Prediction] | None = None,
    **spec_fields: object,
) -> TrialResult:
    spec = TrialSpec(
        model="m", task=task, method="lora", budget="0.8%", seed=seed, train=TrainSettings(epochs=2), suite="s",
        **spec_fields,
    )  # fmt: skip
    ok = status == "ok"
    return TrialResult(
        trial_id=spec.trial_id,
        spec=spec,
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
        predictions=predictions or [],
    )


def test_rows_columns_and_evals(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    res = make_result(variant="lora_qv", grid={"learning_rate": 1e-4})
    store.add(res)
    table = pq.read_table(tmp_path / "trials.parquet")
    row = table.to_pylist()[0]
    assert row["trial_id"] == res.trial_id and row["variant"] == "lora_qv" and row["budget"] == "0.8%"
    assert row["suite"] == "s" and row["config_key"] == res.spec.config_key
    assert row["metric.f1"] == pytest.approx(0.8) and row["primary_metric"] == "f1"
    assert "primary_value" not in table.column_names  # each number once: the score is metric.<primary>
    assert row["train.epochs"] == 2 and row["train.max_steps"] is None
    assert json.loads(row["grid"]) == {"learning_rate": 1e-4} and row["schema_version"] == SCHEMA_VERSION == 5
    assert TrialSpec.model_validate_json(row["spec"]) == res.spec  # variant and grid travel inside the spec
    expected = ["knob", "knob_value", "trainable_params", "head_params", "seed", "best_epoch", "status", "error",
                "schema_version", "finished_at", "peak_memory_bytes", "device", "tokens_per_second"]  # fmt: skip
    assert set(expected) <= set(table.column_names)
    assert table.schema.field("gpu_ids").type == pa.list_(pa.string()) and row["gpu_ids"] == []
    assert row["node"] is None and row["started_at"] is None and row["scored_epoch"] is None
    assert table.schema.field("scored_epoch").type == pa.int64() and row["train.heldout_fraction"] == 0.0
    evals = pq.read_table(tmp_path / "evals.parquet").to_pylist()
    assert len(evals) == 4 and {e["epoch"] for e in evals} == {1, 2}


def test_resume_ids_and_replacement(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    failed = make_result(task="rte", status="failed")
    store.add(make_result())
    store.add(failed)
    reopened = ResultStore(tmp_path)
    assert reopened.done_ids() == {make_result().trial_id}
    assert len(reopened) == 2
    # A successful retry replaces the failed row: one row per trial id, never two.
    retry = make_result(task="rte")
    assert retry.trial_id == failed.trial_id
    reopened.add(retry)
    rows = read_trials(tmp_path)
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    # Metric columns union across rows: a failed row has nulls, not missing columns.
    assert {r["metric.f1"] is None for r in rows} == {False}


def test_crash_during_write_keeps_old_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultStore(tmp_path)
    store.add(make_result())

    def broken(table, where):  # simulates a crash half-way through writing the temp file
        Path(where).write_bytes(b"PAR1 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(results_mod.pq, "write_table", broken)
    with pytest.raises(KeyboardInterrupt):
        store.add(make_result(seed=1))
    monkeypatch.undo()
    assert len(read_trials(tmp_path)) == 1
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("name", ["trials.parquet", "evals.parquet", "manifest.json"])
def test_damaged_files_name_the_file_and_the_fix(tmp_path: Path, name: str) -> None:
    ResultStore(tmp_path).add(make_result())
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / name).write_bytes(b"PAR1 half a file")
    fix = r"delete it and rerun the suite, or restore it"
    with pytest.raises(SiftBenchError, match=rf"{name}.*{fix}"):
        load_run(tmp_path)
    if name != "manifest.json":
        with pytest.raises(SiftBenchError, match=rf"{name}.*{fix}"):
            ResultStore(tmp_path)


def test_missing_folder_and_table(tmp_path: Path) -> None:
    with pytest.raises(SiftBenchError, match="does not exist"):
        read_trials(tmp_path / "missing")
    with pytest.raises(SiftBenchError, match=r"has no trials\.parquet"):
        read_trials(tmp_path)
    assert read_evals(tmp_path) == [] and read_manifest(tmp_path) == {} and read_predictions(tmp_path) == []
    pq.write_table(pq.read_table(BASELINE / "evals.parquet"), tmp_path / "trials.parquet")  # a foreign table
    with pytest.raises(SiftBenchError, match="lacks the column"):
        read_trials(tmp_path)


def test_predictions_table_round_trips_and_may_be_empty(tmp_path: Path) -> None:
    write_predictions(tmp_path, [])
    assert (tmp_path / "predictions.parquet").exists() and read_predictions(tmp_path) == []
    rows = [{"trial_id": "t", "split": "validation", "example": 3, "prediction": "1", "label": "0"}]
    write_predictions(tmp_path, rows)
    assert read_predictions(tmp_path) == rows


def test_baseline_trial_ids_are_stable() -> None:
    """The committed CI baseline (schema 1): every stored spec still hashes to its row's trial id."""
    raw = pq.read_table(BASELINE / "trials.parquet").to_pylist()
    assert {r["schema_version"] for r in raw} == {1} and len(raw) == 12
    for row in raw:
        spec = TrialSpec.model_validate_json(row["spec"])
        assert spec.trial_id == row["trial_id"], row["variant"]
        assert spec.budget == (None if row["budget"] is None else Budget.parse(row["budget"]))


def test_schema_1_rows_are_upgraded_on_read(tmp_path: Path) -> None:
    raw = {r["trial_id"]: r for r in pq.read_table(BASELINE / "trials.parquet").to_pylist()}
    rows = read_trials(BASELINE)
    assert len(rows) == len(raw)
    for row in rows:
        old = raw[row["trial_id"]]
        spec = TrialSpec.model_validate_json(row["spec"])
        assert "primary_value" not in row and row["config_key"] == spec.config_key
        assert spec.variant == old["variant"] and spec.grid == json.loads(old["grid"])
        assert row[f"metric.{row['primary_metric']}"] == old["primary_value"]
        assert row["gpu_ids"] == [] and row["node"] is None and row["train.heldout_fraction"] == 0.0
    # One config key per (task, method) across the seeds: here one seed each, twelve configs.
    assert len({r["config_key"] for r in rows}) == 12
    frame = load_run(BASELINE).trials
    assert {str(b) for b in frame["budget"] if b is not None} == {"0.8%"}
    assert all(isinstance(s, TrialSpec) for s in frame["spec"])
    # A store opened on an old folder rewrites it in the current schema and keeps every trial.
    for name in ("trials.parquet", "evals.parquet", "manifest.json"):
        (tmp_path / name).write_bytes((BASELINE / name).read_bytes())
    store = ResultStore(tmp_path)
    store.add(make_result())
    table = pq.read_table(tmp_path / "trials.parquet")
    assert table.num_rows == 13 and "config_key" in table.column_names and "primary_value" not in table.column_names
    assert {r["trial_id"] for r in read_trials(tmp_path)} >= set(raw)


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


def _predictions(*pairs: tuple[str, str]) -> list[Prediction]:
    return [Prediction(split="validation", example=i, prediction=p, label=y) for i, (p, y) in enumerate(pairs)]


def test_new_columns_round_trip(tmp_path: Path) -> None:
    res = make_result().model_copy(
        update={"gpu_ids": ["0", "3"], "node": "abc123", "started_at": "2026-12-01T11:00:00+00:00", "scored_epoch": 2}
    )
    ResultStore(tmp_path).add(res)
    (row,) = read_trials(tmp_path)
    assert row["gpu_ids"] == ["0", "3"] and row["node"] == "abc123" and row["scored_epoch"] == 2
    assert row["started_at"] == "2026-12-01T11:00:00+00:00"
    assert "predictions" not in row  # a table of its own
    frame = load_run(tmp_path).trials
    assert list(frame["gpu_ids"][0]) == ["0", "3"] and frame["node"][0] == "abc123"


def test_predictions_are_written_with_the_trial_and_replaced_on_rerun(tmp_path: Path) -> None:
    first = make_result(task="rte", status="failed")
    ResultStore(tmp_path).add(first)
    assert not (tmp_path / "predictions.parquet").exists()  # nothing predicted: no table made

    res = make_result(predictions=_predictions(("1", "1"), ("0", "1"), ("1", "0")))
    other = make_result(seed=1, predictions=_predictions(("0", "0")))
    store = ResultStore(tmp_path)
    store.add(res)
    store.add(other)
    expected = [{"trial_id": res.trial_id, **p.model_dump()} for p in res.predictions]
    rows = read_predictions(tmp_path)
    assert [r for r in rows if r["trial_id"] == res.trial_id] == expected and len(rows) == 4

    # A rerun of the same trial (a new store, as a resumed run opens one) replaces its rows, never adds.
    rerun = make_result(predictions=_predictions(("0", "1"), ("0", "1"), ("0", "0")))
    ResultStore(tmp_path).add(rerun)
    rows = read_predictions(tmp_path)
    assert len(rows) == 4 and [r["prediction"] for r in rows if r["trial_id"] == res.trial_id] == ["0", "0", "0"]
    # A rerun that predicts nothing (it failed) leaves none of the older attempt's rows behind.
    ResultStore(tmp_path).add(make_result(status="failed"))
    assert {r["trial_id"] for r in read_predictions(tmp_path)} == {other.trial_id}


def test_predictions_go_before_the_trial_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultStore(tmp_path)
    written: list[str] = []
    real = results_mod._write_table
    monkeypatch.setattr(results_mod, "_write_table", lambda path, table: (written.append(path.name), real(path, table)))
    store.add(make_result(predictions=_predictions(("1", "1"))))
    assert written == ["predictions.parquet", "trials.parquet", "evals.parquet"]


def test_schema_2_rows_are_upgraded_on_read(tmp_path: Path) -> None:
    # A row as schema 2 wrote it: none of the schema-3 columns, not even train.heldout_fraction.
    row = results_mod.trial_row(make_result())
    added = {"gpu_ids", "node", "started_at", "scored_epoch", "train.heldout_fraction"}
    old = {k: v for k, v in row.items() if k not in added} | {"schema_version": 2}
    spec = json.loads(old["spec"])
    del spec["train"]["heldout_fraction"]
    old["spec"] = json.dumps(spec)
    pq.write_table(pa.Table.from_pylist([old]), tmp_path / "trials.parquet")
    (got,) = read_trials(tmp_path)
    assert got["gpu_ids"] == [] and got["node"] is None and got["started_at"] is None and got["scored_epoch"] is None
    assert got["train.heldout_fraction"] == 0.0 and got["schema_version"] == 2
    assert TrialSpec.model_validate_json(got["spec"]).trial_id == got["trial_id"]  # the id is still valid
    assert load_run(tmp_path).trials["gpu_ids"].map(list).tolist() == [[]]
    # A store opened on it keeps the row (resume skips it) and writes it back in the current columns.
    store = ResultStore(tmp_path)
    assert store.done_ids() == {got["trial_id"]}
    store.add(make_result(seed=1))
    table = pq.read_table(tmp_path / "trials.parquet")
    assert added <= set(table.column_names) and table.num_rows == 2


def test_damaged_predictions_table_names_the_file_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "predictions.parquet").write_bytes(b"PAR1 half a file")
    with pytest.raises(SiftBenchError, match=r"predictions\.parquet.*delete it and rerun the suite"):
        ResultStore(tmp_path).add(make_result(predictions=_predictions(("1", "1"))))
    assert not (tmp_path / "trials.parquet").exists()  # no trial marked done without its predictions
