"""Budgets: "0.8%" of the base model's parameters (task head excluded) or an absolute count, turned into
each budgeted method's knob (SIFT/random sparsity, LoRA rank, adapter bottleneck) closest to it.

The paper matches methods by trainable parameters excluding the classifier (Table 2: 0.8M each on
RoBERTa-large); the same count is what `Method.count` returns.
"""

from __future__ import annotations

import re

from torch import nn

from sift_bench.errors import SiftBenchError
from sift_bench.methods.base import Method, MethodOptions

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*$")


def base_param_count(model: nn.Module, head: list[str]) -> int:
    """Parameters of the pre-trained model, task head excluded: what a "%" budget is a fraction of."""
    names = set(head)
    return sum(p.numel() for n, p in model.named_parameters() if n not in names)


def parse_budget(budget: str | int | None, base_params: int) -> int | None:
    """'0.8%' -> 0.8% of `base_params`; 800000 or '800000' -> that count; None -> None."""
    if budget is None:
        return None
    if isinstance(budget, str) and (m := _PERCENT.match(budget)):
        fraction = float(m.group(1)) / 100
        if not 0 < fraction <= 1:
            raise SiftBenchError(f"budget '{budget}': a percentage must be in (0%, 100%].")
        return max(1, round(fraction * base_params))
    try:
        count = int(budget)
    except (TypeError, ValueError):
        raise SiftBenchError(f"budget {budget!r}: write a percentage ('0.8%') or a parameter count (800000).") from None
    if count < 1 or isinstance(budget, float):
        raise SiftBenchError(f"budget {budget!r}: a parameter count must be a positive integer.")
    return count


def resolve_knob(
    method: Method, model: nn.Module, opts: MethodOptions, budget: str | int | None, head: list[str]
) -> float | None:
    """The knob value for `method` on `model`: from the budget when one is given, else from the options.

    Methods without a knob (full, classifier_only) ignore the budget. Setting both a budget and the knob
    option is an error (which should win would be a guess). A budget the method cannot reach raises a
    SiftBenchError naming the method and the largest budget it can take.
    """
    if method.knob is None:
        return None
    if budget is None:
        return method.default_knob(opts)
    if method.knob in opts.model_fields_set:
        raise SiftBenchError(
            f"method '{method.name}': both budget={budget!r} and method_options.{method.knob} are set; keep one."
        )
    target = parse_budget(budget, base_param_count(model, head))
    assert target is not None
    top = method.knob_max(model, opts)
    most = method.count(model, opts, top)
    if target > most:
        raise SiftBenchError(
            f"budget {budget!r} ({target:,} parameters) is impossible for method '{method.name}': the largest "
            f"possible is {most:,} ({method.knob}={top:g} on its target modules). Lower the budget or target "
            "more modules."
        )
    if not method.knob_is_int:  # sparsity: the count is (almost) linear in it
        return min(top, target / most * top)
    # Integer knob: the largest value whose count <= target, then pick it or the next, whichever is closer.
    lo, hi = 1, int(top)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if method.count(model, opts, mid) <= target else (lo, mid - 1)
    candidates = [v for v in (lo, lo + 1) if v <= top]
    return float(min(candidates, key=lambda v: abs(method.count(model, opts, v) - target)))


def match_budget(
    method: Method, model: nn.Module, opts: MethodOptions, budget: str | int, head: list[str]
) -> tuple[float | None, int | None]:
    """(knob value, trainable params it gives) for a budget; for planning tables and tests."""
    value = resolve_knob(method, model, opts, budget, head)
    return value, (None if value is None else method.count(model, opts, value))
