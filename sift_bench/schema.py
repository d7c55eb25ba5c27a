"""The result tables' columns, and how a TrialResult becomes rows (and an older row the current one).

`sift_bench.results` is the one module that reads and writes these tables. Layout of `results/<suite>/`:

trials.parquet -- one row per trial (the latest attempt of each trial id; a rerun replaces the row):
    suite               str    suite name (not part of the trial id)
    trial_id            str    TrialSpec.trial_id: hash of the resolved config (stable across renames/reorders)
    config_key          str    TrialSpec.config_key: the trial id without the seed (what `compare` matches on)
    variant             str    the suite's label for the method entry (== method unless a suite names variants,
                               e.g. `sift_qv` for SIFT on query+value in the modules ablation)
    model               str
    task                str
    method              str    registered method name (full, classifier_only, lora, adapter, sift, random)
    budget              str    the budget in canonical form ("0.8%" or "1000000"); null for knob-less methods
    knob                str    the method's budget knob (sparsity, rank, bottleneck); null if none
    knob_value          float  the knob's value the trial used
    trainable_params    int64  trainable parameters, task head excluded (as the paper counts)
    head_params         int64  task-head parameters
    total_params        int64  all parameters of the model
    seed                int64
    train.<field>       one column per TrainSettings field (train.learning_rate, train.batch_size, ...;
                               train.early_stopping is JSON text, e.g. {"patience":2}, or null)
    method_options      str    JSON of the method's options
    grid                str    JSON of this trial's hyper-parameter grid point ("{}" without a grid)
    extension           int64  0: a point of the suite's grid; k >= 1: the k-th point the driver added beyond
                               an edge of one of the cell's grid axes (a suite's `search.extend_edges`)
    spec                str    JSON of the full TrialSpec (variant and grid included), enough to rerun the trial
    primary_metric      str    name of the task's primary metric: its score is the `metric.<name>` column
    best_epoch          int64  1-based epoch whose dev metrics are reported
    stopped_epoch       int64  the last epoch run when early stopping (`train.early_stopping`) ended the trial
                               before its planned epochs; null when it ran them all
    scored_epoch        int64  1-based epoch whose weights the evaluators (MMLU, HumanEval) scored; null
                               when the trial ran none
    metric.<name>       float  one column per best-epoch metric (metric.f1, metric.accuracy, ...)
    train_seconds       float
    eval_seconds        float
    tokens_per_second   float
    peak_memory_bytes   int64  the most memory the trial held at once. CPU: the peak resident set size (VmHWM) of
                               the process that ran it, interpreter and libraries included; CUDA: the max bytes
                               allocated to tensors (torch.cuda.max_memory_allocated). Reset when the trial starts
    peak_reserved_bytes int64  CUDA: the max bytes the caching allocator reserved (max_memory_reserved); null on
                               CPU
    isolated            bool   the trial ran in a fresh process of its own (schedulers' default), so its memory and
                               time are its alone; false: it shared a process with earlier trials (--no-isolate),
                               whose leftovers its memory figure may include; null in rows before schema 4
    forgetting_measure  str    the pre-trained ability measured before and after training (sift_bench.forgetting):
                               sts_zero_shot (points), mlm_loss or lm_loss (nats/token); null: not measured
    forgetting_before   float  that ability on the loaded weights (cached per weights and machine)
    forgetting_after    float  that ability on the weights of the best (scored) epoch
    forgetting          float  before - after for sts_zero_shot, after - before for a loss: positive = forgot.
                               Also the `metric.forgetting` column (so reports and compare read it as a metric)
    forgetting_note     str    why forgetting is null (turned off, no measure for this model); else null
    device              str
    gpu_ids             list<str>  accelerator ids Ray assigned the trial (what it saw in CUDA_VISIBLE_DEVICES);
                               [] on a CPU trial and under --serial
    node                str    the Ray node id that ran the trial; null under --serial
    started_at          str    ISO-8601 UTC time (to the ms) the trial's last attempt started, as its
                               scheduler saw it; null for a trial whose worker died before reporting
    status              str    "ok" or "failed"
    error               str    error text of a failed trial, else null
    schema_version      int64  sift_bench.spec.SCHEMA_VERSION the row was first written with
    finished_at         str    ISO-8601 UTC time the driver recorded the row

Older rows are upgraded as they are read. Schema 1 (before `config_key`; with a `primary_value` column that
repeated the primary metric): variant and grid go into the spec, config_key is computed, primary_value dropped.
Schema 1 and 2 (before gpu_ids, node, started_at, scored_epoch and train.heldout_fraction): gpu_ids is [],
the others null, and a train.<field> column added later holds the field's default. Schema 1-3 (before
peak_reserved_bytes, isolated and the forgetting columns): all null. Their peak_memory_bytes was measured in
processes that trials shared, so it may hold earlier trials' memory. Schema 1-4 (before extension and
stopped_epoch): extension 0 (no suite extended edges then), stopped_epoch null (no early stopping then).

evals.parquet -- one row per trial x epoch x metric: trial_id str, epoch int64 (1-based), metric str, value float.
    Under held-out selection, dev metrics only on the epochs that became the best on the held-out slice.

predictions.parquet -- one row per trial x split x example of the best epoch's dev predictions:
    trial_id str, split str, example int64 (0-based row of the split), prediction str, label str (text, so
    class ids and regression values share one table). Only tasks with per-example predictions write rows
    (GLUE classification and regression); instruction tasks (a loss, not a prediction) write none. The
    driver writes a trial's rows before its trials row, and a rerun replaces the trial's earlier rows.

forgetting.parquet -- one row per trial x item of its forgetting sample: trial_id str, item int64 (0-based),
    before float, after float (sts_zero_shot: the pair's cosine similarity; a loss: the item's summed token
    loss), weight float (1 for a pair; a loss: the item's scored tokens), gold float (sts_zero_shot: the
    gold similarity, else null). Reports bootstrap over these items. Written like predictions.parquet.

manifest.json -- suite name, suite file path and sha256, package versions, git commit (+ git_dirty),
    hardware of the driver, and a `runs` list with one entry per `sift-bench run` into this folder
    (started_at, finished_at, scheduler, planned / skipped / ran / ok / failed counts, wall_seconds,
    trial_seconds, slots, overhead); `started_at` / `finished_at` at the top span all runs.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from sift_bench.errors import SiftBenchError
from sift_bench.spec import TrainSettings, TrialResult, TrialSpec

DAMAGED_FIX = "delete it and rerun the suite, or restore it from a copy"

_FIXED_HEAD: list[tuple[str, pa.DataType]] = [
    ("suite", pa.string()),
    ("trial_id", pa.string()),
    ("config_key", pa.string()),
    ("variant", pa.string()),
    ("model", pa.string()),
    ("task", pa.string()),
    ("method", pa.string()),
    ("budget", pa.string()),
    ("knob", pa.string()),
    ("knob_value", pa.float64()),
    ("trainable_params", pa.int64()),
    ("head_params", pa.int64()),
    ("total_params", pa.int64()),
    ("seed", pa.int64()),
]
_FIXED_MID: list[tuple[str, pa.DataType]] = [
    ("method_options", pa.string()),
    ("grid", pa.string()),
    ("extension", pa.int64()),
    ("spec", pa.string()),
    ("primary_metric", pa.string()),
    ("best_epoch", pa.int64()),
    ("stopped_epoch", pa.int64()),
    ("scored_epoch", pa.int64()),
]
_FIXED_TAIL: list[tuple[str, pa.DataType]] = [
    ("train_seconds", pa.float64()),
    ("eval_seconds", pa.float64()),
    ("tokens_per_second", pa.float64()),
    ("peak_memory_bytes", pa.int64()),
    ("peak_reserved_bytes", pa.int64()),
    ("isolated", pa.bool_()),
    ("forgetting_measure", pa.string()),
    ("forgetting_before", pa.float64()),
    ("forgetting_after", pa.float64()),
    ("forgetting", pa.float64()),
    ("forgetting_note", pa.string()),
    ("device", pa.string()),
    ("gpu_ids", pa.list_(pa.string())),
    ("node", pa.string()),
    ("started_at", pa.string()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("schema_version", pa.int64()),
    ("finished_at", pa.string()),
]
EVALS_SCHEMA = pa.schema(
    [("trial_id", pa.string()), ("epoch", pa.int64()), ("metric", pa.string()), ("value", pa.float64())]
)
FORGETTING_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("item", pa.int64()),
        ("before", pa.float64()),
        ("after", pa.float64()),
        ("weight", pa.float64()),
        ("gold", pa.float64()),
    ]
)
PREDICTIONS_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("split", pa.string()),
        ("example", pa.int64()),
        ("prediction", pa.string()),
        ("label", pa.string()),
    ]
)
# Without these a table is not one of ours (every schema has had them).
REQUIRED_COLUMNS = ("trial_id", "task", "method", "status", "spec")


def _arrow_type(annotation: Any) -> pa.DataType:
    """Arrow type for a TrainSettings field annotation (Optional unwrapped; Literals are strings)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if annotation is bool:
        return pa.bool_()
    if annotation is int:
        return pa.int64()
    if annotation is float:
        return pa.float64()
    return pa.string()


