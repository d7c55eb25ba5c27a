"""The driver and its schedulers: the driver alone writes results (a scripted scheduler), serial retries and
resume (fake trials, fast), the one-way imports; real Ray Tune runs of a tiny suite with two workers, a
second run that does no work, and a driver killed with SIGKILL mid-way that resumes with nothing lost and
nothing duplicated."""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from ray_cluster import kill_ray_processes
from rich.console import Console

from sift_bench.driver import run_suite
from sift_bench.expand import expand
from sift_bench.results import ResultStore, read_predictions, read_trials
from sift_bench.schedulers import SerialScheduler, TrialEvents
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
            trial_id=spec.trial_id, spec=spec, status="failed" if bad else "ok",
            error="CUDA out of memory" if bad else None, primary_metric="accuracy",
            best={"accuracy": 0.5 + spec.seed / 10}, epochs=[{"accuracy": 0.5 + spec.seed / 10}], best_epoch=1,
        )  # fmt: skip

    return run


def test_serial_run_retries_records_failures_and_resumes(tmp_path: Path) -> None:
    suite = validate_suite(SERIAL, "serial.yaml")
    calls: list[str] = []
    t0 = datetime.now(timezone.utc) - timedelta(milliseconds=1)  # started_at is to the millisecond
    s1 = run_suite(suite, tmp_path, serial=True, max_failures=2, console=quiet(),
                   run_trial=fake_trial({"rte"}, calls))  # fmt: skip
    assert (s1.planned, s1.ran, s1.ok, s1.failed) == (8, 8, 6, 2)
    assert len(calls) == 6 + 2 * 3  # each failing trial: 1 try + 2 retries
    rows = read_trials(tmp_path)
    assert len(rows) == 8 and sum(r["status"] == "failed" for r in rows) == 2
    assert all(r["error"] == "CUDA out of memory" for r in rows if r["status"] == "failed")
    # Where and when: in this process, so no GPU ids assigned and no node; each start time in this run.
    assert all(r["gpu_ids"] == [] and r["node"] is None for r in rows)
    starts = [datetime.fromisoformat(r["started_at"]) for r in rows]
    assert all(t0 <= t <= datetime.now(timezone.utc) for t in starts)
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


class Events:
    """Records what a scheduler reports, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    def started(self, spec: TrialSpec) -> None:
        self.log.append(("started", spec.seed))

    def retrying(self, spec: TrialSpec, result: TrialResult) -> None:
        self.log.append(("retrying", spec.seed))

    def finished(self, spec: TrialSpec, result: TrialResult, trial_seconds: float) -> None:
        self.log.append(("finished", (spec.seed, result.status)))


def test_serial_scheduler_reports_each_attempt_and_touches_no_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = [s for s in expand(validate_suite(SERIAL, "serial.yaml")) if s.task == "rte" and s.method == "full"]
    events: TrialEvents = Events()
    monkeypatch.chdir(tmp_path)  # a scheduler that wrote a results folder would write it here
    SerialScheduler(max_failures=1, run_trial=fake_trial({"rte"}, [])).run(specs, events)
    assert events.log == [
        ("started", 0), ("retrying", 0), ("finished", (0, "failed")),
        ("started", 1), ("retrying", 1), ("finished", (1, "failed")),
    ]  # fmt: skip
    assert list(tmp_path.iterdir()) == []


class Scripted:
    """A scheduler that finishes its trials in reverse order, two 'slots', 0.5 s each: the driver records."""

    name = "scripted"

    def __init__(self) -> None:
        self.given: list[str] = []

    def connect(self, todo: list[TrialSpec]) -> AbstractContextManager[int]:
        return nullcontext(2)

    def run(self, todo: list[TrialSpec], events: TrialEvents) -> None:
        self.given = [s.trial_id for s in todo]
        for spec in reversed(todo):
            events.started(spec)
            events.finished(spec, fake_trial(set(), [])(spec), 0.5)


def test_the_driver_records_what_any_scheduler_reports(tmp_path: Path) -> None:
    suite = validate_suite(SERIAL, "serial.yaml")
    first = run_suite(suite, tmp_path, serial=True, console=quiet(), run_trial=fake_trial({"rte"}, []))
    scripted = Scripted()
    summary = run_suite(suite, tmp_path, console=quiet(), scheduler=scripted)
    assert sorted(scripted.given) == sorted(first.failed_ids)  # only what is not ok yet
    assert (summary.ran, summary.ok, summary.slots, summary.trial_seconds) == (2, 2, 2, 1.0)
    rows = read_trials(tmp_path)
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    assert {r["method"] for r in rows} == {"full", "classifier_only"}  # the variant label, from the spec
    runs = ResultStore(tmp_path).read_manifest()["runs"]
    assert [r["scheduler"] for r in runs] == ["serial", "scripted"] and runs[-1]["slots"] == 2


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    return names | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}


def test_the_flow_goes_one_way() -> None:
    pkg = REPO / "sift_bench"
    # Schedulers and the progress view never see the store; only the driver writes results (search plans
    # extensions from a table the driver reads).
    for name in ("schedulers.py", "progress.py", "trial.py", "trial_setup.py", "expand.py", "search.py"):
        assert "sift_bench.results" not in imported_modules(pkg / name), name
    # Tasks and evaluators register through explicit imports in their package (as methods/ do), nowhere else.
    for name in ("suite.py", "analyze.py", "trial.py", "tasks/base.py", "tasks/__init__.py", "evaluators/__init__.py"):
        assert "pkgutil" not in imported_modules(pkg / name), name
    # Ray's public job API only.
    assert not any(m.startswith("ray._private") for m in imported_modules(pkg / "jobs.py"))
    # The trial imports neither the CLI nor the driver (no cycle back up), and `python -m sift_bench` works.
    code = "import sys, sift_bench.trial; print(sorted(m for m in sys.modules if m.startswith('sift_bench.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "sift_bench.cli" not in loaded and "sift_bench.driver" not in loaded and "schedulers" not in loaded
    version = subprocess.run([sys.executable, "-m", "sift_bench", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "sift-bench" in version.stdout


def test_job_client_finds_the_cluster_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sift_bench.errors import SiftBenchError
    from sift_bench.jobs import auth_headers

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RAY_AUTH_TOKEN", "")
    assert auth_headers() == {}  # no token anywhere: nothing sent
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-file\n")  # where `ray start --head` puts it
    assert auth_headers() == {"Authorization": "Bearer from-file"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert auth_headers() == {"Authorization": "Bearer from-env"}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert auth_headers() == {}
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(SiftBenchError, match="RAY_AUTH_TOKEN_PATH"):
        auth_headers()


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
    assert sorted(r["trial_id"] for r in trials) == sorted(s.trial_id for s in expand(suite))
    assert all(r["status"] == "ok" and r["metric.accuracy"] is not None for r in trials)
    assert {r["method"] for r in trials} == {"classifier_only", "full"}
    # Where each ran (one local node, no GPUs asked) and its 16 dev predictions, written by the driver.
    assert all(r["gpu_ids"] == [] and r["node"] and r["started_at"] for r in trials)
    assert len({r["node"] for r in trials}) == 1
    predictions = read_predictions(out)
    assert sorted((p["trial_id"], p["example"]) for p in predictions) == sorted(
        (r["trial_id"], i) for r in trials for i in range(16)
    )
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
    planned = {s.trial_id for s in expand(suite)}
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
