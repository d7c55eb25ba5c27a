"""Experiment trackers (MLflow, TensorBoard, Weights & Biases): results where users already look.

Two ways in, one code path: `export` sends a results folder afterwards (`sift-bench export`), and
`LiveTracking` is the driver's `on_recorded` callback during a run (`sift-bench run --track`), which
exports each trial right after the driver wrote it. Both read the trial back from the Parquet tables
(`records.load_records`), so a live run and a later export log the same run, and re-exporting updates it.

Each tracker is one module with one class, named here by a lazy "module:Class" string so that the
tracker libraries (optional extras) are imported only when that tracker is used. A tracker has
`__init__(where, project)` and `log(records)`; it keys runs by trial id, so logging a trial again updates
its run instead of adding one.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sift_bench.errors import SiftBenchError
from sift_bench.registry import Registry
from sift_bench.spec import TrialResult
from sift_bench.trackers.records import TrialRecord, load_records


class Tracker(Protocol):
    def log(self, records: Sequence[TrialRecord]) -> None: ...


@dataclass(frozen=True)
class TrackerInfo:
    name: str
    factory: str  # "module:Class", imported on first use
    requires: str  # the library's import name
    where: str  # what the location (--uri / --dir, or --track NAME=WHERE) is, and its default
    option: str  # the `export` option that names the location

    def install_line(self) -> str:
        return f"pip install -e '.[{self.name}]'"


TRACKERS: Registry[TrackerInfo] = Registry("tracker")
TRACKERS.add("mlflow", TrackerInfo(
    "mlflow", "sift_bench.trackers.mlflow_tracker:MlflowTracker", "mlflow",
    "a tracking URI (default: $MLFLOW_TRACKING_URI, else MLflow's own default, sqlite:///mlflow.db)", "--uri",
))  # fmt: skip
TRACKERS.add("tensorboard", TrackerInfo(
    "tensorboard", "sift_bench.trackers.tensorboard_tracker:TensorBoardTracker", "tensorboard",
    "a log folder (default: runs)", "--dir",
))  # fmt: skip
TRACKERS.add("wandb", TrackerInfo(
    "wandb", "sift_bench.trackers.wandb_tracker:WandbTracker", "wandb",
    "the folder W&B writes its wandb/ folder into (default: $WANDB_DIR, else the current folder)", "--dir",
))  # fmt: skip


def tracker_info(name: str) -> TrackerInfo:
    """The tracker called `name`, with its library installed; otherwise a SiftBenchError with the fix."""
    info = TRACKERS.get(name)
    if importlib.util.find_spec(info.requires) is None:
        raise SiftBenchError(f"{name} is not installed: {info.install_line()} (the {name} extra).")
    return info


def open_tracker(name: str, where: str | None = None, project: str | None = None) -> Tracker:
    """A connected tracker. `where`: see TRACKERS; `project`: the MLflow experiment, W&B project or
    TensorBoard subfolder (default: each trial's suite name)."""
    info = tracker_info(name)
    module, _, cls = info.factory.partition(":")
    return getattr(importlib.import_module(module), cls)(where, project)


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:500]


def export(results: str | Path, name: str, where: str | None = None, project: str | None = None) -> int:
    """Send every trial of a results folder to tracker `name`; returns how many. A tracker that fails
    (down, misconfigured) is a SiftBenchError naming it; the results folder is only read."""
    records = load_records(results)  # bad input (no such folder) fails before the tracker is touched
    tracker_info(name)
    try:
        open_tracker(name, where, project).log(records)
    except SiftBenchError:
        raise
    except Exception as e:  # any library error: one line, not the library's traceback
        info = TRACKERS.get(name)
        raise SiftBenchError(
            f"Export to {name} failed ({first_line(e)}); check {info.option} ({info.where})."
        ) from None
    return len(records)


class LiveTracking:
    """The driver's `on_recorded` callback for `run --track NAME[=WHERE]`: logs each trial once the driver
    has written it. The first failure (tracker down or misconfigured) prints one warning and stops the
    logging for the rest of the run; the results folder is complete either way, and `sift-bench export`
    fills the tracker in later."""

    def __init__(self, spec: str, warn: Callable[[str], None]) -> None:
        name, _, where = spec.partition("=")
        self.info = tracker_info(name.strip())  # a missing library is bad input: fail before any training
        self.where = where.strip() or None
        self.warn = warn
        self.tracker: Tracker | None = None
        self.logged = 0
        self.failed: str | None = None

    def __call__(self, results_dir: Path, result: TrialResult) -> None:
        if self.failed is not None:
            return
        try:
            if self.tracker is None:
                self.tracker = open_tracker(self.info.name, self.where)
            self.tracker.log(load_records(results_dir, [result.trial_id]))
            self.logged += 1
        except Exception as e:  # never let the tracker cost a trial: the results are already written
            self.failed = first_line(e)
            where = f" {self.info.option} {self.where}" if self.where else ""
            self.warn(
                f"{self.info.name} tracking stopped after {self.logged} trial(s): {self.failed}. The results "
                f"in {results_dir} are complete; send them later with "
                f"`sift-bench export {results_dir} --to {self.info.name}{where}`."
            )
