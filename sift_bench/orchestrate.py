"""Schedule a suite's trials: in-process (`serial`), on Ray Tune (local or `address=`), or as a Ray Job.

The scheduler only schedules. `run_trial(spec) -> TrialResult` does the work wherever it runs; the driver
writes each finished trial to the `ResultStore` the moment it arrives (atomic rewrite), so a killed
driver loses at most the trials in flight, and the next run of the same suite skips every trial id whose
row says `ok`.

On Ray, the Tune param space is just the trial ids (`grid_search`), the specs travel once through
`tune.with_parameters`, and each trial asks `tune.with_resources` for its own `cpu`/`gpu`. A trial whose
result says `failed` raises after reporting, so Tune retries it up to `max_failures` times; the suite
itself never stops for a failed trial (`FailureConfig(fail_fast=False)`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sift_bench.errors import SiftBenchError
from sift_bench.expand import PlannedTrial, plan
from sift_bench.results import ResultStore
from sift_bench.spec import TrialResult, TrialSpec
from sift_bench.suite import Suite

RunTrial = Callable[[TrialSpec], TrialResult]


@dataclass
class RunSummary:
    results_dir: Path
    planned: int
    skipped: int  # already ok in the store
    ran: int = 0
    ok: int = 0
    failed: int = 0
    wall_seconds: float = 0.0  # scheduling wall time (Ray start-up included)
    trial_seconds: float = 0.0  # summed wall time inside run_trial, every attempt
    slots: int = 1  # trials that could run at once
    failed_ids: list[str] = field(default_factory=list)

    @property
    def overhead(self) -> float | None:
        """Share of the available trial-slot time not spent inside run_trial (Ray start, scheduling, idle)."""
        if self.ran == 0 or self.wall_seconds <= 0:
            return None
        return max(0.0, 1.0 - self.trial_seconds / (self.wall_seconds * self.slots))


def default_results_dir(suite: Suite, results_root: str | Path = "results") -> Path:
    return Path(results_root) / suite.name


def _describe(p: PlannedTrial) -> str:
    s = p.spec
    budget = f" {s.budget}" if s.budget is not None else ""
    grid = " " + ",".join(f"{k}={v}" for k, v in p.grid.items()) if p.grid else ""
    return f"{s.model} {s.task} {p.variant}{budget}{grid} seed={s.seed}"


def _score(result: TrialResult) -> str:
    if result.status != "ok":
        first = (result.error or "failed").strip().splitlines()
        return f"[red]failed[/red]: {first[-1][:300] if first else ''}"
    name = result.primary_metric
    value = result.best.get(name) if name else None
    return f"{name}={value:.4f}" if value is not None else "ok"


class ProgressView:
    """Live rich view: a bar over the trials to run, with ok / running / failed counts and an ETA."""

    def __init__(self, total: int, console: Console | None) -> None:
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "[green]{task.fields[ok]} ok[/green] [cyan]{task.fields[running]} running[/cyan] "
                "[red]{task.fields[failed]} failed[/red]"
            ),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task("trials", total=total, ok=0, running=0, failed=0)
        self.running: set[str] = set()
        self.ok = 0
        self.failed = 0

    def __enter__(self) -> ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _update(self, advance: int = 0) -> None:
        self.progress.update(self.task, advance=advance, ok=self.ok, running=len(self.running), failed=self.failed)

    def start(self, trial_id: str) -> None:
        self.running.add(trial_id)
        self._update()

    def retry(self, p: PlannedTrial, result: TrialResult) -> None:
        self.progress.console.print(f"[yellow]retry[/yellow] {_describe(p)}: {_score(result)}")

    def finish(self, p: PlannedTrial, result: TrialResult, seconds: float) -> None:
        self.running.discard(p.trial_id)
        if result.status == "ok":
            self.ok += 1
        else:
            self.failed += 1
        mark = "[green]✓[/green]" if result.status == "ok" else "[red]✗[/red]"
        self.progress.console.print(f"{mark} {p.trial_id} {_describe(p)}  {_score(result)}  ({seconds:.1f} s)")
        self._update(advance=1)


# ---------------------------------------------------------------------------------------------------------
# Entry point.


def run_suite(
    suite: Suite,
    results_dir: str | Path | None = None,
    *,
    serial: bool = False,
    address: str | None = None,
    max_failures: int = 1,
    max_concurrent: int | None = None,
    console: Console | None = None,
    run_trial: RunTrial | None = None,
) -> RunSummary:
    """Run every trial of `suite` not yet `ok` in `results_dir` (default `results/<suite name>`)."""
    if max_failures < 0:
        raise SiftBenchError(f"--max-failures must be >= 0, got {max_failures}.")
    console = console or Console()
    store = ResultStore(results_dir or default_results_dir(suite))
    planned = plan(suite)
    done = store.done_ids()
    todo = [p for p in planned if p.trial_id not in done]
    summary = RunSummary(store.root, planned=len(planned), skipped=len(planned) - len(todo))
    console.print(
        f"Suite [bold]{suite.name}[/bold]: {len(planned)} trials, {summary.skipped} already done, "
        f"{len(todo)} to run -> {store.root}"
    )
    if not todo:
        return summary
    scheduler = "serial" if serial else f"ray({address or 'local'})"
    store.start_run(suite.name, suite.source, scheduler, planned=len(planned), skipped=summary.skipped)
    t0 = time.perf_counter()
    try:
        with ProgressView(len(todo), console) as view:
            if serial:
                _run_serial(suite, todo, store, view, summary, max_failures, run_trial)
            else:
                _run_ray(suite, todo, store, view, summary, max_failures, address, max_concurrent)
    finally:
        summary.wall_seconds = time.perf_counter() - t0
        store.finish_run(
            ran=summary.ran,
            ok=summary.ok,
            failed=summary.failed,
            wall_seconds=round(summary.wall_seconds, 3),
            trial_seconds=round(summary.trial_seconds, 3),
            slots=summary.slots,
            overhead=None if summary.overhead is None else round(summary.overhead, 4),
        )
    overhead = summary.overhead
    console.print(
        f"Done in {summary.wall_seconds:.1f} s: {summary.ok} ok, {summary.failed} failed"
        + (f"; time outside trials {overhead:.1%} of {summary.slots} slot(s)" if overhead is not None else "")
        + f". Tables in {store.root}/"
    )
    return summary


def _record(suite: Suite, p: PlannedTrial, result: TrialResult, store: ResultStore, summary: RunSummary) -> None:
    store.add(result, suite=suite.name, variant=p.variant, grid=p.grid)
    summary.ran += 1
    if result.status == "ok":
        summary.ok += 1
    else:
        summary.failed += 1
        summary.failed_ids.append(p.trial_id)


def _failed_result(spec: TrialSpec, error: str) -> TrialResult:
    """A row for a trial whose worker died before it could report (killed, out of memory, a bug)."""
    return TrialResult(trial_id=spec.trial_id, spec=spec.model_dump(mode="json"), status="failed", error=error)


# ---------------------------------------------------------------------------------------------------------
# Serial: in-process, for debugging and for machines without Ray.


def _run_serial(
    suite: Suite,
    todo: list[PlannedTrial],
    store: ResultStore,
    view: ProgressView,
    summary: RunSummary,
    max_failures: int,
    run_trial: RunTrial | None,
) -> None:
    if run_trial is None:
        from sift_bench.trial import run_trial
    for p in todo:
        view.start(p.trial_id)
        t0 = time.perf_counter()
        for attempt in range(max_failures + 1):
            t1 = time.perf_counter()
            try:
                result = run_trial(p.spec)
            except Exception:  # run_trial should not raise; if it does, it is that trial's failure
                result = _failed_result(p.spec, traceback.format_exc())
            summary.trial_seconds += time.perf_counter() - t1
            if result.status == "ok" or attempt == max_failures:
                break
            view.retry(p, result)
        _record(suite, p, result, store, summary)
        view.finish(p, result, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------------
# Ray Tune.


def _trainable(config: dict[str, Any], specs: dict[str, dict[str, Any]]) -> None:
    """Runs in a Ray worker: one trial, reported once; a failed trial raises so Tune retries it."""
    from ray import tune

    from sift_bench.trial import run_trial

    # Relative data/model paths in a suite mean "relative to where `sift-bench run` started".
    orig = os.environ.get("TUNE_ORIG_WORKING_DIR")
    if orig and os.path.isdir(orig):
        os.chdir(orig)
    spec = TrialSpec.model_validate(specs[config["trial_id"]])
    t0 = time.perf_counter()
    result = run_trial(spec)
    seconds = time.perf_counter() - t0
    _release_memory()  # the actor is reused for the next trial (reuse_actors=True)
    tune.report({"sift_result": result.model_dump_json(), "sift_trial_seconds": seconds})
    if result.status != "ok":
        raise RuntimeError(f"trial {spec.trial_id} failed: {result.error}")


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def _ray_session(address: str | None) -> Iterator[None]:
    import ray

    if ray.is_initialized():
        yield
        return
    env_address = os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": True, "logging_level": "ERROR"}
    if address or env_address:
        ray.init(address=address or env_address, **kwargs)
    else:
        # A private local instance: no dashboard (nothing to secure), gone when the run ends.
        ray.init(include_dashboard=False, **kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def _slots(todo: list[PlannedTrial], max_concurrent: int | None) -> int:
    """How many trials fit at once on the cluster (for the overhead figure and the user's information)."""
    import ray

    res = ray.cluster_resources()
    first = todo[0].spec.resources
    fit = math.floor(res.get("CPU", 1) / first.cpu) if first.cpu else len(todo)
    if first.gpu:
        fit = min(fit, math.floor(res.get("GPU", 0) / first.gpu))
    fit = max(1, fit)
    return max(1, min(len(todo), fit, max_concurrent or fit))


def _run_ray(
    suite: Suite,
    todo: list[PlannedTrial],
    store: ResultStore,
    view: ProgressView,
    summary: RunSummary,
    max_failures: int,
    address: str | None,
    max_concurrent: int | None,
) -> None:
    # Trials run in the directory `sift-bench run` started in (relative paths in suites), and Tune's own
    # per-trial CSV/JSON/TensorBoard loggers are off: the store is the record.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    from ray import tune

    # Tune logs every trial error with a full traceback; the store's error column and the one-line
    # summary per trial are the record, so keep the terminal to the progress view.
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    by_id = {p.trial_id: p for p in todo}
    specs = {p.trial_id: p.spec.model_dump(mode="json") for p in todo}
    resources = {p.trial_id: p.spec.resources.model_dump() for p in todo}
    started: dict[str, float] = {}
    recorded: set[str] = set()

    class StoreCallback(tune.Callback):
        """Driver side: write each trial's row as soon as its result arrives."""

        def __reduce__(self) -> tuple:
            # Tune pickles its run config into the experiment state; this callback holds the live store
            # and progress view (locks), which only mean something in this driver process.
            return (tune.Callback, ())

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            tid = trial.config["trial_id"]
            started.setdefault(tid, time.perf_counter())
            view.start(tid)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            if "sift_result" not in result:
                return
            tid = trial.config["trial_id"]
            res = TrialResult.model_validate_json(result["sift_result"])
            summary.trial_seconds += float(result.get("sift_trial_seconds", 0.0))
            p = by_id[tid]
            if res.status != "ok" and trial.num_failures < max_failures:
                view.retry(p, res)  # Tune will run it again; record only the last attempt
                return
            _record(suite, p, res, store, summary)
            recorded.add(tid)
            view.finish(p, res, time.perf_counter() - started.get(tid, time.perf_counter()))

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            tid = trial.config["trial_id"]
            if tid in recorded:
                return  # its failed result was reported and stored already
            error = trial.get_error() or "the trial's worker died without reporting a result"
            res = _failed_result(by_id[tid].spec, str(error))
            _record(suite, by_id[tid], res, store, summary)
            recorded.add(tid)
            view.finish(by_id[tid], res, time.perf_counter() - started.get(tid, time.perf_counter()))

    trainable = tune.with_resources(
        tune.with_parameters(_trainable, specs=specs),
        lambda config: tune.PlacementGroupFactory([_ray_resources(resources[config["trial_id"]])]),
    )
    with _ray_session(address):
        summary.slots = _slots(todo, max_concurrent)
        view.progress.console.print(f"Ray: up to {summary.slots} trial(s) at once")
        storage = Path(tempfile.gettempdir()) / "sift-bench-tune"
        tuner = tune.Tuner(
            trainable,
            param_space={"trial_id": tune.grid_search([p.trial_id for p in todo])},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"{suite.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(storage),
                failure_config=tune.FailureConfig(max_failures=max_failures, fail_fast=False),
                callbacks=[StoreCallback()],
                verbose=0,
            ),
        )
        tuner.fit()  # errors are data in the ResultGrid; the store already holds every row


