"""Is a difference in forgetting real? A paired bootstrap over the items of the forgetting sample, pooled over seeds.

Each trial keeps its forgetting measure's per-item values before and after training (forgetting.parquet: an
STS-B pair's cosine and gold score, or a sentence's summed token loss and scored tokens). For two configs on
the same sample (each a list of trials, one per seed) the statistic is

    mean over a's seeds of forgetting(a_s)  -  mean over b's seeds of forgetting(b_s)

where a trial's forgetting is its measure's value on the items before training minus after (sts_zero_shot:
100 x the Spearman correlation of cosine with gold) or after minus before (a loss: summed loss / tokens),
as `sift_bench.forgetting` computes it. Each resample draws one multiset of items and applies it to the
before and after values of every trial of both sides, so the items stay paired and the seeds are pooled, as
`sift_bench.significance.paired_bootstrap` does for dev examples; the interval is the percentile interval.

Spearman on a resample that repeats items is the Pearson correlation of average ranks, which is computed for
all resamples at once from the draw counts (exact: the value scipy's spearmanr gives on the repeated items).

Reports never load torch, so the measures' units and direction are repeated here from
`sift_bench.forgetting.MEASURES`; a test holds the two equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sift_bench.defaults import CONFIDENCE, N_RESAMPLES
from sift_bench.errors import SiftBenchError
from sift_bench.significance import BootstrapResult, draw_counts, percentile_interval

METRIC = "forgetting"
# measure -> units of its value (and of forgetting); a correlation's ability rises, a loss's falls.
UNITS = {"sts_zero_shot": "points", "mlm_loss": "nats/token", "lm_loss": "nats/token"}
HIGHER_IS_BETTER = {"sts_zero_shot": True, "mlm_loss": False, "lm_loss": False}
# Decimals a table shows: a tenth of a point of Spearman, a thousandth of a nat per token.
_DECIMALS = {"points": 2, "nats/token": 3}
# Resampled counts are processed in blocks of about this many entries, so memory stays small.
_BLOCK_ENTRIES = 1_000_000


def units(measure: str | None) -> str:
    return UNITS.get(measure or "", "")


def value_text(value: float, measure: str | None, *, sign: bool = False) -> str:
    """One forgetting value as tables show it: 2 decimals in points, 3 in nats/token."""
    digits = _DECIMALS.get(units(measure), 2)
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def stats_text(mean: float, std: float | None, n: int, measure: str | None) -> str:
    """Mean ± std over seeds ("1.23 ± 0.40"); the mean alone for one seed."""
    if n > 1 and std is not None:
        return f"{value_text(mean, measure)} ± {value_text(std, measure)}"
    return value_text(mean, measure)


@dataclass(frozen=True)
class ItemSet:
    """One trial's per-item forgetting values, sorted by item."""

    trial_id: str
    items: np.ndarray  # (n,) int64
    before: np.ndarray  # (n,) the measure per item on the loaded weights
    after: np.ndarray  # (n,) ... on the scored epoch's weights
    weights: np.ndarray  # (n,) 1 per pair; scored tokens per sentence
    gold: np.ndarray | None  # (n,) sts_zero_shot's gold scores; None for a loss

    def __len__(self) -> int:
        return len(self.items)

    @property
    def higher_is_better(self) -> bool:
        return self.gold is not None  # only the correlation measure has gold scores

    def take(self, keys: np.ndarray) -> ItemSet:
        pos = np.searchsorted(self.items, keys)
        gold = None if self.gold is None else self.gold[pos]
        return ItemSet(self.trial_id, keys, self.before[pos], self.after[pos], self.weights[pos], gold)


