"""The paired bootstrap on constructed prediction sets whose difference is known."""

from __future__ import annotations

import time

import numpy as np
import pytest

from sift_bench.errors import SiftBenchError
from sift_bench.significance import (
    PredictionSet,
    _accuracy,
    _f1,
    _mcc,
    _pearson,
    bootstrap_metric,
    paired_bootstrap,
    prediction_sets,
    score,
)

N = 1000


def labels(n: int = N, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, n)


def right_on(y: np.ndarray, wrong: np.ndarray, trial_id: str) -> PredictionSet:
    """Predictions equal to the labels except at the `wrong` positions (flipped)."""
    p = y.copy()
    p[wrong] = 1 - p[wrong]
    return PredictionSet(trial_id, "dev", np.arange(len(y), dtype=np.int64), p, y.copy())


def random_wrong(share: float, seed: int, n: int = N) -> np.ndarray:
    """Exactly share*n wrong examples, placed at random (independently of other calls)."""
    return np.random.default_rng(seed).permutation(n)[: round(share * n)]


def test_known_difference_is_found() -> None:
    y = labels()
    a, b = right_on(y, random_wrong(0.2, 1), "a"), right_on(y, random_wrong(0.3, 2), "b")
    r = paired_bootstrap("sst2", "accuracy", [a], [b])
    assert r.diff == pytest.approx(0.10, abs=1e-12)
    assert r.a_mean == pytest.approx(0.8) and r.b_mean == pytest.approx(0.7)
    assert r.low < 0.10 < r.high and r.low > 0 and r.distinguishable
    assert r.high - r.low < 0.1  # ~±0.04 for 1000 examples: not a degenerate interval either
    assert (r.n_examples, r.n_dropped, r.n_resamples) == (N, 0, 1000)
    # Seeded: the same inputs give the same interval; another seed a (slightly) different one.
    assert paired_bootstrap("sst2", "accuracy", [a], [b]) == r
    assert paired_bootstrap("sst2", "accuracy", [a], [b], seed=1).low != r.low
    # The other way round: the interval mirrors.
    back = paired_bootstrap("sst2", "accuracy", [b], [a])
    assert back.diff == pytest.approx(-0.10, abs=1e-12) and back.high < 0 and back.distinguishable


def test_identical_sets_give_a_zero_interval() -> None:
    y = labels()
    a = right_on(y, random_wrong(0.25, 3), "a")
    r = paired_bootstrap("mrpc", "f1", [a, a], [a])
    assert (r.diff, r.low, r.high) == (0.0, 0.0, 0.0) and not r.distinguishable


def test_one_example_in_a_thousand_is_not_distinguishable() -> None:
    y = labels()
    wrong = random_wrong(0.2, 4)
    a, b = right_on(y, wrong[1:], "a"), right_on(y, wrong, "b")  # a gets one more example right
    r = paired_bootstrap("sst2", "accuracy", [a], [b])
    assert r.diff == pytest.approx(0.001, abs=1e-12)
    assert r.low == 0.0 and r.high > 0 and not r.distinguishable


def test_pooling_seeds_narrows_the_interval() -> None:
    # Seeds that err on different examples: averaging them cancels per-seed luck, so 3 seeds per side give
    # a narrower interval of the same expected difference than 1 seed per side.
    y = labels()
    a = [right_on(y, random_wrong(0.2, 10 + s), f"a{s}") for s in range(3)]
    b = [right_on(y, random_wrong(0.3, 20 + s), f"b{s}") for s in range(3)]
    one = paired_bootstrap("sst2", "accuracy", a[:1], b[:1])
    three = paired_bootstrap("sst2", "accuracy", a, b)
    assert three.diff == pytest.approx(0.10, abs=1e-12)
    assert three.high - three.low < 0.8 * (one.high - one.low)
    # Unequal seed counts are fine: the statistic is a difference of two means.
    assert paired_bootstrap("sst2", "accuracy", a, b[:1]).diff == pytest.approx(0.10, abs=1e-12)


@pytest.mark.parametrize(
    ("task", "metric"),
    [("mrpc", "f1"), ("mrpc", "combined_score"), ("cola", "matthews_corr"), ("stsb", "pearson"), ("stsb", "spearman")],
)
def test_other_metrics(task: str, metric: str) -> None:
    rng = np.random.default_rng(5)
    n = 300
    if task == "stsb":  # regression: scores in [0, 5]; a is less noisy than b
        y = np.round(rng.uniform(0, 5, n), 2)
        sets = [PredictionSet(t, "dev", np.arange(n), y + rng.normal(0, sd, n), y) for t, sd in (("a", 0.5), ("b", 3))]
    else:
        y = labels(n)
        sets = [right_on(y, random_wrong(share, s, n), t) for t, share, s in (("a", 0.1, 6), ("b", 0.4, 7))]
    r = paired_bootstrap(task, metric, sets[:1], sets[1:], n_resamples=200)
    expected = score(task, metric, sets[0].predictions, y) - score(task, metric, sets[1].predictions, y)
    assert r.diff == pytest.approx(expected) and r.diff > 0
    assert r.low < r.diff < r.high and r.distinguishable