def _ray_resources(r: dict[str, float]) -> dict[str, float]:
    out = {"CPU": float(r["cpu"])}
    if r.get("gpu"):
        out["GPU"] = float(r["gpu"])
    return out


# ---------------------------------------------------------------------------------------------------------
# Ray Jobs: send a whole suite run to a cluster.


def _job_client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        # As `ray.init` does when it joins a cluster: with RAY_AUTH_MODE unset, use the local token
        # (RAY_AUTH_TOKEN, or ~/.ray/auth_token) when there is one, since `ray start` turned auth on then.
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )

        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)  # no "auth enabled" banner
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    except ImportError:  # Ray without token authentication
        pass
    try:
        return JobSubmissionClient(address)
    except Exception as e:  # connection refused, bad URL, no dashboard on the head
        raise SiftBenchError(
            f"Cannot reach the Ray job server at {address}: {e}. Start the head with `ray start --head` "
            "(dashboard on port 8265) and pass its address, e.g. --address http://HEAD:8265."
        ) from None


def submit_suite(
    suite_path: str | Path,
    address: str,
    *,
    results_dir: str | None = None,
    working_dir: str | Path = ".",
    max_failures: int = 1,
    extra_args: list[str] | None = None,
) -> str:
    """Submit `sift-bench run SUITE` as a Ray Job with `working_dir` uploaded; return the job id."""
    from sift_bench.suite import load_suite

    load_suite(suite_path)  # a bad suite fails here, not on the cluster
    wd = Path(working_dir).resolve()
    suite_abs = Path(suite_path).resolve()
    try:
        rel = suite_abs.relative_to(wd)
    except ValueError:
        raise SiftBenchError(
            f"The suite {suite_path} is outside the working dir {wd} that is uploaded to the cluster; "
            "pass --working-dir pointing at a folder that contains it."
        ) from None
    # `python -m sift_bench` runs the uploaded copy of the package when the working dir holds one.
    args = ["python", "-m", "sift_bench", "run", rel.as_posix(), "--max-failures", str(max_failures)]
    if results_dir:
        args += ["--results", results_dir]
    args += extra_args or []
    entrypoint = shlex.join(args)
    runtime_env = {"working_dir": str(wd), "excludes": [".git", "results/", "*.parquet", "__pycache__"]}
    client = _job_client(address)
    try:
        return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
    except Exception as e:
        raise SiftBenchError(f"Ray refused the job: {e}") from None


