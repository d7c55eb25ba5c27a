"""Is a difference between two configs real? A paired bootstrap over dev examples, pooled over seeds.

Each trial stores its per-example dev predictions at its best epoch (`predictions.parquet`: trial_id,
split, example, prediction, label). For two configs on the same task and dev examples (each a list of
trials, one per seed) the statistic is

    mean over a's seeds of metric(a_s)  -  mean over b's seeds of metric(b_s)

and each bootstrap resample draws one set of example indices (with replacement) and applies it to every
seed of both sides, so the pairing of examples is kept and the seeds are pooled. The interval is the
percentile interval of the resampled statistic; the difference is "distinguishable" when it excludes 0.

Pure: the caller reads the rows (`sift_bench.results.read_predictions`) and passes them in. Accuracy, F1,
MCC, Pearson and MRPC/QQP's combined score are computed for all resamples at once from per-example counts
(exact, not an approximation); Spearman and STS-B's combined score loop over the resamples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sift_bench.defaults import CONFIDENCE, N_RESAMPLES
from sift_bench.errors import SiftBenchError
from sift_bench.evaluators.glue import GLUE_METRICS, glue_metrics

# Resample indices are drawn in blocks of about this many entries, so memory stays small on big dev sets.
_BLOCK_ENTRIES = 4_000_000
# A split's position goes into the high bits of the example key when several dev splits are concatenated.
_SPLIT_SHIFT = 32


@dataclass(frozen=True)
class PredictionSet:
    """One trial's predictions on its dev split(s), sorted by example key."""

    trial_id: str
    split: str  # "dev", the asked split, or the concatenated ones joined by "+" (MNLI)
    examples: np.ndarray  # (n,) int64 keys: the example index; split position << 32 | index when concatenated
    predictions: np.ndarray  # (n,) class ids (int64) or regression values (float64)
    labels: np.ndarray  # (n,) same kinds as predictions

    def __len__(self) -> int:
        return len(self.examples)


@dataclass(frozen=True)
class BootstrapResult:
    """The difference a - b of the mean-over-seeds metric, with its percentile interval (raw units)."""

    task: str
    metric: str
    diff: float  # observed: mean over a's seeds minus mean over b's seeds, on the shared examples
    low: float
    high: float
    confidence: float
    n_examples: int  # examples every set has (the ones resampled)
    n_dropped: int  # examples some set lacks, left out
    n_resamples: int
    a_mean: float
    b_mean: float

    @property
    def distinguishable(self) -> bool:
        """The interval excludes 0: the difference is unlikely to come from the choice of dev examples."""
        return self.low > 0 or self.high < 0


# ----------------------------------------------------------------------------- rows to prediction sets


def _numbers(texts: list[str], trial_id: str, column: str) -> np.ndarray:
    try:
        values = np.asarray(texts, dtype=np.float64)
    except (TypeError, ValueError):
        bad = next(t for t in texts if not _is_number(t))
        raise SiftBenchError(
            f"predictions.parquet: trial {trial_id} has a {column} {bad!r} that is not a number; the file "
            "was not written by sift-bench. Rerun the trial (delete its rows) to rewrite it."
        ) from None
    # Class ids come back as integers so the metrics see labels, not measurements.
    return values.astype(np.int64) if np.all(np.mod(values, 1) == 0) else values


def _is_number(text: Any) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _chosen_splits(splits: Iterable[str], split: str | None) -> list[str]:
    names = set(splits)
    if split is not None:
        return [split] if split in names else []
    if "dev" in names:
        return ["dev"]
    return sorted(s for s in names if s.startswith("dev"))  # MNLI: dev_matched + dev_mismatched


def prediction_sets(rows: Iterable[Mapping[str, Any]], split: str | None = None) -> dict[str, PredictionSet]:
    """Rows of predictions.parquet as one PredictionSet per trial (trials without the split are left out).

    `split=None` takes the split named "dev" when a trial has one, else every split whose name starts with
    "dev" concatenated in name order (MNLI's matched and mismatched dev sets: a metric over both pooled).
    Other splits (a held-out slice of train) are never used. Pass `split` to take exactly that one.
    """
    by_trial: dict[str, dict[str, list[tuple[int, str, str]]]] = {}
    for row in rows:
        by_trial.setdefault(str(row["trial_id"]), {}).setdefault(str(row["split"]), []).append(
            (int(row["example"]), row["prediction"], row["label"])
        )
    out: dict[str, PredictionSet] = {}
    for trial_id, splits in by_trial.items():
        chosen = _chosen_splits(splits, split)
        if not chosen:
            continue
        keys: list[int] = []
        preds: list[str] = []
        labels: list[str] = []
        for pos, name in enumerate(chosen):
            offset = pos << _SPLIT_SHIFT if len(chosen) > 1 else 0
            for example, pred, label in splits[name]:
                keys.append(offset + example)
                preds.append(pred)
                labels.append(label)
        key_arr = np.asarray(keys, dtype=np.int64)
        order = np.argsort(key_arr, kind="stable")
        key_arr = key_arr[order]
        if len(key_arr) > 1 and np.any(key_arr[1:] == key_arr[:-1]):
            raise SiftBenchError(
                f"predictions.parquet: trial {trial_id} has two rows for the same example of {'+'.join(chosen)}; "
                "the file is damaged. Delete the trial's rows and rerun it."
            )
        out[trial_id] = PredictionSet(
            trial_id=trial_id,
            split="+".join(chosen),
            examples=key_arr,
            predictions=_numbers([preds[i] for i in order], trial_id, "prediction"),
            labels=_numbers([labels[i] for i in order], trial_id, "label"),
        )
    return out