def test_vectorised_metrics_match_the_glue_metrics() -> None:
    """Counts-weighted metrics equal sklearn/scipy on the resampled arrays (the speed path is exact)."""
    rng = np.random.default_rng(8)
    n = 150
    idx = rng.integers(0, n, size=(6, n))
    w = np.stack([np.bincount(i, minlength=n) for i in idx]).astype(np.float64)
    y2, p2 = rng.integers(0, 2, n), rng.integers(0, 2, n)
    y3, p3 = rng.integers(0, 3, n), rng.integers(0, 3, n)
    yf = rng.normal(size=n)
    pf = yf + rng.normal(size=n)
    cases = [
        (_accuracy, "mnli", "accuracy", p3, y3),
        (_f1, "mrpc", "f1", p2, y2),
        (_mcc, "cola", "matthews_corr", p2, y2),
        (_mcc, "cola", "matthews_corr", p3, y3),  # the multi-class formula
        (_pearson, "stsb", "pearson", pf, yf),
    ]
    for fn, task, metric, p, y in cases:
        looped = [score(task, metric, p[i], y[i]) for i in idx]
        np.testing.assert_allclose(fn(w, p, y), looped, atol=1e-12, err_msg=metric)


def test_fast_enough_for_compare() -> None:
    y = labels(872)
    a = [right_on(y, random_wrong(0.2, s, 872), f"a{s}") for s in range(3)]
    b = [right_on(y, random_wrong(0.25, 10 + s, 872), f"b{s}") for s in range(3)]
    start = time.perf_counter()
    paired_bootstrap("mrpc", "f1", a, b)
    paired_bootstrap("sst2", "accuracy", a, b)
    assert time.perf_counter() - start < 1.0


def test_missing_examples_are_dropped_and_misaligned_sets_raise() -> None:
    y = labels()
    a, b = right_on(y, random_wrong(0.2, 1), "a"), right_on(y, random_wrong(0.3, 2), "b")
    half = PredictionSet("h", "dev", a.examples[:600], a.predictions[:600], a.labels[:600])
    r = paired_bootstrap("sst2", "accuracy", [half], [b])
    assert (r.n_examples, r.n_dropped) == (600, 400)
    assert r.diff == pytest.approx(np.mean(half.predictions == y[:600]) - np.mean(b.predictions[:600] == y[:600]))
    other = PredictionSet("o", "dev", a.examples + N, a.predictions, a.labels)  # examples 1000..1999
    with pytest.raises(SiftBenchError, match="share no dev example"):
        paired_bootstrap("sst2", "accuracy", [a], [other])
    relabelled = PredictionSet("r", "dev", b.examples, b.predictions, 1 - b.labels)
    with pytest.raises(SiftBenchError, match="disagree on the labels"):
        paired_bootstrap("sst2", "accuracy", [a], [relabelled])
    with pytest.raises(SiftBenchError, match="side b has no prediction set"):
        paired_bootstrap("sst2", "accuracy", [a], [])
    with pytest.raises(SiftBenchError, match="cannot be computed from per-example predictions"):
        paired_bootstrap("sst2", "eval_loss", [a], [b])


def test_prediction_sets_from_rows() -> None:
    rows = [
        {"trial_id": "t1", "split": "dev", "example": i, "prediction": p, "label": y}
        for i, (p, y) in reversed(list(enumerate([("1", "1"), ("0", "1"), ("1", "0")])))
    ]
    rows += [{"trial_id": "t1", "split": "heldout", "example": 0, "prediction": "0", "label": "0"}]
    rows += [{"trial_id": "t2", "split": "train_only", "example": 0, "prediction": "0", "label": "0"}]
    sets = prediction_sets(rows)
    assert set(sets) == {"t1"}  # t2 has no dev split
    t1 = sets["t1"]
    assert t1.split == "dev" and t1.examples.tolist() == [0, 1, 2]  # sorted by example, heldout left out
    assert t1.predictions.tolist() == [1, 0, 1] and t1.labels.dtype == np.int64
    # STS-B values stay floats; MNLI's two dev splits are concatenated unless one is asked for.
    sts = prediction_sets([{"trial_id": "s", "split": "dev", "example": 0, "prediction": "3.25", "label": "4"}])
    assert sts["s"].predictions.dtype == np.float64 and sts["s"].predictions[0] == 3.25
    mnli = [
        {"trial_id": "m", "split": split, "example": i, "prediction": "2", "label": "2"}
        for split in ("dev_mismatched", "dev_matched")
        for i in range(4)
    ]
    assert prediction_sets(mnli)["m"].split == "dev_matched+dev_mismatched" and len(prediction_sets(mnli)["m"]) == 8
    assert len(prediction_sets(mnli, split="dev_matched")["m"]) == 4
    bad = [{"trial_id": "x", "split": "dev", "example": 0, "prediction": "cat", "label": "1"}]
    with pytest.raises(SiftBenchError, match="trial x has a prediction 'cat' that is not a number"):
        prediction_sets(bad)
    with pytest.raises(SiftBenchError, match="two rows for the same example"):
        prediction_sets(rows + rows[:1])


def test_bootstrap_metric_names() -> None:
    assert bootstrap_metric("mrpc", "f1") == ("f1", None)
    assert bootstrap_metric("mnli", "accuracy_matched") == ("accuracy", "dev_matched")
    assert bootstrap_metric("mnli", "accuracy") == ("accuracy", None)
    assert bootstrap_metric("mrpc", "eval_loss") is None
    assert bootstrap_metric("alpaca", "mmlu_acc") is None
