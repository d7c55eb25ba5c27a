"""The one way tests build result tables: TrialResults written by the project's own writer (ResultStore), so
every report is tested on the current schema. Only the upgrade tests read older tables (tests/data)."""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sift_bench.results import TRIALS_FILE, ResultStore, atomic_write_text
from sift_bench.spec import ForgettingItem, Prediction, TrialResult, TrialSpec

MIB = 2**20


def result(
    spec: TrialSpec,
    metrics: dict[str, float] | None = None,
    *,
    status: str = "ok",
    primary: str = "accuracy",
    predictions: Iterable[tuple[int, Any, Any]] = (),
    **fields: Any,
) -> TrialResult:
    """A finished trial of `spec` whose best epoch scored `metrics`; `predictions`: (example, prediction,
    label) on the dev split; `fields`: any other TrialResult field (train_seconds, peak_memory_bytes, ...;
    `forgot(...)` gives the forgetting ones, whose value also goes into `best` as a trial's does)."""
    ok = status == "ok"
    metrics = dict(metrics or {})
    if fields.get("forgetting") is not None:
        metrics["forgetting"] = fields["forgetting"]
    values: dict[str, Any] = {
        "trainable_params": 1000, "head_params": 10, "train_seconds": 10.0, "eval_seconds": 1.0,
        "tokens_per_second": 100.0, "peak_memory_bytes": 100 * MIB, "best_epoch": 1 if ok else None,
        "error": None if ok else "RuntimeError: boom",
    }  # fmt: skip
    values.update(fields)
    return TrialResult(
        trial_id=spec.trial_id, spec=spec, status=status, primary_metric=primary, best=metrics,
        epochs=[{"epoch": 1.0, **metrics}] if metrics else [],
        predictions=[Prediction(split="dev", example=i, prediction=str(p), label=str(y)) for i, p, y in predictions],
        **values,
    )  # fmt: skip


def forgot(
    measure: str,
    before: Sequence[float],
    after: Sequence[float],
    *,
    weights: Sequence[float] | None = None,
    gold: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The forgetting fields of a TrialResult whose measure gave these per-item values before and after
    training (`gold` for sts_zero_shot; `weights`, the scored tokens, for a loss: 1 each by default); the
    totals come from `sift_bench.forgetting`, as a trial computes them."""
    import numpy as np

    from sift_bench import forgetting as F

    m = F.MEASURES[measure]
    w = np.ones(len(before)) if weights is None else np.asarray(weights, dtype=np.float64)
    g = None if gold is None else np.asarray(gold, dtype=np.float64)
    b = F.ability(m, F.Scores(np.asarray(before, dtype=np.float64), w, g))
    a = F.ability(m, F.Scores(np.asarray(after, dtype=np.float64), w, g))
    items = [
        ForgettingItem(
            item=i, before=float(x), after=float(y), weight=float(w[i]), gold=None if g is None else float(g[i])
        )
        for i, (x, y) in enumerate(zip(before, after, strict=True))
    ]
    return {"forgetting_measure": measure, "forgetting_before": b, "forgetting_after": a,
            "forgetting": F.drop(m, b, a), "forgetting_items": items}  # fmt: skip


def wrong_on(labels: Sequence[int], wrong: Iterable[int]) -> list[tuple[int, int, int]]:
    """Per-example dev predictions for `result`: (example, prediction, label), right on every example of
    `labels` (0/1) except those in `wrong`, where the prediction is the other class."""
    bad = set(wrong)
    return [(i, 1 - y if i in bad else y, y) for i, y in enumerate(labels)]


def write_run(
    root: Path, results: Iterable[TrialResult], *, manifest: dict[str, Any] | None = None, shuffle: bool = False
) -> Path:
    """results/<suite>/ as `sift-bench run` leaves it: each result added through ResultStore (trials, evals,
    predictions; to what `root` already holds), plus manifest.json when given. `shuffle`: add them in a
    seeded random order. The store works on a copy beside `root` whose files then replace root's one by one,
    trials.parquet last: a reader (the live dashboard) sees the whole batch at once, never half of it."""
    results = list(results)
    if shuffle:
        random.Random(0).shuffle(results)
    staging = root.parent / f".{root.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    if root.is_dir():
        shutil.copytree(root, staging)
    store = ResultStore(staging)
    for r in results:
        store.add(r)
    if not results:
        store.flush()
    if manifest is not None:
        atomic_write_text(staging / "manifest.json", json.dumps(manifest))
    root.mkdir(parents=True, exist_ok=True)
    for f in sorted(staging.iterdir(), key=lambda f: f.name == TRIALS_FILE):
        os.replace(f, root / f.name)
    shutil.rmtree(staging)
    return root
