"""Budgets (`sift_bench.spec.Budget`: "0.8%" of the base model's parameters, task head excluded, or an
absolute count) turned into each budgeted method's knob (SIFT/random sparsity, LoRA rank, adapter
bottleneck) closest to it.

The paper matches methods by trainable parameters excluding the classifier (Table 2: 0.8M each on
RoBERTa-large); the same count is what `Method.count` returns.
"""

from __future__ import annotations

from torch import nn

from sift_bench.errors import SiftBenchError
from sift_bench.methods.base import Method, MethodOptions
from sift_bench.spec import Budget


def base_param_count(model: nn.Module, head: list[str]) -> int:
    """Parameters of the pre-trained model, task head excluded: what a "%" budget is a fraction of."""
    names = set(head)
    return sum(p.numel() for n, p in model.named_parameters() if n not in names)


def resolve_knob(
    method: Method, model: nn.Module, opts: MethodOptions, budget: Budget | None, head: list[str]
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
            f"method '{method.name}': both budget '{budget}' and method_options.{method.knob} are set; keep one."
        )
    target = budget.params(base_param_count(model, head))
    top = method.knob_max(model, opts)
    most = method.count(model, opts, top)
    if target > most:
        raise SiftBenchError(
            f"budget '{budget}' ({target:,} parameters) is impossible for method '{method.name}': the largest "
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
    method: Method, model: nn.Module, opts: MethodOptions, budget: Budget, head: list[str]
) -> tuple[float | None, int | None]:
    """(knob value, trainable params it gives) for a budget; for planning tables and tests."""
    value = resolve_knob(method, model, opts, budget, head)
    return value, (None if value is None else method.count(model, opts, value))
