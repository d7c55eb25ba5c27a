"""The driver: the one place that runs a suite.

    suite -> expand -> skip trials already ok -> start the run record -> scheduler -> each result into the
    store as it arrives -> [search.extend_edges: rounds of points beyond edge choices, the same way] ->
    finish the run record

`run_suite` plans, skips finished trials, writes every result (`ResultStore.add`, an atomic rewrite, so a
killed driver loses at most the trials in flight and the next run skips every trial whose row says
`ok`) and draws the progress view. A scheduler (`sift_bench.schedulers`) only turns specs into results.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from sift_bench.errors import SiftBenchError
from sift_bench.expand import expand
from sift_bench.progress import ProgressView
from sift_bench.results import ResultStore, trials_frame
from sift_bench.schedulers import RayTuneScheduler, RunTrial, Scheduler, SerialScheduler
from sift_bench.search import max_rounds, plan_extensions
from sift_bench.spec import TrialResult, TrialSpec
from sift_bench.suite import Suite


@dataclass
class RunSummary:
    results_dir: Path
    planned: int  # the suite's trials, plus the extension trials planned (`search.extend_edges`)
    skipped: int  # already ok in the store
    ran: int = 0
    ok: int = 0
    failed: int = 0
    extended: int = 0  # of `ran`: points the driver added beyond grid edges (`sift_bench.search`)
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
        if spec.extension:
            s.extended += 1
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
    """Run every trial of `suite` not yet `ok` in `results_dir` (default `results/<suite name>`), then, with
    `search.extend_edges`, the rounds of points beyond edge choices (`sift_bench.search`).

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
    if not todo and not suite.search.extend_edges:
        return summary
    scheduler = scheduler or make_scheduler(
        suite, serial=serial, address=address, max_failures=max_failures,
        max_concurrent=max_concurrent, run_trial=run_trial, isolate=isolate,
    )  # fmt: skip
    with _Session(suite, store, summary, scheduler, console, on_recorded) as session:
        session.run(todo)
        _extend_edges(suite, planned, store, summary, console, session)
    if summary.ran:
        overhead = summary.overhead
        console.print(
            f"Done in {summary.wall_seconds:.1f} s: {summary.ok} ok, {summary.failed} failed"
            + (f" ({summary.extended} beyond grid edges)" if summary.extended else "")
            + (f"; time outside trials {overhead:.1%} of {summary.slots} slot(s)" if overhead is not None else "")
            + (
                f"; early stopping saved {summary.epochs_saved} of {summary.trial_epochs} trial-epochs"
                if summary.early_stopping
                else ""
            )
            + f". Tables in {store.root}/"
        )
    return summary


def _extend_edges(
    suite: Suite, planned: list[TrialSpec], store: ResultStore, summary: RunSummary, console: Console, session: _Session
) -> None:
    """Rounds of `search.plan_extensions` on what the store holds now, each run before the next is planned;
    each round's specs join `planned`, so the next round sees them. A resumed run plans the same points from
    the same results: those already ok are skipped, not rerun. A failed extension trial stays planned, so it
    is never planned again and the rounds end (bound anyway)."""
    if not suite.search.extend_edges:
        return
    said: set[str] = set()
    for round_ in range(1, max_rounds(suite, planned) + 1):
        extra = plan_extensions(suite, planned, trials_frame(store.rows(), store.trials_path))
        for note in extra.notes:
            if note not in said:
                console.print(f"Edge kept: {note}", highlight=False)
                said.add(note)
        if not extra.specs:
            return
        planned += extra.specs
        done = store.done_ids()
        todo = [s for s in extra.specs if s.trial_id not in done]
        summary.planned += len(extra.specs)
        summary.skipped += len(extra.specs) - len(todo)
        already = f", {len(extra.specs) - len(todo)} already done" if len(todo) < len(extra.specs) else ""
        console.print(
            f"Extending {extra.cells} cell(s) beyond an edge: +{len(extra.specs)} trials (round {round_}){already}"
        )
        session.run(todo)


class _Session:
    """The scheduler's resources and the run record, both opened by the first batch with work to do (so a
    run with nothing to do starts no Ray and records no run) and closed once, after the last round."""

    def __init__(
        self,
        suite: Suite,
        store: ResultStore,
        summary: RunSummary,
        scheduler: Scheduler,
        console: Console,
        on_recorded: OnRecorded | None,
    ) -> None:
        self.suite, self.store, self.summary, self.scheduler = suite, store, summary, scheduler
        self.console, self.on_recorded = console, on_recorded
        self._stack = ExitStack()
        self._t0: float | None = None

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: Any) -> bool:
        return self._stack.__exit__(*exc)

    def run(self, todo: list[TrialSpec]) -> None:
        if not todo:
            return
        if self._t0 is None:
            self._open(todo)
        with ProgressView(len(todo), self.console) as view:
            self.scheduler.run(todo, _Recorder(self.store, self.summary, view, self.on_recorded))

    def _open(self, todo: list[TrialSpec]) -> None:
        preflight(self.suite)
        s = self.summary
        self._t0 = time.perf_counter()  # wall time includes joining or starting Ray: it is part of the run's cost
        s.slots = self._stack.enter_context(self.scheduler.connect(todo))
        if s.slots > 1:
            self.console.print(f"{self.scheduler.name}: up to {s.slots} trials at once")
        self.store.start_run(
            self.suite.name, self.suite.source, self.scheduler.name, planned=s.planned, skipped=s.skipped
        )
        self._stack.callback(self._finish)  # runs before the scheduler lets go, on errors and Ctrl-C too

    def _finish(self) -> None:
        s = self.summary
        s.wall_seconds = time.perf_counter() - (self._t0 or 0.0)
        overhead = s.overhead
        self.store.finish_run(
            planned=s.planned,  # the grid's trials and every extension planned by now
            skipped=s.skipped,
            ran=s.ran,
            ok=s.ok,
            failed=s.failed,
            extended=s.extended,
            wall_seconds=round(s.wall_seconds, 3),
            trial_seconds=round(s.trial_seconds, 3),
            slots=s.slots,
            overhead=None if overhead is None else round(overhead, 4),
            trial_epochs=s.trial_epochs,
            epochs_saved=s.epochs_saved,
        )
