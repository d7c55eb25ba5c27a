"""Budgets: one parser (`Budget`) for every form a suite or the CLI writes; each method's knob lands within
10% of the asked count, or on the nearest achievable knob value."""

from __future__ import annotations

import pytest
from conftest import tiny_bert

from sift_bench.budget import base_param_count, match_budget, resolve_knob
from sift_bench.errors import SiftBenchError
from sift_bench.methods import METHODS
from sift_bench.spec import Budget, TrialSpec

HEAD = ["classifier.weight", "classifier.bias"]
BUDGETED = ["sift", "random", "lora", "adapter"]


def test_parse_budget_forms_and_params():
    assert Budget.parse("0.8%").params(1_000_000) == 8000
    assert Budget.parse(" 1.5 % ").params(1000) == 15
    assert Budget.parse("0.00001%").params(10) == 1  # never zero parameters
    for count in (123, "123", "1e2", "1,000", "1_000"):
        assert Budget.parse(count).params(10) == int(float(str(count).replace(",", "").replace("_", "")))
    assert Budget.parse("1e6") == Budget.parse(1_000_000) == Budget.parse("1,000,000")


def test_budget_canonical_text_keeps_trial_ids():
    # The JSON form is what trial ids hash: "0.8%" must stay "0.8%" and a count an int, as before.
    assert [Budget.parse(v).to_json() for v in ("0.8%", "0.80%", " 1 %", "100%", 786432, "786432")] == [
        "0.8%", "0.8%", "1%", "100%", 786432, 786432,
    ]  # fmt: skip
    assert [str(Budget.parse(v)) for v in ("0.03%", ".5%", "0.00001%", 805306)] == [
        "0.03%", "0.5%", "0.00001%", "805306",
    ]  # fmt: skip
    spec = TrialSpec(model="m", task="mrpc", method="lora", budget="0.80%")
    assert spec.model_dump(mode="json")["budget"] == "0.8%" and spec.budget == "0.8%"
    assert spec.trial_id == TrialSpec(model="m", task="mrpc", method="lora", budget="0.8%").trial_id
    assert TrialSpec.model_validate_json(spec.model_dump_json()) == spec
    assert isinstance(spec.model_dump()["budget"], Budget)  # Python dumps keep the type


def test_budget_order():
    budgets = [Budget.parse(v) for v in (5000, "2%", "0.1%", 300)]
    assert [str(b) for b in sorted(budgets)] == ["0.1%", "2%", "300", "5000"]  # shares, then counts
    assert sorted([Budget.parse("1%"), None], key=Budget.order) == [None, Budget.parse("1%")]


@pytest.mark.parametrize(
    "bad,fragment",
    [
        ("0%", "must be in (0%, 100%]"),
        ("120%", "must be in (0%, 100%]"),
        ("lots", "a budget is a percentage like '0.8%'"),
        ("-5", "a budget is a percentage like '0.8%'"),
        ("1e-3", "a budget is a percentage like '0.8%'"),
        (0, "must be positive"),
        (0.008, "write a percentage such as '0.8%'"),
        (1.0e6, "write the count as an integer, 1000000"),
        (True, "a budget is a percentage"),
    ],
)
def test_bad_budgets_name_the_source_and_the_forms(bad, fragment):
    with pytest.raises(SiftBenchError) as info:
        Budget.parse(bad, source="--budget")
    assert str(info.value).startswith(f"--budget {bad!r}: ") and fragment in str(info.value)
    with pytest.raises(ValueError, match="budget"):  # pydantic reports it at the field
        TrialSpec(model="m", task="mrpc", method="lora", budget=bad)


def test_base_params_exclude_the_head():
    model = tiny_bert()
    assert base_param_count(model, HEAD) == sum(p.numel() for p in model.parameters()) - 66


def _closest_possible(method, model, opts, target: int, value: float) -> bool:
    """No other integer knob value lands closer to the target."""
    got = abs(method.count(model, opts, value) - target)
    top = int(method.knob_max(model, opts))
    return all(abs(method.count(model, opts, v) - target) >= got for v in range(1, top + 1))


@pytest.mark.parametrize("name", BUDGETED)
@pytest.mark.parametrize("text", ["2%", "5%", 3000])
def test_budget_is_matched_within_10_percent_or_nearest(name: str, text: str | int):
    model, method, budget = tiny_bert(), METHODS.get(name), Budget.parse(text)
    opts = method.parse_options({})
    target = budget.params(base_param_count(model, HEAD))
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
    _, count = match_budget(method, model, method.parse_options({}), Budget.parse("0.8%"), head)
    target = Budget.parse("0.8%").params(base_param_count(model, head))
    assert abs(count - target) <= 0.1 * target


@pytest.mark.parametrize("name", BUDGETED)
def test_impossible_budget_names_method_and_largest(name: str):
    model, method = tiny_bert(), METHODS.get(name)
    opts = method.parse_options({})
    most = method.count(model, opts, method.knob_max(model, opts))
    with pytest.raises(SiftBenchError, match=rf"method '{name}'.*largest possible is {most:,}"):
        resolve_knob(method, model, opts, Budget.parse(most + 1), HEAD)


def test_knobless_methods_ignore_the_budget_and_defaults_apply_without_one():
    model = tiny_bert()
    for name in ("full", "classifier_only"):
        m = METHODS.get(name)
        assert resolve_knob(m, model, m.parse_options({}), Budget.parse("1%"), HEAD) is None
    lora = METHODS.get("lora")
    assert resolve_knob(lora, model, lora.parse_options({"rank": 4}), None, HEAD) == 4


def test_budget_and_explicit_knob_conflict():
    model, m = tiny_bert(), METHODS.get("sift")
    with pytest.raises(SiftBenchError, match="both budget"):
        resolve_knob(m, model, m.parse_options({"sparsity": 0.1}), Budget.parse("1%"), HEAD)
