"""Metric metadata, declared once: direction and display name. Leaderboards and `compare` read it here."""

from __future__ import annotations

from dataclasses import dataclass, replace

from sift_bench.registry import Registry


@dataclass(frozen=True)
class MetricInfo:
    name: str
    higher_is_better: bool = True
    # Metrics in [0, 1] are shown as percentages in tables, as the paper does.
    percent: bool = True


METRICS: Registry[MetricInfo] = Registry("metric")

for _name in (
    "accuracy", "f1", "matthews_corr", "pearson", "spearman",
    "accuracy_matched", "accuracy_mismatched", "combined_score",
    "mmlu_acc", "mmlu_stem", "mmlu_humanities", "mmlu_social_sciences", "mmlu_other",
    "pass@1", "pass@10",
):  # fmt: skip
    METRICS.add(_name, MetricInfo(_name))
METRICS.add("eval_loss", MetricInfo("eval_loss", higher_is_better=False, percent=False))
METRICS.add("train_loss", MetricInfo("train_loss", higher_is_better=False, percent=False))


# A trial that selects on a held-out slice of the training set reports that slice's metrics under this prefix.
HELDOUT_PREFIX = "heldout_"


def metric_info(name: str) -> MetricInfo:
    """Info for a registered metric; `heldout_<x>` shares x's direction and display; unknown metrics are treated
    as higher-is-better scores."""
    if name in METRICS:
        return METRICS.get(name)
    if name.startswith(HELDOUT_PREFIX) and len(name) > len(HELDOUT_PREFIX):
        return replace(metric_info(name[len(HELDOUT_PREFIX) :]), name=name)
    return MetricInfo(name)
