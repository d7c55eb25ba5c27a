"""Schedulers turn planned trials into results: in this process (`SerialScheduler`) or on Ray Tune, local or
on a cluster (`RayTuneScheduler`). They only schedule: `run_trial(spec) -> TrialResult` does the work
wherever it runs, and every event goes back to the driver through `TrialEvents` (the driver writes the
results and draws the progress view; a scheduler never touches the results store).

On Ray, the Tune param space is just the trial ids (`grid_search`), the specs travel once through
`tune.with_parameters`, and each trial asks `tune.with_resources` for its own `cpu`/`gpu`. A trial whose
result says `failed` raises after reporting, so Tune retries it up to `max_failures` times; the suite
itself never stops for a failed trial (`FailureConfig(fail_fast=False)`).

Both run each trial in a fresh process of its own by default (`isolate=True`, `sift_bench.isolation`): a
process that ran a trial keeps that trial's memory, so every later trial in it would record some of it as its
own. `isolate=False` runs trials in the scheduler's process (serial) or the reused Ray worker: cheaper to
start, and a debugger can step in, but only the first trial's memory figure is then its alone.

Where and when a trial ran is the scheduler's to say, so it stamps each result: `started_at` and `isolated`
(both), and on Ray the GPU ids Ray assigned (`gpu_ids`) and the node (`node`); a Ray trial whose
CUDA_VISIBLE_DEVICES is not exactly its assigned ids fails before it starts, since it would train on a GPU it
was not given.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timezone
from typing import Any, Protocol

from sift_bench.cluster import ray_session
from sift_bench.isolation import failed_result, run_isolated
from sift_bench.spec import TrialResult, TrialSpec

RunTrial = Callable[[TrialSpec], TrialResult]


class TrialEvents(Protocol):
    """What a scheduler reports, always from the driver's process, as trials start and finish."""

    def started(self, spec: TrialSpec) -> None: ...

    def retrying(self, spec: TrialSpec, result: TrialResult) -> None:
        """An attempt failed and the trial runs again; `result` is that attempt's."""

    def finished(self, spec: TrialSpec, result: TrialResult, trial_seconds: float) -> None:
        """The trial's final result; `trial_seconds` sums the time inside `run_trial` over its attempts."""


class Scheduler(Protocol):
    name: str  # recorded with the run: serial, ray(local), ray(HOST:PORT)

    def connect(self, todo: list[TrialSpec]) -> AbstractContextManager[int]:
        """Get the resources (join or start Ray); yields how many of `todo` (the first batch to run) can run
        at once. A cluster that cannot be reached fails here, before the driver writes anything."""

    def run(self, todo: list[TrialSpec], events: TrialEvents) -> None:
        """Inside `connect`: run every trial of `todo` once (plus retries), reporting each through `events`. The
        driver may call it again inside the same `connect` (each round of edge extensions)."""


def pick_runner(run_trial: RunTrial | None, isolate: bool) -> tuple[RunTrial, bool]:
    """The function that runs a trial here, and whether each trial gets a process of its own. A `run_trial`
    given by the caller (tests, tools) runs in this process: a subprocess could not call it."""
    if run_trial is not None:
        return run_trial, False
    if isolate:
        return run_isolated, True
    from sift_bench.trial import run_trial as in_process

    return in_process, False


