"""What every report needs to know about a metric, declared once: its direction, its scale and how one value
is shown. Leaderboards, `compare`, `pairs`, the dashboard, trials (best epoch) and `sift-bench eval` read it
here; a metric nobody registered is an error, never a silently assumed higher-is-better percentage.

Adding a metric is one `register_metric(...)` line: below for the built-in ones, or in the module that
produces it (a task or an evaluator module, imported before any report reads its tables).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sift_bench.errors import SiftBenchError
from sift_bench.registry import Registry, did_you_mean


@dataclass(frozen=True)
class MetricInfo:
    name: str
    higher_is_better: bool = True
    # Scores in [0, 1] are shown as percentage points in tables, as the paper does; others in raw units.
    percent: bool = True

    @property
    def scale(self) -> float:
        """Raw units -> display units (points for percent metrics)."""
        return 100.0 if self.percent else 1.0

    @property
    def unit(self) -> str:
        return "pt" if self.percent else ""

    def signed(self, value: float) -> float:
        """`value` oriented so that larger is better, whatever the metric's direction."""
        return value if self.higher_is_better else -value

    def is_better(self, a: float, b: float) -> bool:
        """`a` strictly better than `b` (ties are not better: callers keep the first of equals)."""
        return self.signed(a) > self.signed(b)

    def text(self, value: float) -> str:
        """One raw value as a per-trial table shows it: points with 2 decimals, raw units with 4."""
        return f"{value * self.scale:.2f}" if self.percent else f"{value:.4f}"


METRICS: Registry[MetricInfo] = Registry("metric")


# Numbered families: "pass@" covers pass@1, pass@10, ... (the prefix followed by a positive integer).
_NUMBERED: dict[str, MetricInfo] = {}


def register_metric(
    name: str, *, higher_is_better: bool = True, percent: bool = True, numbered: bool = False
) -> MetricInfo:
    """Declare a metric, or with `numbered` every `<name><k>` for an integer k >= 1 (a duplicate name is a
    programming error)."""
    info = MetricInfo(name, higher_is_better=higher_is_better, percent=percent)
    if not numbered:
        return METRICS.add(name, info)
    if name in _NUMBERED:
        raise ValueError(f"There is already a metric family called '{name}'; choose a unique name.")
    _NUMBERED[name] = info
    return info


for _name in (
    "accuracy", "f1", "matthews_corr", "pearson", "spearman",
    "accuracy_matched", "accuracy_mismatched", "combined_score",
    "mmlu_acc", "mmlu_stem", "mmlu_humanities", "mmlu_social_sciences", "mmlu_other",
):  # fmt: skip
    register_metric(_name)
register_metric("pass@", numbered=True)  # pass@1, pass@10, ... (HumanEval: any k)
register_metric("eval_loss", higher_is_better=False, percent=False)
register_metric("train_loss", higher_is_better=False, percent=False)
# The pre-trained ability a trial lost (sift_bench.forgetting), in its measure's units: points or nats/token.
register_metric("forgetting", higher_is_better=False, percent=False)


# A trial that selects on a held-out slice of the training set reports that slice's metrics under this prefix.
HELDOUT_PREFIX = "heldout_"


def heldout_metric(name: str) -> str:
    """The held-out slice's name for metric `name` (`heldout_accuracy`)."""
    return f"{HELDOUT_PREFIX}{name}"


def metric_info(name: str) -> MetricInfo:
    """Info for a registered metric; `heldout_<x>` shares x's direction and display. Raises SiftBenchError for
    a metric nobody registered."""
    if name in METRICS:
        return METRICS.get(name)
    if name.startswith(HELDOUT_PREFIX) and len(name) > len(HELDOUT_PREFIX):
        return replace(metric_info(name[len(HELDOUT_PREFIX) :]), name=name)
    for prefix, info in _NUMBERED.items():
        k = name[len(prefix) :]
        if name.startswith(prefix) and k.isdigit() and int(k) >= 1:
            return replace(info, name=name)
    raise SiftBenchError(
        f"Unknown metric '{name}'.{did_you_mean(name, METRICS.names())} Register it (direction and scale) with "
        "`sift_bench.metrics.register_metric` in the module that produces it; see docs/architecture.md."
    )
