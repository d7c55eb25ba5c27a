"""Budgets land within 10% of the asked count, or on the nearest achievable knob value."""

from __future__ import annotations

import pytest
from conftest import tiny_bert

from sift_bench.budget import base_param_count, match_budget, parse_budget, resolve_knob
from sift_bench.errors import SiftBenchError
from sift_bench.methods import METHODS

HEAD = ["classifier.weight", "classifier.bias"]
BUDGETED = ["sift", "random", "lora", "adapter"]


def test_parse_budget():
    assert parse_budget("0.8%", 1_000_000) == 8000
    assert parse_budget(" 1.5 % ", 1000) == 15
    assert parse_budget(123, 10) == 123
    assert parse_budget("800000", 10) == 800000
    assert parse_budget(None, 10) is None
    for bad in ("0%", "120%", "lots", "-5", 0):
        with pytest.raises(SiftBenchError, match="budget"):
            parse_budget(bad, 1000)


def test_base_params_exclude_the_head():
    model = tiny_bert()
    assert base_param_count(model, HEAD) == sum(p.numel() for p in model.parameters()) - 66


def _closest_possible(method, model, opts, target: int, value: float) -> bool:
    """No other integer knob value lands closer to the target."""
    got = abs(method.count(model, opts, value) - target)
    top = int(method.knob_max(model, opts))
    return all(abs(method.count(model, opts, v) - target) >= got for v in range(1, top + 1))


@pytest.mark.parametrize("name", BUDGETED)
@pytest.mark.parametrize("budget", ["2%", "5%", 3000])
def test_budget_is_matched_within_10_percent_or_nearest(name: str, budget: str | int):
    model, method = tiny_bert(), METHODS.get(name)
    opts = method.parse_options({})
    target = parse_budget(budget, base_param_count(model, HEAD))
    value, count = match_budget(method, model, opts, budget, HEAD)
    assert value is not None and count is not None
    within = abs(count - target) <= 0.1 * target
    assert within or (method.knob_is_int and _closest_possible(method, model, opts, target, value))


@pytest.fixture(scope="module")
def minilm():
    from sift_bench.models import head_names, load_model

    model, _ = load_model("minilm-l6", "classification", 2)
    return model, head_names(model, "classification")


@pytest.mark.parametrize("name", BUDGETED)
def test_paper_budget_on_minilm_is_within_10_percent(name: str, minilm):
    """0.8% of MiniLM-L6 (22.7M) is ~182k trainable parameters for every budgeted method."""
    model, head = minilm
    method = METHODS.get(name)
    _, count = match_budget(method, model, method.parse_options({}), "0.8%", head)
    target = parse_budget("0.8%", base_param_count(model, head))
    assert abs(count - target) <= 0.1 * target


@pytest.mark.parametrize("name", BUDGETED)
def test_impossible_budget_names_method_and_largest(name: str):
    model, method = tiny_bert(), METHODS.get(name)
    opts = method.parse_options({})
    most = method.count(model, opts, method.knob_max(model, opts))
    with pytest.raises(SiftBenchError, match=rf"method '{name}'.*largest possible is {most:,}"):
        resolve_knob(method, model, opts, most + 1, HEAD)


def test_knobless_methods_ignore_the_budget_and_defaults_apply_without_one():
    model = tiny_bert()
    for name in ("full", "classifier_only"):
        m = METHODS.get(name)
        assert resolve_knob(m, model, m.parse_options({}), "1%", HEAD) is None
    lora = METHODS.get("lora")
    assert resolve_knob(lora, model, lora.parse_options({"rank": 4}), None, HEAD) == 4


def test_budget_and_explicit_knob_conflict():
    model, m = tiny_bert(), METHODS.get("sift")
    with pytest.raises(SiftBenchError, match="both budget"):
        resolve_knob(m, model, m.parse_options({"sparsity": 0.1}), "1%", HEAD)
