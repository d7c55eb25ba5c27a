"""The result store: one folder per suite run, Parquet tables written atomically.

Layout of `results/<suite>/`:

trials.parquet -- one row per trial (the latest attempt of each trial id; a rerun replaces the row):
    suite               str    suite name (not part of the trial id)
    trial_id            str    TrialSpec.trial_id: hash of the resolved config (stable across renames/reorders)
    variant             str    the suite's label for the method entry (== method unless a suite names variants,
                               e.g. `sift_qv` for SIFT on query+value in the modules ablation)
    model               str
    task                str
    method              str    registered method name (full, classifier_only, lora, adapter, sift, random)
    budget              str    the asked budget as written ("0.8%" or "1000000"); null for knob-less methods
    knob                str    the method's budget knob (sparsity, rank, bottleneck); null if none
    knob_value          float  the knob's value the trial used
    trainable_params    int64  trainable parameters, task head excluded (as the paper counts)
    head_params         int64  task-head parameters
    total_params        int64  all parameters of the model
    seed                int64
    train.<field>       one column per TrainSettings field (train.learning_rate, train.batch_size, ...)
    method_options      str    JSON of the method's options
    grid                str    JSON of this trial's hyper-parameter grid point ("{}" without a grid)
    spec                str    JSON of the full TrialSpec (model_dump), enough to rerun the trial
    primary_metric      str    name of the task's primary metric (e.g. "f1" for MRPC)
    primary_value       float  value of the primary metric at the best epoch
    best_epoch          int64  1-based epoch whose dev metrics are reported
    metric.<name>       float  one column per best-epoch metric (metric.f1, metric.accuracy, ...)
    train_seconds       float
    eval_seconds        float
    tokens_per_second   float
    peak_memory_bytes   int64
    device              str
    status              str    "ok" or "failed"
    error               str    error text of a failed trial, else null
    schema_version      int64  sift_bench.spec.SCHEMA_VERSION of the trial result
    finished_at         str    ISO-8601 UTC time the driver recorded the row

evals.parquet -- one row per trial x epoch x metric:
    trial_id str, epoch int64 (1-based), metric str, value float

manifest.json -- suite name, suite file path and sha256, package versions, git commit (+ git_dirty),
    hardware of the driver, and a `runs` list with one entry per `sift-bench run` into this folder
    (started_at, finished_at, scheduler, planned / skipped / ran / ok / failed counts, wall_seconds,
    trial_seconds, slots, overhead); `started_at` / `finished_at` at the top span all runs.

Only the driver writes (the scheduler hands each finished result to `ResultStore.add`), so no locking
between workers is needed; every write goes to a temp file in the same folder and is renamed over the
table, so a crash at any moment leaves the previous complete table.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
import types
import typing
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sift_bench.errors import SiftBenchError
from sift_bench.spec import TrainSettings, TrialResult, TrialSpec

TRIALS_FILE = "trials.parquet"
EVALS_FILE = "evals.parquet"
MANIFEST_FILE = "manifest.json"

_FIXED_HEAD: list[tuple[str, pa.DataType]] = [
    ("suite", pa.string()),
    ("trial_id", pa.string()),
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
    ("spec", pa.string()),
    ("primary_metric", pa.string()),
    ("primary_value", pa.float64()),
    ("best_epoch", pa.int64()),
]
_FIXED_TAIL: list[tuple[str, pa.DataType]] = [
    ("train_seconds", pa.float64()),
    ("eval_seconds", pa.float64()),
    ("tokens_per_second", pa.float64()),
    ("peak_memory_bytes", pa.int64()),
    ("device", pa.string()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("schema_version", pa.int64()),
    ("finished_at", pa.string()),
]
EVALS_SCHEMA = pa.schema(
    [("trial_id", pa.string()), ("epoch", pa.int64()), ("metric", pa.string()), ("value", pa.float64())]
)


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


def trials_schema(metric_names: Iterable[str]) -> pa.Schema:
    metrics = [(f"metric.{m}", pa.float64()) for m in sorted(set(metric_names))]
    return pa.schema(_FIXED_HEAD + TRAIN_COLUMNS + _FIXED_MID + metrics + _FIXED_TAIL)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def trial_row(
    result: TrialResult, suite: str, variant: str | None = None, grid: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Flatten one TrialResult into a trials.parquet row (see the module docstring for the columns)."""
    spec = TrialSpec.model_validate(result.spec)
    primary = result.best.get(result.primary_metric) if result.primary_metric else None
    row: dict[str, Any] = {
        "suite": suite,
        "trial_id": result.trial_id,
        "variant": variant or spec.method,
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
        "grid": _json(grid or {}),
        "spec": _json(result.spec),
        "primary_metric": result.primary_metric,
        "primary_value": primary,
        "best_epoch": result.best_epoch,
        "train_seconds": result.train_seconds,
        "eval_seconds": result.eval_seconds,
        "tokens_per_second": result.tokens_per_second,
        "peak_memory_bytes": result.peak_memory_bytes,
        "device": result.device,
        "status": result.status,
        "error": result.error,
        "schema_version": result.schema_version,
        "finished_at": _now(),
    }
    for name, value in spec.train.model_dump(mode="json").items():
        row[f"train.{name}"] = value
    for name, value in result.best.items():
        row[f"metric.{name}"] = float(value)
    return row