TRAIN_COLUMNS: list[tuple[str, pa.DataType]] = [
    (f"train.{name}", _arrow_type(field.annotation)) for name, field in TrainSettings.model_fields.items()
]


# A metric's column in trials.parquet is its name under this prefix (metric.accuracy).
METRIC_PREFIX = "metric."


def metric_column(name: str) -> str:
    return f"{METRIC_PREFIX}{name}"


def metric_names(columns: Iterable[object]) -> list[str]:
    """The metrics among a table's column names, sorted: "metric.f1" -> "f1"."""
    return sorted({str(c)[len(METRIC_PREFIX) :] for c in columns if str(c).startswith(METRIC_PREFIX)})


def trials_schema(metric_names: Iterable[str]) -> pa.Schema:
    metrics = [(metric_column(m), pa.float64()) for m in sorted(set(metric_names))]
    return pa.schema(_FIXED_HEAD + TRAIN_COLUMNS + _FIXED_MID + metrics + _FIXED_TAIL)


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# ----------------------------------------------------------------------------- rows


def trial_row(result: TrialResult) -> dict[str, Any]:
    """Flatten one TrialResult into a trials.parquet row (see the module docstring for the columns)."""
    spec = result.spec
    row: dict[str, Any] = {
        "suite": spec.suite,
        "trial_id": result.trial_id,
        "config_key": spec.config_key,
        "variant": spec.label,
        "model": spec.model,
        "task": spec.task,
        "method": spec.method,
        "budget": None if spec.budget is None else str(spec.budget),
        "knob": result.knob,
        "knob_value": result.knob_value,
        "trainable_params": result.trainable_params,
        "head_params": result.head_params,
        "total_params": result.total_params,
        "seed": spec.seed,
        "method_options": _json(spec.method_options),
        "grid": _json(spec.grid),
        "extension": spec.extension,
        "spec": _json(spec.model_dump(mode="json")),
        "primary_metric": result.primary_metric,
        "best_epoch": result.best_epoch,
        "stopped_epoch": result.stopped_epoch,
        "scored_epoch": result.scored_epoch,
        "train_seconds": result.train_seconds,
        "eval_seconds": result.eval_seconds,
        "tokens_per_second": result.tokens_per_second,
        "peak_memory_bytes": result.peak_memory_bytes,
        "peak_reserved_bytes": result.peak_reserved_bytes,
        "isolated": result.isolated,
        "forgetting_measure": result.forgetting_measure,
        "forgetting_before": result.forgetting_before,
        "forgetting_after": result.forgetting_after,
        "forgetting": result.forgetting,
        "forgetting_note": result.forgetting_note,
        "device": result.device,
        "gpu_ids": list(result.gpu_ids),
        "node": result.node,
        "started_at": result.started_at,
        "status": result.status,
        "error": result.error,
        "schema_version": result.schema_version,
        "finished_at": now_utc(),
    }
    for name, value in spec.train.model_dump(mode="json").items():
        row[f"train.{name}"] = _json(value) if isinstance(value, dict) else value  # early_stopping: JSON text
    for name, value in result.best.items():
        row[metric_column(name)] = float(value)
    return row