# ----------------------------------------------------------------------------- metrics


def bootstrap_metric(task: str, metric: str) -> tuple[str, str | None] | None:
    """How a trials-table metric is computed from predictions: (its name in `glue_metrics`, the dev split
    it is measured on, None for the default of `prediction_sets`), or None when predictions cannot give it
    (`eval_loss`, tasks other than GLUE). MNLI's `accuracy_matched` is ("accuracy", "dev_matched")."""
    names = GLUE_METRICS.get(task)
    if names is None:
        return None
    if metric in names:
        return metric, None
    for name in names:
        if metric.startswith(f"{name}_"):
            return name, "dev" + metric[len(name) :]
    return None


def _resolve(task: str, metric: str) -> str:
    resolved = bootstrap_metric(task, metric)
    if resolved is None:
        known = ", ".join(GLUE_METRICS.get(task, ())) or "none: not a GLUE task"
        raise SiftBenchError(
            f"Metric '{metric}' of task '{task}' cannot be computed from per-example predictions "
            f"(known for this task: {known}); use the seed spread instead."
        )
    return resolved[0]


def score(task: str, metric: str, preds: np.ndarray, labels: np.ndarray) -> float:
    """The task's metric on aligned arrays, as `glue_metrics` computes it during a trial."""
    return glue_metrics(task, np.asarray(preds), np.asarray(labels))[_resolve(task, metric)]


# Vectorised metrics: `w` (R, n) holds how often each example is drawn in each resample; each returns (R,).
_Vector = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # 0 where undefined, as sklearn's zero_division=0 and matthews_corrcoef and `glue._corr` do.
    safe = np.where(den > 0, den, 1.0)
    return np.where(den > 0, num / safe, 0.0)


def _accuracy(w: np.ndarray, p: np.ndarray, y: np.ndarray) -> np.ndarray:
    return w @ (p == y).astype(np.float64) / w.sum(axis=1)


def _f1(w: np.ndarray, p: np.ndarray, y: np.ndarray) -> np.ndarray:
    tp = w @ ((p == 1) & (y == 1)).astype(np.float64)
    fp = w @ ((p == 1) & (y != 1)).astype(np.float64)
    fn = w @ ((p != 1) & (y == 1)).astype(np.float64)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def _mcc(w: np.ndarray, p: np.ndarray, y: np.ndarray) -> np.ndarray:
    # sklearn's multi-class form: (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) on the weighted confusion matrix.
    s = w.sum(axis=1)
    correct = w @ (p == y).astype(np.float64)
    t_dot_p, p_dot_p, t_dot_t = np.zeros_like(s), np.zeros_like(s), np.zeros_like(s)
    for k in np.union1d(p, y):
        t_k, p_k = w @ (y == k).astype(np.float64), w @ (p == k).astype(np.float64)
        t_dot_p, p_dot_p, t_dot_t = t_dot_p + t_k * p_k, p_dot_p + p_k * p_k, t_dot_t + t_k * t_k
    return _ratio(correct * s - t_dot_p, np.sqrt((s * s - p_dot_p) * (s * s - t_dot_t)))


def _pearson(w: np.ndarray, p: np.ndarray, y: np.ndarray) -> np.ndarray:
    x, z = p - p.mean(), y - y.mean()  # centred first: fewer digits lost in the moments
    s = w.sum(axis=1)
    mx, mz = w @ x / s, w @ z / s
    cov = w @ (x * z) / s - mx * mz
    vx, vz = w @ (x * x) / s - mx * mx, w @ (z * z) / s - mz * mz
    # A (near-)constant resample has no correlation: 0, as `glue._corr` reports for a constant input.
    tiny = 1e-12 * max(float(np.mean(x * x)), float(np.mean(z * z)), 1e-300)
    return _ratio(cov, np.sqrt(np.where((vx > tiny) & (vz > tiny), vx * vz, 0.0)))


def _vector_metric(task: str, name: str) -> _Vector | None:
    if name == "accuracy":
        return _accuracy
    if name == "f1":
        return _f1
    if name == "matthews_corr":
        return _mcc
    if name == "pearson":
        return _pearson
    if name == "combined_score" and GLUE_METRICS[task] == ("f1", "accuracy", "combined_score"):
        return lambda w, p, y: (_f1(w, p, y) + _accuracy(w, p, y)) / 2
    return None  # spearman, STS-B's combined score: loop


# ----------------------------------------------------------------------------- the bootstrap


