"""Weights & Biases (the `wandb` extra) in offline mode, no account: each trial is an offline run whose
.wandb log, read back with W&B's own reader (`wandb leet inspect --json`), holds the Parquet values; the
run id is the trial id, so exporting again resumes the same runs; live logging gives the same runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("wandb")

from tracked_results import ERROR, expected_tags, final_metrics, make_results, parquet_view

from sift_bench.trackers import LiveTracking, export
from sift_bench.trackers.records import load_records


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def read_run(run_dir: Path) -> dict[str, Any]:
    """An offline run as W&B's reader prints its records: the run record (id, group, config, tags), the
    history by metric, the summary (its updates merged in order) and the exit code."""
    out = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
        capture_output=True, text=True, check=True, timeout=120, stdin=subprocess.DEVNULL,
    ).stdout  # fmt: skip
    run: dict[str, Any] = {"history": {}, "summary": {}}
    for record in map(json.loads, out.splitlines()):
        kind = record["type"]
        if kind == "run":
            run["run"] = record["run"]
        elif kind == "history":
            step = int(record["history"]["step"]["num"])
            for key, value in record["history"]["item"].items():
                if not key.startswith("_"):
                    run["history"].setdefault(key, []).append((step, value))
        elif kind == "summary":
            run["summary"].update(record["summary"].get("update", {}))
        elif kind == "exit":
            run["exit_code"] = record["exit"].get("exit_code", 0)
    return run


def offline_runs(root: Path) -> dict[str, list[Path]]:
    """run id -> its offline run folders under `root`/wandb, oldest first."""
    runs: dict[str, list[Path]] = {}
    for d in sorted((root / "wandb").glob("offline-run-*")):
        runs.setdefault(d.name.rsplit("-", 1)[1], []).append(d)
    return runs


def assert_runs_hold(results: Path, root: Path) -> None:
    rows, curves = parquet_view(results)
    runs = offline_runs(root)
    assert sorted(runs) == sorted(rows) and all(len(f) == 1 for f in runs.values())  # run id = trial id
    records = {r.trial_id: r for r in load_records(results)}
    for tid, row in rows.items():
        got = read_run(runs[tid][0])
        assert got["history"] == curves[tid]  # step = epoch, held-out metrics included, exact
        assert {k: v for k, v in got["summary"].items() if k.startswith("final/")} == final_metrics(row)
        assert got["summary"]["final_epoch"] == row["best_epoch"]
        config = {k: v for k, v in got["run"]["config"]["update"].items() if k != "_wandb"}
        assert config == records[tid].params and config["train.learning_rate"] == row["train.learning_rate"]
        tags = dict(t.split("=", 1) for t in got["run"]["tags"])
        assert {k: tags[k] for k in expected_tags(row)} == expected_tags(row)
        assert got["run"]["run_group"] == "tracked" and got["run"]["run_id"] == tid
        assert got["exit_code"] == (0 if row["status"] == "ok" else 1)
        if row["status"] != "ok":
            assert got["summary"]["error"] == ERROR


def test_export_reads_back_and_reexport_resumes_the_same_runs(tmp_path: Path) -> None:
    results = make_results(tmp_path / "tracked")
    root = tmp_path / "wb"
    root.mkdir()
    assert export(results, "wandb", str(root)) == 4
    assert_runs_hold(results, root)
    # Again: W&B offline keeps each export as a folder to sync, and each resumes the run of its trial id,
    # so syncing them updates the same W&B runs.
    assert export(results, "wandb", str(root)) == 4
    runs = offline_runs(root)
    assert sorted(runs) == sorted(r.trial_id for r in load_records(results)) and all(len(f) == 2 for f in runs.values())
    failed = next(tid for tid, r in parquet_view(results)[0].items() if r["status"] != "ok")
    again = read_run(runs[failed][1])
    assert again["run"]["run_id"] == failed and again["run"]["resume"] and again["summary"]["error"] == ERROR


def test_live_tracking_logs_the_same_runs(tmp_path: Path) -> None:
    root = tmp_path / "wb"
    root.mkdir()
    warnings: list[str] = []
    results = make_results(tmp_path / "tracked", on_recorded=LiveTracking(f"wandb={root}", warnings.append))
    assert warnings == []
    assert_runs_hold(results, root)
