"""What a tracker receives: one `TrialRecord` per trial, read from a results folder.

Every tracker logs the same record, so MLflow, TensorBoard and W&B show one run the same way:

- params: the flattened spec (`train.learning_rate`, `method_options.rank`, `budget`, ...) plus the resolved
  budget knob and the trainable parameter count;
- per-epoch metrics: evals.parquet as it is (held-out ones included), step = epoch;
- final metrics: the trials row's `metric.<name>` columns, logged as `final/<name>` at the scored epoch
  (`scored_epoch`, else `best_epoch`);
- tags: suite, trial_id, config_key, method, budget, seed, status and the git commit of the run manifest
  (plus model, task, variant and, for a failed trial, its error).

Records are read back from the Parquet tables, never built from a live TrialResult, so a trial logged
during a run and the same trial exported afterwards are the same run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from sift_bench.errors import SiftBenchError
from sift_bench.results import read_evals, read_manifest, read_trials
from sift_bench.schema import row_spec
from sift_bench.spec import TrialSpec

FINAL_PREFIX = "final/"
Param = str | int | float | bool | None


@dataclass(frozen=True)
class TrialRecord:
    suite: str
    trial_id: str
    name: str  # a run name people can read: method, budget, grid point, model, task, seed
    params: dict[str, Param]
    tags: dict[str, str]
    epochs: dict[int, dict[str, float]]  # epoch (1-based) -> metric -> value, as in evals.parquet
    final: dict[str, float] = field(default_factory=dict)  # metric name -> value at `final_epoch`
    final_epoch: int | None = None
    status: str = "ok"
    error: str | None = None
    started_ms: int | None = None  # Unix time in ms, for trackers that show when a run ran
    finished_ms: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def final_metrics(self) -> dict[str, float]:
        """The final metrics under the names every tracker logs them with (`final/<name>`)."""
        return {f"{FINAL_PREFIX}{k}": v for k, v in self.final.items()}


def flatten(spec: dict[str, Any]) -> dict[str, Param]:
    """A nested spec as `a.b` keys (pandas' json_normalize); lists become JSON text. Empty dicts vanish."""
    flat = pd.json_normalize(spec, sep=".").iloc[0].to_dict()
    return {k: _param(v) for k, v in sorted(flat.items())}


def _param(value: Any) -> Param:
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def param_text(value: Param) -> str:
    """A param as the text trackers with string-only params (MLflow, TensorBoard hparams) store."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def run_name(spec: TrialSpec) -> str:
    """Method first: tracker UIs cut long run names at the right."""
    budget = f" {spec.budget}" if spec.budget is not None else ""
    grid = " " + ",".join(f"{k}={v}" for k, v in spec.grid.items()) if spec.grid else ""
    return f"{spec.label}{budget}{grid} · {spec.model} {spec.task} seed={spec.seed}"


def _ms(iso: str | None) -> int | None:
    if not iso:
        return None
    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1000)
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any) -> int | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)


def record(row: dict[str, Any], evals: Iterable[dict[str, Any]], manifest: dict[str, Any], source: Path) -> TrialRecord:
    """One trial's record from its trials row, its evals rows and the folder's manifest."""
    spec = row_spec(row, source)
    params = flatten(spec.model_dump(mode="json"))
    params |= {
        "budget": None if spec.budget is None else str(spec.budget),
        "knob": row.get("knob"),
        "knob_value": _number(row.get("knob_value")),
        "trainable_params": _int(row.get("trainable_params")),
    }
    tags = {
        "suite": str(row["suite"]),
        "trial_id": str(row["trial_id"]),
        "config_key": str(row["config_key"]),
        "model": spec.model,
        "task": spec.task,
        "method": spec.method,
        "variant": spec.label,
        "budget": "none" if spec.budget is None else str(spec.budget),
        "seed": str(spec.seed),
        "status": str(row["status"]),
        "git_commit": str(manifest.get("git_commit") or "unknown"),
        "git_dirty": str(manifest.get("git_dirty")).lower(),
    }
    if row.get("error"):
        tags["error"] = str(row["error"])
    epochs: dict[int, dict[str, float]] = {}
    for e in evals:
        epochs.setdefault(int(e["epoch"]), {})[str(e["metric"])] = float(e["value"])
    final = {k[len("metric.") :]: float(v) for k, v in row.items() if k.startswith("metric.") and v is not None}
    final = {k: v for k, v in final.items() if not math.isnan(v)}  # a column other trials have, this one not
    started, finished = _ms(row.get("started_at")), _ms(row.get("finished_at"))
    return TrialRecord(
        suite=tags["suite"],
        trial_id=tags["trial_id"],
        name=run_name(spec),
        params=params,
        tags=tags,
        epochs=dict(sorted(epochs.items())),
        final=final,
        final_epoch=_int(row.get("scored_epoch")) or _int(row.get("best_epoch")),
        status=tags["status"],
        error=row.get("error") or None,
        started_ms=started,
        finished_ms=None if finished is None else max(finished, started or 0),  # finished_at is to the second
    )


def load_records(results: str | Path, trial_ids: Iterable[str] | None = None) -> list[TrialRecord]:
    """The records of a results folder (or of `trial_ids` in it), in trials.parquet order."""
    root = Path(results)
    root = root.parent if root.name == "trials.parquet" else root
    rows = read_trials(root)
    if trial_ids is not None:
        wanted = set(trial_ids)
        rows = [r for r in rows if r["trial_id"] in wanted]
        missing = wanted - {r["trial_id"] for r in rows}
        if missing:
            raise SiftBenchError(f"{root}: no trial {', '.join(sorted(missing))} in trials.parquet.")
    evals: dict[str, list[dict[str, Any]]] = {}
    for e in read_evals(root):
        evals.setdefault(e["trial_id"], []).append(e)
    manifest = read_manifest(root)
    source = root / "trials.parquet"
    return [record(r, evals.get(r["trial_id"], []), manifest, source) for r in rows]