def _align(a: list[PredictionSet], b: list[PredictionSet]) -> tuple[np.ndarray, int]:
    """Example keys every set has, and how many keys some set lacks."""
    sets = [*a, *b]
    common, union = sets[0].examples, sets[0].examples
    for s in sets[1:]:
        common, union = np.intersect1d(common, s.examples), np.union1d(union, s.examples)
    if len(common) == 0:
        raise SiftBenchError(
            f"The prediction sets of trials {', '.join(s.trial_id for s in sets)} share no dev example; "
            "compare configs that were evaluated on the same dev split."
        )
    return common, len(union) - len(common)


def _take(s: PredictionSet, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos = np.searchsorted(s.examples, keys)
    return s.predictions[pos], s.labels[pos]


def draw_counts(idx: np.ndarray) -> np.ndarray:
    """(r, n) resampled indices -> (r, n) float counts: how often each of the n entries is drawn per resample."""
    r, n = idx.shape
    counts = np.bincount((idx + n * np.arange(r)[:, None]).ravel(), minlength=r * n)
    return counts.reshape(r, n).astype(np.float64)


def percentile_interval(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central `confidence` percentile interval of resampled statistics."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return float(low), float(high)


def paired_bootstrap(
    task: str,
    metric: str,
    a: list[PredictionSet],
    b: list[PredictionSet],
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> BootstrapResult:
    """Percentile interval of mean-over-seeds metric(a) - metric(b) over the dev examples all sets share.

    `a` and `b` hold one PredictionSet per seed of each config; their seed counts may differ. Deterministic
    given `seed`. Raises SiftBenchError on an empty side, sets with no shared example, or sets that
    disagree on a shared example's label (not the same dev examples).
    """
    name = _resolve(task, metric)
    if not a or not b:
        side = "a" if not a else "b"
        raise SiftBenchError(f"paired_bootstrap: side {side} has no prediction set; pass one per seed of each config.")
    if n_resamples < 1 or not 0 < confidence < 1:
        raise SiftBenchError(
            f"paired_bootstrap: need n_resamples >= 1 and 0 < confidence < 1, not {n_resamples} and {confidence}."
        )
    keys, n_dropped = _align(a, b)
    a_arrays, b_arrays = [_take(s, keys) for s in a], [_take(s, keys) for s in b]
    labels = a_arrays[0][1]
    for s, (_, y) in zip([*a, *b], [*a_arrays, *b_arrays], strict=True):
        if not np.array_equal(y, labels):
            raise SiftBenchError(
                f"Trials {a[0].trial_id} and {s.trial_id} disagree on the labels of shared dev examples: they were "
                "not evaluated on the same examples (other data or max_eval_samples). Compare like with like."
            )
    a_mean = float(np.mean([score(task, name, p, labels) for p, _ in a_arrays]))
    b_mean = float(np.mean([score(task, name, p, labels) for p, _ in b_arrays]))

    n = len(keys)
    rng = np.random.default_rng(seed)
    vector = _vector_metric(task, name)
    stats = np.empty(n_resamples, dtype=np.float64)
    block = max(1, _BLOCK_ENTRIES // n)
    for start in range(0, n_resamples, block):
        r = min(block, n_resamples - start)
        idx = rng.integers(0, n, size=(r, n))  # (r, n): one draw of examples per resample, shared by all seeds
        if vector is not None:
            w = draw_counts(idx)
            a_val = np.mean([vector(w, p, labels) for p, _ in a_arrays], axis=0)
            b_val = np.mean([vector(w, p, labels) for p, _ in b_arrays], axis=0)
        else:
            a_val = np.array([np.mean([score(task, name, p[i], labels[i]) for p, _ in a_arrays]) for i in idx])
            b_val = np.array([np.mean([score(task, name, p[i], labels[i]) for p, _ in b_arrays]) for i in idx])
        stats[start : start + r] = a_val - b_val
    low, high = percentile_interval(stats, confidence)
    return BootstrapResult(
        task=task, metric=metric, diff=a_mean - b_mean, low=low, high=high, confidence=confidence,
        n_examples=n, n_dropped=n_dropped, n_resamples=n_resamples, a_mean=a_mean, b_mean=b_mean,
    )  # fmt: skip


# ----------------------------------------------------------------------------- configs of a results folder


class TrialPredictions:
    """A results folder's prediction rows, turned into PredictionSets per split on first use: reports that
    compare many configs (compare, the leaderboard) parse the rows once per split."""

    def __init__(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self._rows = list(rows)
        self._sets: dict[str | None, dict[str, PredictionSet]] = {}

    def __bool__(self) -> bool:
        return bool(self._rows)

    def for_trials(self, task: str, metric: str, trial_ids: Iterable[str]) -> list[PredictionSet] | None:
        """One set per trial, in order; None when `metric` has no per-example form or a trial has no
        predictions (then the caller falls back to the seed spread)."""
        resolved = bootstrap_metric(task, metric)
        if resolved is None or not self._rows:
            return None
        split = resolved[1]
        if split not in self._sets:
            self._sets[split] = prediction_sets(self._rows, split)
        found = self._sets[split]
        ids = [str(t) for t in trial_ids]
        return [found[t] for t in ids] if ids and all(t in found for t in ids) else None
