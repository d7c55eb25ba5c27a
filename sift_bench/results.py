"""The result store: one folder per suite run, and the one module that reads and writes its files
(trials.parquet, evals.parquet, predictions.parquet, manifest.json; their columns are in
`sift_bench.schema`).

Only the driver writes (the scheduler hands each finished result to `ResultStore.add`), so no locking
between workers is needed; every write goes to a temp file in the same folder and is renamed over the
file, so a crash at any moment leaves the previous complete file. Readers upgrade rows of older schemas
(see `sift_bench.schema.upgrade_row`). A damaged file is a SiftBenchError that names it and the fix,
never a pyarrow traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sift_bench.errors import SiftBenchError
from sift_bench.provenance import git_commit, git_dirty, hardware, package_versions
from sift_bench.schema import (
    DAMAGED_FIX,
    EVALS_SCHEMA,
    FORGETTING_SCHEMA,
    PREDICTIONS_SCHEMA,
    REQUIRED_COLUMNS,
    eval_rows,
    forgetting_rows,
    metric_names,
    now_utc,
    prediction_rows,
    row_spec,
    trial_row,
    trials_schema,
    upgrade_row,
)
from sift_bench.spec import TrialResult

TRIALS_FILE = "trials.parquet"
EVALS_FILE = "evals.parquet"
PREDICTIONS_FILE = "predictions.parquet"
FORGETTING_FILE = "forgetting.parquet"
MANIFEST_FILE = "manifest.json"

# ----------------------------------------------------------------------------- files


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` then rename over `path`: readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; the file is for everyone who can read the folder
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


def _write_table(path: Path, table: pa.Table) -> None:
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _read_arrow(path: Path, schema: pa.Schema | None = None) -> pa.Table:
    """The table at `path` (cast to `schema` when given); a damaged or foreign file is a SiftBenchError."""
    try:
        table = pq.read_table(path)
        return table.select(schema.names).cast(schema) if schema is not None else table
    except (pa.ArrowException, OSError, ValueError, KeyError) as e:
        raise SiftBenchError(
            f"Cannot read {path}: {e}. The file is damaged or not a sift-bench table: {DAMAGED_FIX}."
        ) from None


def _read_table(path: Path) -> list[dict[str, Any]]:
    return _read_arrow(path).to_pylist()


def _results_dir(root: str | Path) -> Path:
    """The folder itself; a path to its trials.parquet is accepted too."""
    root = Path(root)
    if root.name == TRIALS_FILE and root.is_file():
        root = root.parent
    if not root.exists():
        raise SiftBenchError(f"Results folder {root} does not exist; pass a folder like results/<suite>/.")
    if not root.is_dir():
        raise SiftBenchError(f"{root} is not a results folder; pass a folder holding {TRIALS_FILE}.")
    return root


def _trial_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a trials table in file order, upgraded, one per trial id (the latest `finished_at` wins)."""
    rows = _read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise SiftBenchError(
            f"{path} lacks the column(s) {', '.join(missing)}: not a sift-bench trials table; {DAMAGED_FIX}."
        )
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen = latest.get(row["trial_id"])
        if seen is None or (row.get("finished_at") or "") >= (seen.get("finished_at") or ""):
            latest[row["trial_id"]] = upgrade_row(row, path)
    return list(latest.values())


def read_trials(root: str | Path) -> list[dict[str, Any]]:
    """All trial rows of one results folder, in the current schema."""
    root = _results_dir(root)
    path = root / TRIALS_FILE
    if not path.is_file():
        raise SiftBenchError(
            f"{root} has no {TRIALS_FILE}; is it a results folder (results/<suite>/) of `sift-bench run`? "
            "Run a suite into it first (sift-bench run SUITE)."
        )
    return _trial_rows(path)


def read_evals(root: str | Path) -> list[dict[str, Any]]:
    """Per-epoch metrics; empty when the folder has no evals.parquet."""
    path = Path(root) / EVALS_FILE
    return _read_table(path) if path.is_file() else []


def read_predictions(root: str | Path) -> list[dict[str, Any]]:
    """Per-example predictions; empty when the folder has none."""
    path = Path(root) / PREDICTIONS_FILE
    return _read_table(path) if path.is_file() else []


