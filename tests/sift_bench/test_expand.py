"""Expansion: counts, stable ids, the override order, grids, variants, duplicates; plan rows."""

from __future__ import annotations

from typing import Any

import yaml

from sift_bench.expand import expand, plan_rows
from sift_bench.spec import TrainSettings
from sift_bench.suite import validate_suite

BASE: dict[str, Any] = {
    "name": "t",
    "schema_version": 1,
    "models": ["m1", "m2"],
    "tasks": ["mrpc", "rte"],
    "methods": {"full": {}, "classifier_only": {}, "lora": {"alpha": 16}, "sift": {}},
    "budgets": ["0.1%", "1%"],
    "seeds": [0, 1, 2],
    "train": {"learning_rate": 1e-3, "epochs": 2},
}


def suite(**changes: Any):
    data = yaml.safe_load(yaml.safe_dump(BASE, sort_keys=False))
    data.update(changes)
    return validate_suite(data)


def test_counts_knobless_methods_ignore_budgets() -> None:
    specs = expand(suite())
    # models 2 x tasks 2 x seeds 3 x (full 1 + classifier_only 1 + lora 2 budgets + sift 2 budgets)
    assert len(specs) == 2 * 2 * 3 * (1 + 1 + 2 + 2)
    assert {s.budget for s in specs if s.method in ("full", "classifier_only")} == {None}
    assert {s.budget for s in specs if s.method == "lora"} == {"0.1%", "1%"}
    assert len({s.trial_id for s in specs}) == len(specs)


def test_ids_stable_under_rename_and_reorder() -> None:
    a = {s.trial_id for s in expand(suite())}
    b = expand(
        suite(
            name="renamed",
            models=["m2", "m1"],
            tasks=["rte", "mrpc"],
            seeds=[2, 0, 1],
            budgets=["1%", "0.1%"],
            methods={"sift": {}, "lora": {"alpha": 16}, "classifier_only": {}, "full": {}},
        )
    )
    assert {s.trial_id for s in b} == a
    assert {s.suite for s in b} == {"renamed"}
    # Resources are scheduling, not identity.
    assert {s.trial_id for s in expand(suite(resources={"cpu": 2, "gpu": 0.5}))} == a
    # Written options equal to the defaults resolve to the same trial.
    assert {s.trial_id for s in expand(suite(methods={"sift": {"implementation": "fused"}}))} == {
        s.trial_id for s in expand(suite(methods={"sift": {}}))
    }
    # But anything that changes the result changes the id.
    assert {s.trial_id for s in expand(suite(train={"learning_rate": 2e-3, "epochs": 2}))}.isdisjoint(a)


def test_expansion_is_deterministic_and_in_file_order() -> None:
    one = [s.trial_id for s in expand(suite())]
    assert one == [s.trial_id for s in expand(suite())]
    first = expand(suite())[0]
    assert (first.model, first.task, first.method, first.seed) == ("m1", "mrpc", "full", 0)


def test_override_order() -> None:
    s = suite(
        models=["m1"],
        seeds=[0],
        budgets=[],
        train={"learning_rate": 1e-3, "epochs": 2, "batch_size": 8},
        tasks={"mrpc": {"train": {"learning_rate": 2e-3, "epochs": 5}}, "rte": None},
        methods={"lora": {"train": {"learning_rate": 3e-3}}, "full": {}},
        overrides=[
            {"when": {"method": "lora", "task": "rte"}, "train": {"learning_rate": 4e-3}},
            {"when": {"task": ["rte"], "model": "m1"}, "train": {"max_steps": 7}},
        ],
    )
    got = {(t.task, t.method): t.train for t in expand(s)}
    assert got[("mrpc", "full")].learning_rate == 2e-3 and got[("mrpc", "full")].epochs == 5  # task
    assert got[("mrpc", "lora")].learning_rate == 3e-3 and got[("mrpc", "lora")].epochs == 5  # method > task
    assert got[("rte", "lora")].learning_rate == 4e-3  # override > method
    assert got[("rte", "full")].learning_rate == 1e-3 and got[("rte", "full")].max_steps == 7
    assert got[("rte", "full")].batch_size == 8  # suite defaults
    assert got[("rte", "full")].warmup_ratio == TrainSettings().warmup_ratio  # TrainSettings defaults


def test_grids_and_method_grids() -> None:
    s = suite(
        models=["m1"],
        tasks=["mrpc"],
        seeds=[0, 1],
        budgets=["1%"],
        grid={"learning_rate": [1e-4, 1e-3]},
        methods={"full": {"grid": {"learning_rate": [1e-5], "batch_size": [16, 32]}}, "lora": {}},
    )
    planned = expand(s)
    full = [p for p in planned if p.method == "full"]
    lora = [p for p in planned if p.method == "lora"]
    assert len(lora) == 2 * 2 and len(full) == 1 * 2 * 2  # grid points x seeds
    assert {p.train.learning_rate for p in full} == {1e-5}  # the method's grid replaces the key
    assert {p.train.batch_size for p in full} == {16, 32}
    assert {tuple(sorted(p.grid)) for p in full} == {("batch_size", "learning_rate")}
    assert all(p.train.learning_rate == p.grid["learning_rate"] for p in lora)  # grid beats train
    # The grid point is a label: the id hashes the resolved train settings only.
    assert expand(s)[0].model_copy(update={"grid": {}}).trial_id == planned[0].trial_id


def test_variants_budgets_and_duplicates() -> None:
    s = suite(
        models=["m1"],
        tasks=["mrpc"],
        seeds=[0],
        methods={
            "sift_q": {"method": "sift", "target_modules": ["query"]},
            "sift_all": {"method": "sift", "budgets": ["2%"]},
            "sift": {"budgets": ["2%"]},  # resolves exactly like sift_all: one trial
        },
    )
    planned = expand(s)
    assert [(p.variant, p.method, p.budget) for p in planned] == [
        ("sift_q", "sift", "0.1%"),
        ("sift_q", "sift", "1%"),
        ("sift_all", "sift", "2%"),
    ]
    assert planned[0].method_options["target_modules"] == ["query"]


def test_plan_rows_label_and_state() -> None:
    s = suite(models=["m1"], tasks=["mrpc"], seeds=[0, 1], budgets=["1%"], methods={"sq": {"method": "sift"}})
    specs = expand(s)
    rows = plan_rows(specs, {specs[0].trial_id: "ok", specs[1].trial_id: "failed"})
    assert [(r["method"], r["budget"], r["seed"], r["state"]) for r in rows] == [
        ("sq", "1%", 0, "done"),
        ("sq", "1%", 1, "failed"),
    ]
    assert [r["state"] for r in plan_rows(specs)] == ["to run", "to run"]