def eval_rows(result: TrialResult) -> list[dict[str, Any]]:
    rows = []
    for i, metrics in enumerate(result.epochs, start=1):
        epoch = int(metrics.get("epoch", i))
        for name, value in metrics.items():
            if name != "epoch":
                rows.append({"trial_id": result.trial_id, "epoch": epoch, "metric": name, "value": float(value)})
    return rows


def forgetting_rows(result: TrialResult) -> list[dict[str, Any]]:
    """One forgetting.parquet row per item of the trial's forgetting sample (none when not measured)."""
    return [{"trial_id": result.trial_id, **i.model_dump()} for i in result.forgetting_items]


def prediction_rows(result: TrialResult) -> list[dict[str, Any]]:
    """One predictions.parquet row per example the trial predicted (none for tasks without predictions)."""
    return [{"trial_id": result.trial_id, **p.model_dump()} for p in result.predictions]


def row_spec(row: dict[str, Any], source: Path) -> TrialSpec:
    """The TrialSpec stored in a row's `spec` JSON; a bad one names the file, the row and the fix."""
    try:
        return TrialSpec.model_validate_json(row["spec"])
    except (ValidationError, TypeError, ValueError) as e:
        first = str(e).splitlines()[0]
        raise SiftBenchError(
            f"{source}: the `spec` of trial {row.get('trial_id')} does not parse ({first}); {DAMAGED_FIX}."
        ) from None