def item_sets(rows: Iterable[Mapping[str, Any]]) -> dict[str, ItemSet]:
    """Rows of forgetting.parquet (`sift_bench.results.read_forgetting`) as one ItemSet per trial."""
    by_trial: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_trial.setdefault(str(row["trial_id"]), []).append(row)
    out: dict[str, ItemSet] = {}
    for trial_id, trial_rows in by_trial.items():
        trial_rows.sort(key=lambda r: int(r["item"]))
        items = np.asarray([int(r["item"]) for r in trial_rows], dtype=np.int64)
        golds = [r.get("gold") for r in trial_rows]
        repeated = len(items) > 1 and bool(np.any(items[1:] == items[:-1]))
        if repeated or len({g is None for g in golds}) > 1:
            raise SiftBenchError(
                f"forgetting.parquet: trial {trial_id} has two rows for one item, or gold scores on some items "
                "only; the file is damaged. Delete the trial's rows and rerun it."
            )

        def column(name: str, rows: list[Mapping[str, Any]] = trial_rows) -> np.ndarray:
            return np.asarray([float(r[name]) for r in rows], dtype=np.float64)

        gold = None if golds[0] is None else np.asarray(golds, dtype=np.float64)
        out[trial_id] = ItemSet(trial_id, items, column("before"), column("after"), column("weight"), gold)
    return out


# ----------------------------------------------------------------------------- the measure on resamples


