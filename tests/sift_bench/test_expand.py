"""Expansion: counts, stable ids, the override order, grids, variants, duplicates."""

from __future__ import annotations

from typing import Any

import yaml

from sift_bench.expand import expand, plan
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
    one = [p.trial_id for p in plan(suite())]
    assert one == [p.trial_id for p in plan(suite())]
    first = plan(suite())[0].spec
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
    planned = plan(s)
    full = [p for p in planned if p.spec.method == "full"]
    lora = [p for p in planned if p.spec.method == "lora"]
    assert len(lora) == 2 * 2 and len(full) == 1 * 2 * 2  # grid points x seeds
    assert {p.spec.train.learning_rate for p in full} == {1e-5}  # the method's grid replaces the key
    assert {p.spec.train.batch_size for p in full} == {16, 32}
    assert {tuple(sorted(p.grid)) for p in full} == {("batch_size", "learning_rate")}
    assert all(p.spec.train.learning_rate == p.grid["learning_rate"] for p in lora)  # grid beats train


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
    planned = plan(s)
    assert [(p.variant, p.spec.method, p.spec.budget) for p in planned] == [
        ("sift_q", "sift", "0.1%"),
        ("sift_q", "sift", "1%"),
        ("sift_all", "sift", "2%"),
    ]
    assert planned[0].spec.method_options["target_modules"] == ["query"]


def test_plan_command_prints_table_and_count(tmp_path) -> None:
    from typer.testing import CliRunner

    from sift_bench.cli import app

    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(BASE, sort_keys=False))
    result = CliRunner().invoke(app, ["plan", str(path), "--results", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "72 trials (72 to run, 0 done)" in result.output
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**BASE, "seeeds": [1]}, sort_keys=False))
    result = CliRunner().invoke(app, ["plan", str(bad)])
    assert result.exit_code == 1 and "Did you mean 'seeds'?" in result.output
