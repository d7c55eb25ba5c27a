"""Scheduling: serial retries and resume (fake trials, fast); real Ray Tune runs of a tiny suite with two
workers, a second run that does no work, and a driver killed with SIGKILL mid-way that resumes with
nothing lost and nothing duplicated."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq
import pytest
import yaml
from rich.console import Console

from sift_bench.expand import plan
from sift_bench.orchestrate import run_suite
from sift_bench.results import ResultStore, read_trials
from sift_bench.spec import TrialResult, TrialSpec
from sift_bench.suite import load_suite, validate_suite

REPO = Path(__file__).resolve().parents[2]


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"), width=120)


# ---------------------------------------------------------------------------------------------------------
# A real tiny model on disk (random 2-layer BERT + a 128-word tokenizer) and a suite using it.


def tiny_model_dir(root: Path) -> Path:
    from conftest import tiny_bert
    from transformers import BertTokenizer

    out = root / "tiny-bert"
    out.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz0123456789"]
    words += [f"w{i}" for i in range(128 - len(words))]
    (out / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(out / "vocab.txt")).save_pretrained(out)
    tiny_bert().save_pretrained(out)
    return out


def tiny_suite(root: Path, name: str, methods: dict[str, Any], seeds: list[int]) -> Path:
    data = {
        "name": name,
        "schema_version": 1,
        "models": [str(tiny_model_dir(root))],
        "tasks": ["mrpc"],  # the embedded copy: no data folder needed
        "methods": methods,
        "seeds": seeds,
        "train": {
            "epochs": 2,
            "batch_size": 8,
            "max_seq_len": 32,
            "max_train_samples": 16,
            "max_eval_samples": 16,
            "learning_rate": 1e-3,
            "precision": "fp32",
        },
        "resources": {"cpu": 1, "gpu": 0},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def ray_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private Ray temp dir (short: Ray's socket paths must stay under 107 bytes); afterwards, end any
    Ray process that still runs from it (only ours: the path is unique to this test)."""
    tmp = Path(tempfile.mkdtemp(prefix="sbr", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(tmp))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield tmp
    kill_ray_processes(tmp)
    shutil.rmtree(tmp, ignore_errors=True)


def kill_ray_processes(tmp: Path) -> None:
    """End the Ray processes of one test (and only those): the ones naming tmp on their command line,
    started with RAY_TMPDIR=tmp, or holding log files under tmp open."""
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            mine = any(str(tmp) in part for part in proc.info["cmdline"] or [])
            mine = mine or proc.environ().get("RAY_TMPDIR") == str(tmp)
            # Ray's agents overwrite their argv/environ (setproctitle) but keep their logs in tmp open.
            mine = mine or any(f.path.startswith(str(tmp)) for f in proc.open_files())
            if mine and proc.pid != os.getpid():
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass


# ---------------------------------------------------------------------------------------------------------
# Serial (no Ray): retries, failures recorded, resume.


SERIAL = {
    "name": "serial",
    "schema_version": 1,
    "models": ["m"],
    "tasks": ["mrpc", "rte"],
    "methods": {"full": {}, "classifier_only": {}},
    "seeds": [0, 1],
}


def fake_trial(fail_tasks: set[str], calls: list[str]):
    def run(spec: TrialSpec) -> TrialResult:
        calls.append(spec.trial_id)
        bad = spec.task in fail_tasks and spec.method == "full"
        return TrialResult(
            trial_id=spec.trial_id, spec=spec.model_dump(mode="json"), status="failed" if bad else "ok",
            error="CUDA out of memory" if bad else None, primary_metric="accuracy",
            best={"accuracy": 0.5 + spec.seed / 10}, epochs=[{"accuracy": 0.5 + spec.seed / 10}], best_epoch=1,
        )  # fmt: skip

    return run


def test_serial_run_retries_records_failures_and_resumes(tmp_path: Path) -> None:
    suite = validate_suite(SERIAL, "serial.yaml")
    calls: list[str] = []
    s1 = run_suite(suite, tmp_path, serial=True, max_failures=2, console=quiet(),
                   run_trial=fake_trial({"rte"}, calls))  # fmt: skip
    assert (s1.planned, s1.ran, s1.ok, s1.failed) == (8, 8, 6, 2)
    assert len(calls) == 6 + 2 * 3  # each failing trial: 1 try + 2 retries
    rows = read_trials(tmp_path)
    assert len(rows) == 8 and sum(r["status"] == "failed" for r in rows) == 2
    assert all(r["error"] == "CUDA out of memory" for r in rows if r["status"] == "failed")
    ok_before = {r["trial_id"]: r["finished_at"] for r in rows if r["status"] == "ok"}

    # Second run: only the failed trials run again; now they pass; ok rows are untouched.
    calls.clear()
    s2 = run_suite(suite, tmp_path, serial=True, console=quiet(), run_trial=fake_trial(set(), calls))
    assert (s2.skipped, s2.ran, s2.ok) == (6, 2, 2) and len(calls) == 2
    rows = read_trials(tmp_path)
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    assert {r["trial_id"]: r["finished_at"] for r in rows if r["trial_id"] in ok_before} == ok_before

    # Third run: nothing to do, nothing written.
    calls.clear()
    s3 = run_suite(suite, tmp_path, serial=True, console=quiet(), run_trial=fake_trial(set(), calls))
    assert (s3.skipped, s3.ran) == (8, 0) and calls == []
    manifest = ResultStore(tmp_path).read_manifest()
    assert [r["scheduler"] for r in manifest["runs"]] == ["serial", "serial"]


def test_serial_trial_that_raises_is_a_failed_row(tmp_path: Path) -> None:
    def boom(spec: TrialSpec) -> TrialResult:
        raise RuntimeError("bug in a trial")

    suite = validate_suite(SERIAL, "serial.yaml")
    summary = run_suite(suite, tmp_path, serial=True, max_failures=0, console=quiet(), run_trial=boom)
    assert summary.failed == 8
    assert all("RuntimeError: bug in a trial" in r["error"] for r in read_trials(tmp_path))


# ---------------------------------------------------------------------------------------------------------
# Ray Tune, for real.


@pytest.mark.slow
def test_ray_run_writes_tables_then_second_run_does_no_work(tmp_path: Path, ray_tmp: Path) -> None:
    suite = load_suite(tiny_suite(tmp_path, "tiny", {"classifier_only": {}, "full": {}}, seeds=[0, 1]))
    out = tmp_path / "results"
    s1 = run_suite(suite, out, max_failures=0, console=quiet())
    assert (s1.planned, s1.ran, s1.ok, s1.failed, s1.slots) == (4, 4, 4, 0, 2)  # two workers
    assert s1.trial_seconds > 0 and s1.overhead is not None
    trials = pq.read_table(out / "trials.parquet").to_pylist()
    assert sorted(r["trial_id"] for r in trials) == sorted(p.trial_id for p in plan(suite))
    assert all(r["status"] == "ok" and r["metric.accuracy"] is not None for r in trials)
    assert {r["method"] for r in trials} == {"classifier_only", "full"}
    evals = pq.read_table(out / "evals.parquet").to_pylist()
    assert {(e["trial_id"], e["epoch"]) for e in evals if e["metric"] == "accuracy"} == {
        (r["trial_id"], ep) for r in trials for ep in (1, 2)
    }
    manifest = ResultStore(out).read_manifest()
    assert manifest["runs"][0]["scheduler"] == "ray(local)" and manifest["finished_at"]

    s2 = run_suite(suite, out, console=quiet())
    assert (s2.skipped, s2.ran) == (4, 0)
    assert pq.read_table(out / "trials.parquet").to_pylist() == trials  # untouched


@pytest.mark.slow
def test_ray_driver_killed_midway_resumes_without_loss_or_duplicates(tmp_path: Path, ray_tmp: Path) -> None:
    # Four trials that train, plus two that always fail (an impossible budget): the suite goes on.
    methods = {"full": {}, "classifier_only": {}, "lora": {"budgets": ["90%"]}}
    path = tiny_suite(tmp_path, "killme", methods, seeds=[0, 1])
    out = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sift_bench", "run", str(path), "--results", str(out), "--max-failures", "0"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (out / "trials.parquet").exists():
            assert proc.poll() is None, "the driver exited before recording a trial"
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and whatever it started in its session
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        kill_ray_processes(ray_tmp)
    before = {r["trial_id"]: r for r in read_trials(out)}
    suite = load_suite(path)
    planned = {p.trial_id for p in plan(suite)}
    assert 1 <= len(before) < len(planned), "the kill should land mid-way"

    summary = run_suite(suite, out, max_failures=0, console=quiet())
    after = read_trials(out)
    ids = [r["trial_id"] for r in after]
    assert len(ids) == len(set(ids)) == len(planned) and set(ids) == planned  # nothing lost or duplicated
    ok_before = {t for t, r in before.items() if r["status"] == "ok"}
    assert summary.ran == len(planned) - len(ok_before)
    assert {r["trial_id"]: r["finished_at"] for r in after if r["trial_id"] in ok_before} == {
        t: before[t]["finished_at"] for t in ok_before
    }  # finished work was not redone
    failed = [r for r in after if r["status"] == "failed"]
    assert {r["method"] for r in failed} == {"lora"} and all("impossible" in r["error"] for r in failed)
    assert sum(r["status"] == "ok" for r in after) == 4