def eval_rows(result: TrialResult) -> list[dict[str, Any]]:
    rows = []
    for i, metrics in enumerate(result.epochs, start=1):
        epoch = int(metrics.get("epoch", i))
        for name, value in metrics.items():
            if name != "epoch":
                rows.append({"trial_id": result.trial_id, "epoch": epoch, "metric": name, "value": float(value)})
    return rows


def atomic_write_bytes(path: Path, write: typing.Callable[[str], None]) -> None:
    """Call `write(tmp_path)` then rename over `path`: readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; the table is for everyone who can read the folder
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_table(path: Path, table: pa.Table) -> None:
    atomic_write_bytes(path, lambda tmp: pq.write_table(table, tmp))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    atomic_write_bytes(path, write)


class ResultStore:
    """`results/<suite>/`: read what is there, add finished trials one at a time, keep the manifest."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._trials: dict[str, dict[str, Any]] = {}
        self._evals: dict[str, list[dict[str, Any]]] = {}
        self._load()

    @property
    def trials_path(self) -> Path:
        return self.root / TRIALS_FILE

    @property
    def evals_path(self) -> Path:
        return self.root / EVALS_FILE

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_FILE

    def _load(self) -> None:
        try:
            if self.trials_path.exists():
                for row in pq.read_table(self.trials_path).to_pylist():
                    self._trials[row["trial_id"]] = row
            if self.evals_path.exists():
                for row in pq.read_table(self.evals_path).to_pylist():
                    self._evals.setdefault(row["trial_id"], []).append(row)
        except (pa.ArrowInvalid, OSError) as e:
            raise SiftBenchError(
                f"Cannot read the result tables in {self.root}: {e}. Move the folder away or pick another "
                "--results directory."
            ) from e

    # ---- reading

    def rows(self) -> list[dict[str, Any]]:
        return list(self._trials.values())

    def done_ids(self) -> set[str]:
        """Trial ids that finished with status ok: a resumed run skips exactly these."""
        return {tid for tid, row in self._trials.items() if row["status"] == "ok"}

    def __len__(self) -> int:
        return len(self._trials)

    # ---- writing

    def add(
        self,
        result: TrialResult,
        suite: str,
        variant: str | None = None,
        grid: dict[str, Any] | None = None,
    ) -> None:
        """Record one finished trial (replacing an earlier attempt) and rewrite both tables atomically."""
        self._trials[result.trial_id] = trial_row(result, suite, variant, grid)
        self._evals[result.trial_id] = eval_rows(result)
        self.flush()

    def flush(self) -> None:
        rows = list(self._trials.values())
        metrics = {k[len("metric.") :] for row in rows for k, v in row.items() if k.startswith("metric.")}
        schema = trials_schema(metrics)
        _write_table(self.trials_path, pa.Table.from_pylist(rows, schema=schema))
        evals = [row for rows_ in self._evals.values() for row in rows_]
        # Evals go second: a crash in between leaves an eval table one trial behind, never a trial row
        # whose evals belong to an older attempt for longer than the next write.
        _write_table(self.evals_path, pa.Table.from_pylist(evals, schema=EVALS_SCHEMA))

    # ---- manifest

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {}
        return json.loads(self.manifest_path.read_text())

    def start_run(self, suite: str, suite_file: str | Path | None, scheduler: str, **counts: int) -> None:
        """Write the manifest at the start of a run (so an interrupted run still documents itself)."""
        manifest = self.read_manifest()
        now = _now()
        is_file = bool(suite_file) and Path(suite_file).is_file()  # a suite built in code has no file
        sha = hashlib.sha256(Path(suite_file).read_bytes()).hexdigest() if is_file else None
        manifest.update(
            {
                "suite": suite,
                "suite_file": str(suite_file) if suite_file else None,
                "suite_sha256": sha,
                "packages": package_versions(),
                "git_commit": git_commit(),
                "git_dirty": git_dirty(),
                "hardware": hardware(),
            }
        )
        manifest.setdefault("started_at", now)
        manifest["finished_at"] = None
        run = {"started_at": now, "finished_at": None, "scheduler": scheduler, "suite_sha256": sha, **counts}
        manifest.setdefault("runs", []).append(run)
        _write_json(self.manifest_path, manifest)

    def finish_run(self, **counts: float | int | None) -> None:
        manifest = self.read_manifest()
        now = _now()
        manifest["finished_at"] = now
        if manifest.get("runs"):
            manifest["runs"][-1].update({"finished_at": now, **counts})
        _write_json(self.manifest_path, manifest)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("sift-bench", "torch", "transformers", "peft", "ray", "pyarrow", "pandas", "pydantic"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The commit of the checkout this package runs from (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def git_dirty() -> bool | None:
    """Whether the checkout had uncommitted changes (then the commit alone does not pin the code)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip())


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "gpus": [],
    }
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    try:
        import psutil

        info["memory_bytes"] = psutil.virtual_memory().total
    except ImportError:
        pass
    return info


def read_trials(results_dir: str | Path) -> list[dict[str, Any]]:
    """All trial rows of one results folder (for leaderboard / compare / dashboard)."""
    path = Path(results_dir) / TRIALS_FILE
    if not path.exists():
        raise SiftBenchError(f"No {TRIALS_FILE} in {results_dir}: run a suite into it first (sift-bench run SUITE).")
    return pq.read_table(path).to_pylist()