# What a row written before schema 3 holds in the columns added then (train.<field> columns: the default).
_ADDED_IN_3: dict[str, Any] = {"scored_epoch": None, "gpu_ids": [], "node": None, "started_at": None}
_ADDED_IN_4: dict[str, Any] = {
    "peak_reserved_bytes": None, "isolated": None, "forgetting_measure": None, "forgetting_before": None,
    "forgetting_after": None, "forgetting": None, "forgetting_note": None,
}  # fmt: skip
_ADDED_IN_5: dict[str, Any] = {"extension": 0, "stopped_epoch": None}
_TRAIN_DEFAULTS = {f"train.{name}": value for name, value in TrainSettings().model_dump(mode="json").items()}


def upgrade_row(row: dict[str, Any], source: Path) -> dict[str, Any]:
    """A row in the current schema: schema-1 rows get their variant and grid into the spec and a
    config_key, and lose `primary_value` (it repeated `metric.<primary_metric>`); rows before schema 3 get
    the columns added since (see the module docstring). Current rows come back with the same values."""
    if not row.get("config_key") or "primary_value" in row:
        row = _upgrade_schema_1(row, source)
    row = dict(row)
    for name, value in (_ADDED_IN_3 | _ADDED_IN_4 | _ADDED_IN_5 | _TRAIN_DEFAULTS).items():
        row.setdefault(name, value)
    row["gpu_ids"] = list(row["gpu_ids"] or [])  # a null list (a hand-made row) reads as "none assigned"
    return row


def _upgrade_schema_1(row: dict[str, Any], source: Path) -> dict[str, Any]:
    row = {k: v for k, v in row.items() if k != "primary_value"}
    spec = row_spec(row, source)
    row["variant"] = row.get("variant") or spec.label
    row["grid"] = row.get("grid") or _json(spec.grid)
    spec = spec.model_copy(update={"variant": row["variant"], "grid": json.loads(row["grid"])})
    row["spec"] = _json(spec.model_dump(mode="json"))
    row["config_key"] = spec.config_key
    return row
