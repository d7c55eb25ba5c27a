"""GLUE metrics (Wang et al., 2019) from scikit-learn and scipy, as the GLUE leaderboard computes them."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

# Task -> the metrics reported for it. `combined_score` is their mean, as in transformers' run_glue.
GLUE_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("matthews_corr",),
    "sst2": ("accuracy",),
    "mrpc": ("f1", "accuracy", "combined_score"),
    "qqp": ("f1", "accuracy", "combined_score"),
    "stsb": ("pearson", "spearman", "combined_score"),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "mnli": ("accuracy",),
}


def _corr(fn, preds: np.ndarray, labels: np.ndarray) -> float:
    # A constant prediction has no correlation; report 0 (as matthews_corrcoef does) rather than NaN,
    # so best-epoch selection and tables stay well defined.
    if np.std(preds) == 0 or np.std(labels) == 0:
        return 0.0
    value = float(fn(preds, labels)[0])
    return 0.0 if math.isnan(value) else value


def glue_metrics(task: str, preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Metrics for one GLUE task. `preds`/`labels`: class ids (N,) or, for STS-B, scores (N,)."""
    out: dict[str, float] = {}
    for name in GLUE_METRICS[task]:
        if name == "accuracy":
            out[name] = float(accuracy_score(labels, preds))
        elif name == "f1":
            out[name] = float(f1_score(labels, preds, zero_division=0.0))
        elif name == "matthews_corr":
            out[name] = float(matthews_corrcoef(labels, preds))
        elif name == "pearson":
            out[name] = _corr(pearsonr, preds, labels)
        elif name == "spearman":
            out[name] = _corr(spearmanr, preds, labels)
        elif name == "combined_score":
            out[name] = float(np.mean(list(out.values())))
    return out