def write_predictions(root: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write predictions.parquet whole (zero rows included: the table then says "none", not "unknown").
    A run adds each trial's rows through `ResultStore.add`; this is for tables made outside a run."""
    path = Path(root) / PREDICTIONS_FILE
    _write_table(path, pa.Table.from_pylist(rows, schema=PREDICTIONS_SCHEMA))
    return path


def read_forgetting(root: str | Path) -> list[dict[str, Any]]:
    """Per-item forgetting values; empty when the folder has none (runs before schema 4, or none measured)."""
    path = Path(root) / FORGETTING_FILE
    return _read_table(path) if path.is_file() else []


def _replace_trial_rows(
    path: Path, schema: pa.Schema, table: pa.Table | None, trial_id: str, rows: list[dict[str, Any]]
) -> pa.Table | None:
    """A per-trial side table (predictions, forgetting) with `rows` in place of the trial's earlier ones,
    rewritten atomically; the file is not created while no trial has rows. Returns the table now on disk."""
    new = pa.Table.from_pylist(rows, schema=schema)
    if table is None:
        table = _read_arrow(path, schema) if path.is_file() else schema.empty_table()
    earlier = pc.equal(table["trial_id"], trial_id)
    if new.num_rows == 0 and not pc.any(earlier).as_py():
        return table
    table = pa.concat_tables([table.filter(pc.invert(earlier)), new])
    _write_table(path, table)
    return table


def read_manifest(root: str | Path) -> dict[str, Any]:
    """manifest.json as a dict; {} when there is none."""
    path = Path(root) / MANIFEST_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SiftBenchError(f"Cannot read {path}: {e}. The file is damaged: {DAMAGED_FIX}.") from None
    if not isinstance(data, dict):
        raise SiftBenchError(f"{path} is not a run manifest (a JSON object): {DAMAGED_FIX}.")
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- the store (the driver writes)


class ResultStore:
    """`results/<suite>/`: read what is there, add finished trials one at a time, keep the manifest."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._trials: dict[str, dict[str, Any]] = {}
        self._evals: dict[str, list[dict[str, Any]]] = {}
        self._predictions: pa.Table | None = None  # read on the first trial that needs it (it can be large)
        self._forgetting: pa.Table | None = None  # likewise
        if self.trials_path.is_file():
            self._trials = {row["trial_id"]: row for row in _trial_rows(self.trials_path)}
        for row in read_evals(self.root):
            self._evals.setdefault(row["trial_id"], []).append(row)

    @property
    def trials_path(self) -> Path:
        return self.root / TRIALS_FILE

    @property
    def evals_path(self) -> Path:
        return self.root / EVALS_FILE

    @property
    def predictions_path(self) -> Path:
        return self.root / PREDICTIONS_FILE

    @property
    def forgetting_path(self) -> Path:
        return self.root / FORGETTING_FILE

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_FILE

    # ---- reading

    def rows(self) -> list[dict[str, Any]]:
        return list(self._trials.values())

    def done_ids(self) -> set[str]:
        """Trial ids that finished with status ok: a resumed run skips exactly these."""
        return {tid for tid, row in self._trials.items() if row["status"] == "ok"}

    def __len__(self) -> int:
        return len(self._trials)

    def read_manifest(self) -> dict[str, Any]:
        return read_manifest(self.root)

    # ---- writing

    def add(self, result: TrialResult) -> None:
        """Record one finished trial (replacing an earlier attempt): its predictions first, then its trials
        and evals rows, each table rewritten atomically. A crash in between leaves predictions of a trial
        not yet marked done (it reruns and replaces them), never a finished trial without its predictions."""
        self._replace_predictions(result)
        self._replace_forgetting(result)
        self._trials[result.trial_id] = trial_row(result)
        self._evals[result.trial_id] = eval_rows(result)
        self.flush()

    def _replace_predictions(self, result: TrialResult) -> None:
        self._predictions = _replace_trial_rows(
            self.predictions_path, PREDICTIONS_SCHEMA, self._predictions, result.trial_id, prediction_rows(result)
        )

    def _replace_forgetting(self, result: TrialResult) -> None:
        self._forgetting = _replace_trial_rows(
            self.forgetting_path, FORGETTING_SCHEMA, self._forgetting, result.trial_id, forgetting_rows(result)
        )

    def flush(self) -> None:
        rows = list(self._trials.values())
        metrics = metric_names(k for row in rows for k in row)
        _write_table(self.trials_path, pa.Table.from_pylist(rows, schema=trials_schema(metrics)))
        evals = [row for rows_ in self._evals.values() for row in rows_]
        # Evals go second: a crash in between leaves an eval table one trial behind, never a trial row
        # whose evals belong to an older attempt for longer than the next write.
        _write_table(self.evals_path, pa.Table.from_pylist(evals, schema=EVALS_SCHEMA))

    def start_run(self, suite: str, suite_file: str | Path | None, scheduler: str, **counts: int) -> None:
        """Write the manifest at the start of a run (so an interrupted run still documents itself)."""
        manifest = self.read_manifest()
        now = now_utc()
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
        now = now_utc()
        manifest["finished_at"] = now
        if manifest.get("runs"):
            manifest["runs"][-1].update({"finished_at": now, **counts})
        _write_json(self.manifest_path, manifest)


# ----------------------------------------------------------------------------- the reports' view


@dataclass
class RunTables:
    """One results folder as the reports read it (leaderboard, compare, dashboard)."""

    path: Path
    trials: pd.DataFrame  # every column of the current schema; `spec` holds TrialSpec, `budget` Budget | None
    evals: pd.DataFrame | None
    manifest: dict[str, Any] | None

    @property
    def suite(self) -> str:
        suites = sorted({str(s) for s in self.trials["suite"].dropna()})
        if suites:
            return ", ".join(suites)
        return str((self.manifest or {}).get("suite", self.path.name))


def trials_frame(rows: list[dict[str, Any]], source: Path | None = None) -> pd.DataFrame:
    """Rows (current schema) as a DataFrame with every column of the schema, specs parsed into TrialSpec
    and budgets into Budget, so reports never parse either themselves."""
    source = source or Path("<rows>")
    schema = trials_schema(metric_names(k for row in rows for k in row))
    try:
        table = pa.Table.from_pylist([{k: v for k, v in r.items() if k in schema.names} for r in rows], schema=schema)
    except (pa.ArrowException, TypeError, ValueError) as e:
        raise SiftBenchError(f"{source}: a column has the wrong type ({e}); {DAMAGED_FIX}.") from None
    frame = table.to_pandas()
    frame["spec"] = pd.Series([row_spec(r, source) for r in rows], index=frame.index, dtype=object)
    frame["budget"] = pd.Series([s.budget for s in frame["spec"]], index=frame.index, dtype=object)
    return frame


def load_run(path: str | Path) -> RunTables:
    """Read `results/<suite>/` (or its trials.parquet). Bad input raises SiftBenchError."""
    root = _results_dir(path)
    trials = trials_frame(read_trials(root), root / TRIALS_FILE)
    evals = pd.DataFrame(read_evals(root), columns=EVALS_SCHEMA.names) if (root / EVALS_FILE).is_file() else None
    return RunTables(path=root, trials=trials, evals=evals, manifest=read_manifest(root) or None)