def job_status(address: str, job_id: str) -> dict[str, Any]:
    client = _job_client(address)
    try:
        info = client.get_job_info(job_id)
    except Exception as e:
        raise SiftBenchError(f"No job '{job_id}' on {address}: {e}") from None
    return {
        "job_id": job_id,
        "status": str(info.status.value if hasattr(info.status, "value") else info.status),
        "message": info.message,
        "entrypoint": info.entrypoint,
        "start_time": info.start_time,
        "end_time": info.end_time,
    }


def job_logs(address: str, job_id: str, follow: bool = False, write: Callable[[str], None] = print) -> None:
    client = _job_client(address)
    try:
        if not follow:
            write(client.get_job_logs(job_id))
            return
        import asyncio

        async def tail() -> None:
            async for chunk in client.tail_job_logs(job_id):
                write(chunk)

        asyncio.run(tail())
    except SiftBenchError:
        raise
    except Exception as e:
        raise SiftBenchError(f"Cannot read the logs of job '{job_id}' on {address}: {e}") from None


def wait_for_job(address: str, job_id: str, timeout_s: float = 600, poll_s: float = 2.0) -> str:
    """Block until the job ends; return its final status (SUCCEEDED, FAILED, STOPPED)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = job_status(address, job_id)["status"]
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        if time.monotonic() > deadline:
            raise SiftBenchError(f"Job {job_id} still {status} after {timeout_s:.0f} s.")
        time.sleep(poll_s)


def plan_rows(suite: Suite, results_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The plan as rows for `sift-bench plan`, with each trial's state in an existing store."""
    root = Path(results_dir) if results_dir else default_results_dir(suite)
    states: dict[str, str] = {}
    if (root / "trials.parquet").exists():
        states = {r["trial_id"]: r["status"] for r in ResultStore(root).rows()}
    rows = []
    for p in plan(suite):
        s = p.spec
        rows.append(
            {
                "trial_id": p.trial_id,
                "model": s.model,
                "task": s.task,
                "method": p.variant,
                "budget": "" if s.budget is None else str(s.budget),
                "seed": s.seed,
                "lr": s.train.learning_rate,
                "epochs": s.train.epochs,
                "grid": json.dumps(p.grid) if p.grid else "",
                "resources": f"cpu={s.resources.cpu:g} gpu={s.resources.gpu:g}",
                "state": {"ok": "done", "failed": "failed"}.get(states.get(p.trial_id, ""), "to run"),
            }
        )
    return rows