def _midranks(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(r, n) average ranks of the n values `x` within each resample, item i counted w[k, i] times: the ranks
    Spearman gives the repeated items (ties, repeats included, share the mean of their positions)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    new_run = np.r_[True, xs[1:] != xs[:-1]]  # (n,) a sorted position starts a run of equal values
    run = np.cumsum(new_run) - 1  # (n,) the run of each sorted position
    starts = np.flatnonzero(new_run)
    ends = np.r_[starts[1:], len(x)] - 1
    cum = np.cumsum(w[:, order], axis=1)  # (r, n) draws up to each sorted position
    below = np.where(starts > 0, cum[:, starts - 1], 0.0)  # (r, runs) draws of smaller values
    mid = below + (cum[:, ends] - below + 1) / 2  # (r, runs) the mean rank of each run's draws
    ranks = np.empty_like(cum)
    ranks[:, order] = mid[:, run]
    return ranks


def _weighted_pearson(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(r,) Pearson correlation of the rows of x and y, entries weighted by w; 0 where a row is constant."""
    s = w.sum(axis=1, keepdims=True)
    dx = x - (w * x).sum(axis=1, keepdims=True) / s
    dy = y - (w * y).sum(axis=1, keepdims=True) / s
    cov, vx, vy = (w * dx * dy).sum(axis=1), (w * dx * dx).sum(axis=1), (w * dy * dy).sum(axis=1)
    den = np.sqrt(vx * vy)
    return np.where(den > 0, cov / np.where(den > 0, den, 1.0), 0.0)


def _ability(w: np.ndarray, values: np.ndarray, s: ItemSet, gold_ranks: np.ndarray | None) -> np.ndarray:
    """(r,) the measure on each resample: 100 x Spearman with gold, or loss per scored token."""
    if gold_ranks is None:
        return (w @ values) / (w @ s.weights)
    return 100.0 * _weighted_pearson(w, _midranks(w, values), gold_ranks)


def _forgetting(w: np.ndarray, sets: list[ItemSet], gold_ranks: np.ndarray | None) -> np.ndarray:
    """(r,) mean over the sets (seeds) of forgetting on each resample; a `before` shared by several trials (the
    same pre-trained weights) is computed once."""
    seen: dict[bytes, np.ndarray] = {}
    total = np.zeros(len(w))
    for s in sets:
        key = s.before.tobytes()
        if key not in seen:
            seen[key] = _ability(w, s.before, s, gold_ranks)
        before, after = seen[key], _ability(w, s.after, s, gold_ranks)
        total += before - after if s.higher_is_better else after - before
    return total / len(sets)


# ----------------------------------------------------------------------------- the bootstrap


def _aligned(a: list[ItemSet], b: list[ItemSet]) -> tuple[list[ItemSet], list[ItemSet], int]:
    """Both sides on the items every set has, and how many items some set lacks."""
    sets = [*a, *b]
    if len({s.higher_is_better for s in sets}) > 1:
        raise SiftBenchError(
            f"Trials {', '.join(s.trial_id for s in sets)} measured forgetting differently (a correlation on "
            "some, a loss on others); compare methods on models with the same forgetting measure."
        )
    common, union = sets[0].items, sets[0].items
    for s in sets[1:]:
        common, union = np.intersect1d(common, s.items), np.union1d(union, s.items)
    if len(common) == 0:
        raise SiftBenchError(
            f"The forgetting samples of trials {', '.join(s.trial_id for s in sets)} share no item; compare "
            "trials measured on the same sample."
        )
    a2, b2 = [s.take(common) for s in a], [s.take(common) for s in b]
    ref = a2[0]
    for s in [*a2, *b2]:
        same_gold = ref.gold is None or np.array_equal(s.gold, ref.gold)
        if not (same_gold and np.array_equal(s.weights, ref.weights)):
            raise SiftBenchError(
                f"Trials {ref.trial_id} and {s.trial_id} disagree on the gold scores or token counts of shared "
                "forgetting items: they were not measured on the same sample (another tokenizer or sample)."
            )
    return a2, b2, len(union) - len(common)


def forgetting_bootstrap(
    a: list[ItemSet],
    b: list[ItemSet],
    *,
    task: str = "",
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> BootstrapResult:
    """Percentile interval of mean-over-seeds forgetting(a) - forgetting(b) over the items all sets share
    (`n_examples` counts items). Deterministic given `seed`. Raises SiftBenchError on an empty side, sets
    with no shared item, or sets measured on different samples or measures."""
    if not a or not b:
        side = "a" if not a else "b"
        raise SiftBenchError(f"forgetting_bootstrap: side {side} has no item set; pass one per seed of each config.")
    if n_resamples < 1 or not 0 < confidence < 1:
        raise SiftBenchError(
            f"forgetting_bootstrap: need n_resamples >= 1 and 0 < confidence < 1, not {n_resamples} and {confidence}."
        )
    a, b, n_dropped = _aligned(a, b)
    n, gold = len(a[0]), a[0].gold

    def forgetting_diff(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gold_ranks = None if gold is None else _midranks(w, gold)
        return _forgetting(w, a, gold_ranks), _forgetting(w, b, gold_ranks)

    a_all, b_all = forgetting_diff(np.ones((1, n)))
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples, dtype=np.float64)
    block = max(1, _BLOCK_ENTRIES // n)
    for start in range(0, n_resamples, block):
        r = min(block, n_resamples - start)
        w = draw_counts(rng.integers(0, n, size=(r, n)))  # one draw of items per resample, shared by all trials
        a_val, b_val = forgetting_diff(w)
        stats[start : start + r] = a_val - b_val
    low, high = percentile_interval(stats, confidence)
    a_mean, b_mean = float(a_all[0]), float(b_all[0])
    return BootstrapResult(
        task=task, metric=METRIC, diff=a_mean - b_mean, low=low, high=high, confidence=confidence, n_examples=n,
        n_dropped=n_dropped, n_resamples=n_resamples, a_mean=a_mean, b_mean=b_mean,
    )  # fmt: skip


class TrialForgetting:
    """A results folder's forgetting rows, turned into ItemSets on first use (reports compare many configs)."""

    def __init__(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self._rows = list(rows)
        self._sets: dict[str, ItemSet] | None = None

    def __bool__(self) -> bool:
        return bool(self._rows)

    def for_trials(self, trial_ids: Iterable[str]) -> list[ItemSet] | None:
        """One set per trial, in order; None when a trial has no per-item forgetting."""
        if self._sets is None:
            self._sets = item_sets(self._rows)
        ids = [str(t) for t in trial_ids]
        return [self._sets[t] for t in ids] if ids and all(t in self._sets for t in ids) else None
