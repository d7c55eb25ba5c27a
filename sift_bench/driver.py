"""The driver: the one place that runs a suite.

    suite -> expand -> skip trials already ok -> start the run record -> scheduler -> each result into the
    store as it arrives -> finish the run record

`run_suite` plans, skips finished trials, writes every result (`ResultStore.add`, an atomic rewrite, so a
killed driver loses at most the trials in flight and the next run skips every trial whose row says
`ok`) and draws the progress view. A scheduler (`sift_bench.schedulers`) only turns specs into results.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from sift_bench.errors import SiftBenchError
from sift_bench.expand import expand
from sift_bench.progress import ProgressView
from sift_bench.results import ResultStore
from sift_bench.schedulers import RayTuneScheduler, RunTrial, Scheduler, SerialScheduler
from sift_bench.spec import TrialResult, TrialSpec
from sift_bench.suite import Suite


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
    early_stopping: bool = False  # some trial to run has `train.early_stopping`
    trial_epochs: int = 0  # the epochs the trials that ran planned (ceil of train.epochs, each)
    epochs_saved: int = 0  # of those, the epochs that early stopping left out

    @property
    def overhead(self) -> float | None:
        """Share of the available trial-slot time not spent inside run_trial (Ray start, scheduling, idle)."""
        if self.ran == 0 or self.wall_seconds <= 0:
            return None
        return max(0.0, 1.0 - self.trial_seconds / (self.wall_seconds * self.slots))


def default_results_dir(suite: Suite, results_root: str | Path = "results") -> Path:
    return Path(results_root) / suite.name


def trial_statuses(results_dir: str | Path) -> dict[str, str]:
    """trial id -> status (ok / failed) of every trial recorded in a results folder (none: empty)."""
    return {row["trial_id"]: row["status"] for row in ResultStore(results_dir).rows()}


def preflight(suite: Suite) -> None:
    """Checks that would otherwise fail only after training: each evaluator the suite names checks itself
    (`Evaluator.preflight`, e.g. HumanEval's sandbox)."""
    if suite.evaluators:
        from sift_bench.evaluators import EVALUATORS

        for name, raw in suite.evaluators.items():
            evaluator = EVALUATORS.get(name)
            evaluator.preflight(evaluator.parse_options(raw))


# Called with the results folder and each result once it is written and shown (`trackers.LiveTracking`). It
# runs in the driver, so workers never see it; it must not raise (LiveTracking turns its failures into a warning).
OnRecorded = Callable[[Path, TrialResult], None]


class _Recorder:
    """The driver's side of `TrialEvents`: each result into the store, the summary and the progress view."""

    def __init__(
        self, store: ResultStore, summary: RunSummary, view: ProgressView, on_recorded: OnRecorded | None = None
    ) -> None:
        self.store, self.summary, self.view, self.on_recorded = store, summary, view, on_recorded
        self.started_at: dict[str, float] = {}

    def started(self, spec: TrialSpec) -> None:
        self.started_at.setdefault(spec.trial_id, time.perf_counter())
        self.view.start(spec.trial_id)

    def retrying(self, spec: TrialSpec, result: TrialResult) -> None:
        self.view.retry(spec, result)

    def finished(self, spec: TrialSpec, result: TrialResult, trial_seconds: float) -> None:
        self.store.add(result)
        s = self.summary
        s.ran += 1
        s.trial_seconds += trial_seconds
        planned = math.ceil(spec.train.epochs)
        s.trial_epochs += planned
        if result.stopped_epoch is not None:
            s.epochs_saved += planned - result.stopped_epoch
        if result.status == "ok":
            s.ok += 1
        else:
            s.failed += 1
            s.failed_ids.append(spec.trial_id)
        elapsed = time.perf_counter() - self.started_at.get(spec.trial_id, time.perf_counter())
        self.view.finish(spec, result, elapsed)
        if self.on_recorded is not None:
            self.on_recorded(self.store.root, result)


def make_scheduler(
    suite: Suite,
    *,
    serial: bool = False,
    address: str | None = None,
    max_failures: int = 1,
    max_concurrent: int | None = None,
    run_trial: RunTrial | None = None,
    isolate: bool = True,
) -> Scheduler:
    """`serial`: one trial at a time (with `run_trial`, default the real one); else Ray Tune, local or
    `address`. `isolate`: each trial in a fresh process of its own (see `sift_bench.isolation`)."""
    if serial:
        return SerialScheduler(max_failures, run_trial, isolate)
    run_name = f"{suite.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return RayTuneScheduler(run_name, address, max_failures, max_concurrent, isolate)


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
    scheduler: Scheduler | None = None,
    isolate: bool = True,
    on_recorded: OnRecorded | None = None,
) -> RunSummary:
    """Run every trial of `suite` not yet `ok` in `results_dir` (default `results/<suite name>`).

    `scheduler` overrides the one `serial`/`address` pick. `on_recorded` is called after each result is
    written (the CLI's `--track` passes `trackers.LiveTracking`, which never raises). A process that drives
    Ray Tune may call `schedulers.configure_ray_driver()` first (the CLI does) for quiet Tune output."""
    if max_failures < 0:
        raise SiftBenchError(f"--max-failures must be >= 0, got {max_failures}.")
    if max_concurrent is not None and max_concurrent < 1:
        raise SiftBenchError(f"--max-concurrent must be >= 1, got {max_concurrent}.")
    console = console or Console()
    store = ResultStore(results_dir or default_results_dir(suite))
    planned = expand(suite)
    done = store.done_ids()
    todo = [s for s in planned if s.trial_id not in done]
    summary = RunSummary(store.root, planned=len(planned), skipped=len(planned) - len(todo))
    summary.early_stopping = any(s.train.early_stopping is not None for s in todo)
    console.print(
        f"Suite [bold]{suite.name}[/bold]: {len(planned)} trials, {summary.skipped} already done, "
        f"{len(todo)} to run -> {store.root}"
    )
    if not todo:
        return summary
    preflight(suite)
    scheduler = scheduler or make_scheduler(
        suite, serial=serial, address=address, max_failures=max_failures,
        max_concurrent=max_concurrent, run_trial=run_trial, isolate=isolate,
    )  # fmt: skip
    t0 = time.perf_counter()  # wall time includes joining or starting Ray: it is part of the run's cost
    with scheduler.connect(todo) as slots:
        summary.slots = slots
        if slots > 1:
            console.print(f"{scheduler.name}: up to {slots} trials at once")
        store.start_run(suite.name, suite.source, scheduler.name, planned=len(planned), skipped=summary.skipped)
        try:
            with ProgressView(len(todo), console) as view:
                scheduler.run(todo, _Recorder(store, summary, view, on_recorded))
        finally:
            summary.wall_seconds = time.perf_counter() - t0
            overhead = summary.overhead
            store.finish_run(
                ran=summary.ran,
                ok=summary.ok,
                failed=summary.failed,
                wall_seconds=round(summary.wall_seconds, 3),
                trial_seconds=round(summary.trial_seconds, 3),
                slots=summary.slots,
                overhead=None if overhead is None else round(overhead, 4),
                trial_epochs=summary.trial_epochs,
                epochs_saved=summary.epochs_saved,
            )
    console.print(
        f"Done in {summary.wall_seconds:.1f} s: {summary.ok} ok, {summary.failed} failed"
        + (f"; time outside trials {overhead:.1%} of {summary.slots} slot(s)" if overhead is not None else "")
        + (
            f"; early stopping saved {summary.epochs_saved} of {summary.trial_epochs} trial-epochs"
            if summary.early_stopping
            else ""
        )
        + f". Tables in {store.root}/"
    )
    return summary