def utc_now() -> str:
    """ISO-8601 UTC to the millisecond: start times of trials a second apart must still order correctly."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def device_mismatch(gpu_ids: list[str], visible: str | None) -> str | None:
    """Why a trial must not run on the GPUs it sees, or None: with GPUs assigned, CUDA_VISIBLE_DEVICES must
    name exactly them (Ray sets it so, unless RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES or a node's own
    setup overrides it)."""
    if not gpu_ids or visible == ",".join(gpu_ids):
        return None
    shown = "unset" if visible is None else repr(visible)
    return (
        f"Ray assigned GPU id(s) {','.join(gpu_ids)} to this trial but CUDA_VISIBLE_DEVICES is {shown}, so it "
        "would train on a GPU it was not given. Check the node's environment: unset "
        "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES overrides in the worker setup."
    )


# ---------------------------------------------------------------------------------------------------------
# Serial: in-process, for debugging and for machines without Ray.


class SerialScheduler:
    name = "serial"

    def __init__(self, max_failures: int = 1, run_trial: RunTrial | None = None, isolate: bool = True) -> None:
        self.max_failures = max_failures
        self.run_trial = run_trial
        self.isolate = isolate

    def connect(self, todo: list[TrialSpec]) -> AbstractContextManager[int]:
        return nullcontext(1)

    def run(self, todo: list[TrialSpec], events: TrialEvents) -> None:
        run_trial, isolated = pick_runner(self.run_trial, self.isolate)
        for spec in todo:
            events.started(spec)
            seconds = 0.0
            for attempt in range(self.max_failures + 1):
                started_at = utc_now()
                t0 = time.perf_counter()
                try:
                    result = run_trial(spec)
                except Exception:  # run_trial should not raise; if it does, it is that trial's failure
                    result = failed_result(spec, traceback.format_exc())
                seconds += time.perf_counter() - t0
                # In this process: no GPU ids were assigned (the trial sees every GPU) and there is no node.
                stamp = {"started_at": started_at, "gpu_ids": [], "node": None, "isolated": isolated}
                result = result.model_copy(update=stamp)
                if result.status == "ok" or attempt == self.max_failures:
                    break
                events.retrying(spec, result)
            events.finished(spec, result, seconds)


# ---------------------------------------------------------------------------------------------------------
# Ray Tune.


def configure_ray_driver() -> None:
    """Process-wide settings for a process that drives Ray Tune; the CLI calls it once before `run`.

    Trials run in the directory the driver started in (relative paths in suites), Tune's own per-trial
    CSV/JSON/TensorBoard loggers are off (the results store is the record), and Tune's per-trial error
    tracebacks stay off the terminal (the error column and the one-line summary per trial say it).
    """
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)


def _trainable(config: dict[str, Any], specs: dict[str, dict[str, Any]], isolate: bool) -> None:
    """Runs in a Ray worker: one trial, reported once; a failed trial raises so Tune retries it."""
    import ray
    from ray import tune

    run_trial, isolated = pick_runner(None, isolate)

    # Relative data/model paths in a suite mean "relative to where `sift-bench run` started".
    orig = os.environ.get("TUNE_ORIG_WORKING_DIR")
    if orig and os.path.isdir(orig):
        os.chdir(orig)
    spec = TrialSpec.model_validate(specs[config["trial_id"]])
    context = ray.get_runtime_context()
    gpu_ids = [str(i) for i in context.get_accelerator_ids().get("GPU", [])]
    started_at = utc_now()
    t0 = time.perf_counter()
    mismatch = device_mismatch(gpu_ids, os.environ.get("CUDA_VISIBLE_DEVICES"))
    result = failed_result(spec, mismatch) if mismatch else run_trial(spec)
    seconds = time.perf_counter() - t0
    stamp = {"gpu_ids": gpu_ids, "node": context.get_node_id(), "started_at": started_at, "isolated": isolated}
    result = result.model_copy(update=stamp)
    tune.report({"sift_result": result.model_dump_json(), "sift_trial_seconds": seconds})
    if result.status != "ok":
        raise RuntimeError(f"trial {spec.trial_id} failed: {result.error}")


def _slots(todo: list[TrialSpec], max_concurrent: int | None) -> int:
    """How many trials fit at once on the cluster (for the overhead figure and the user's information)."""
    import ray

    res = ray.cluster_resources()
    first = todo[0].resources
    fit = math.floor(res.get("CPU", 1) / first.cpu) if first.cpu else len(todo)
    if first.gpu:
        fit = min(fit, math.floor(res.get("GPU", 0) / first.gpu))
    fit = max(1, fit)
    return max(1, min(len(todo), fit, max_concurrent or fit))


def _ray_resources(r: dict[str, float]) -> dict[str, float]:
    out = {"CPU": float(r["cpu"])}
    if r.get("gpu"):
        out["GPU"] = float(r["gpu"])
    return out


class RayTuneScheduler:
    def __init__(
        self,
        run_name: str,
        address: str | None = None,
        max_failures: int = 1,
        max_concurrent: int | None = None,
        isolate: bool = True,
    ) -> None:
        self.run_name = run_name  # Tune's experiment name (a folder under the temp dir)
        self.address = address
        self.max_failures = max_failures
        self.max_concurrent = max_concurrent
        self.isolate = isolate
        self.name = f"ray({address or 'local'})"
        self._fits = 0  # the driver may call `run` once per round (edge extensions): one Tune experiment each

    @contextmanager
    def connect(self, todo: list[TrialSpec]) -> Iterator[int]:
        with ray_session(self.address):  # joins the cluster (its token included), or a private local Ray
            yield _slots(todo, self.max_concurrent)

    def run(self, todo: list[TrialSpec], events: TrialEvents) -> None:
        from ray import tune

        self._fits += 1
        name = self.run_name if self._fits == 1 else f"{self.run_name}-{self._fits}"
        by_id = {s.trial_id: s for s in todo}
        specs = {s.trial_id: s.model_dump(mode="json") for s in todo}
        resources = {s.trial_id: s.resources.model_dump() for s in todo}
        seconds: dict[str, float] = {}  # time inside run_trial, every reported attempt
        reported: set[str] = set()
        max_failures = self.max_failures

        class Relay(tune.Callback):
            """Driver side: pass each trial's start and result on to the driver as they arrive."""

            def __reduce__(self) -> tuple:
                # Tune pickles its run config into the experiment state; this callback holds the driver's
                # live event sink (locks, a console), which only means something in this process.
                return (tune.Callback, ())

            def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                events.started(by_id[trial.config["trial_id"]])

            def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
                if "sift_result" not in result:
                    return
                tid = trial.config["trial_id"]
                res = TrialResult.model_validate_json(result["sift_result"])
                seconds[tid] = seconds.get(tid, 0.0) + float(result.get("sift_trial_seconds", 0.0))
                if res.status != "ok" and trial.num_failures < max_failures:
                    events.retrying(by_id[tid], res)  # Tune runs it again; only the last attempt counts
                    return
                reported.add(tid)
                events.finished(by_id[tid], res, seconds[tid])

            def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                tid = trial.config["trial_id"]
                if tid in reported:
                    return  # its failed result was reported already
                error = trial.get_error() or "the trial's worker died without reporting a result"
                reported.add(tid)
                events.finished(by_id[tid], failed_result(by_id[tid], str(error)), seconds.get(tid, 0.0))

        trainable = tune.with_resources(
            tune.with_parameters(_trainable, specs=specs, isolate=self.isolate),
            lambda config: tune.PlacementGroupFactory([_ray_resources(resources[config["trial_id"]])]),
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"trial_id": tune.grid_search([s.trial_id for s in todo])},
            # Reusing the worker saves its start; with isolation it only ever holds the child's result.
            tune_config=tune.TuneConfig(max_concurrent_trials=self.max_concurrent, reuse_actors=True),
            run_config=tune.RunConfig(
                name=name,
                storage_path=os.path.join(tempfile.gettempdir(), "sift-bench-tune"),
                failure_config=tune.FailureConfig(max_failures=max_failures, fail_fast=False),
                callbacks=[Relay()],
                verbose=0,
            ),
        )
        tuner.fit()  # errors are data in the ResultGrid; every trial was reported through `events`
