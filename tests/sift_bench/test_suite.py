"""Suite loading: every shipped suite validates; bad suites fail before anything runs, with the file,
the field path, what was wrong and, for misspelt names, the nearest valid one; all errors at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sift_bench.errors import SiftBenchError
from sift_bench.expand import expand
from sift_bench.search import worst_case_extensions
from sift_bench.suite import SuiteError, load_suite, validate_suite

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "suites").glob("*.yaml"))

GOOD: dict[str, Any] = {
    "name": "t",
    "schema_version": 1,
    "models": ["m"],
    "tasks": ["mrpc"],
    "methods": {"lora": {"dropout": 0.1}, "full": {}},
    "budgets": ["0.8%"],
    "seeds": [0],
}


def bad(**changes: Any) -> dict[str, Any]:
    data = yaml.safe_load(yaml.safe_dump(GOOD, sort_keys=False))  # deep copy
    data.update(changes)
    return data


def errors_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(SuiteError) as info:
        validate_suite(data, "x.yaml")
    assert str(info.value).startswith("x.yaml: ")
    return info.value.errors


def test_shipped_suites_are_present() -> None:
    names = {p.stem for p in SHIPPED}
    assert {"quickstart", "glue_budget", "glue", "modules_ablation", "instruct"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_suite_validates(path: Path) -> None:
    suite = load_suite(path)
    assert suite.name == path.stem


def test_good_suite_and_shorthands() -> None:
    suite = validate_suite(bad(evaluators=["mmlu"], methods=["full", "sift"]))
    assert set(suite.tasks) == {"mrpc"} and suite.evaluators == {"mmlu": {}}
    assert suite.methods["sift"].options() == {}


# Each case: the suite change, the field path reported, and a fragment of the message.
BAD_CASES = [
    ("misspelt top-level key", {"seeeds": [1]}, "seeeds", "unknown key 'seeeds'. Did you mean 'seeds'?"),
    ("misspelt method", {"methods": {"loar": {}}}, "methods.loar", "unknown method 'loar'. Did you mean 'lora'?"),
    ("misspelt method option", {"methods": {"lora": {"rnak": 4}}}, "methods.lora.rnak",
     "unknown key 'rnak'. Did you mean 'rank'?"),
    ("bad option value", {"methods": {"lora": {"rank": 0}}}, "methods.lora.rank",
     "greater than or equal to 1"),
    ("misspelt task", {"tasks": ["mrcp"]}, "tasks.mrcp", "unknown task 'mrcp'. Did you mean 'mrpc'?"),
    ("misspelt train key", {"train": {"learning_rte": 1e-3}}, "train.learning_rte",
     "Did you mean 'learning_rate'?"),
    ("bad train value", {"train": {"learning_rate": -1}}, "train.learning_rate", "greater than 0"),
    ("bad budget", {"budgets": ["lots"]}, "budgets.0", "a budget is a percentage like '0.8%'"),
    ("ambiguous fraction budget", {"budgets": [0.008]}, "budgets.0", "write a percentage such as '0.8%'"),
    ("budget on a knob-less method", {"methods": {"full": {"budgets": ["1%"]}}}, "methods.full.budgets",
     "has no budget knob"),
    ("unknown grid key", {"grid": {"lr": [1e-4]}}, "grid.lr", "unknown grid key 'lr'"),
    ("bad grid value", {"grid": {"batch_size": [8, 0]}}, "grid.batch_size.1", "greater than or equal to 1"),
    ("missing required key", {"models": None}, "models", "valid list"),
    ("wrong schema version", {"schema_version": 2}, "schema_version", "Input should be 1, got 2"),
    ("bad suite name", {"name": "my suite/../x"}, "name", "should match pattern"),
    ("unknown evaluator", {"evaluators": {"mmul": {}}}, "evaluators.mmul", "Did you mean 'mmlu'?"),
    ("bad evaluator option", {"evaluators": {"mmlu": {"shots": -1}}}, "evaluators.mmlu.shots",
     "greater than or equal to 0"),
    ("override for a method not in the suite", {"overrides": [{"when": {"method": "sfit"}, "train": {}}]},
     "overrides.0.when.method", "'sfit' is not a method of this suite"),
    ("misspelt reserved key in a method", {"methods": {"lora": {"trian": {}}}}, "methods.lora.trian",
     "Did you mean 'train'?"),
    ("fractional GPUs must be >= 0", {"resources": {"gpu": -0.5}}, "resources.gpu", "greater than or equal to 0"),
    ("knob option together with budgets", {"methods": {"lora": {"rank": 4}}}, "methods.lora.rank",
     "set the rank of 'lora'; remove rank, or give this method `budgets: []`"),
    ("misspelt variant's method", {"methods": {"sift_q": {"method": "sfit"}}}, "methods.sift_q.method",
     "Did you mean 'sift'?"),
    ("duplicate seeds", {"seeds": [0, 1, 0]}, "seeds", "seed 0 is listed more than once"),
    ("train field at the top level", {"epochs": 3}, "epochs",
     "unknown field 'epochs'; it belongs under `train:` (train: {epochs: 3})"),
    ("train field in a task", {"tasks": {"mrpc": {"learning_rate": 1e-3}}}, "tasks.mrpc.learning_rate",
     "it belongs under `tasks.mrpc.train:`"),
    ("train field in a method", {"methods": {"lora": {"batch_size": 8}}}, "methods.lora.batch_size",
     "it belongs under `methods.lora.train:`"),
    ("budget count with separators is fine, a float is not", {"budgets": ["1,000,000", 1.0e6]}, "budgets.1",
     "write the count as an integer, 1000000"),
]  # fmt: skip


@pytest.mark.parametrize("change,path,fragment", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_suite_messages(change: dict[str, Any], path: str, fragment: str) -> None:
    errors = errors_of(bad(**change))
    assert any(p == path and fragment in m for p, m in errors), errors


def test_missing_key_is_reported() -> None:
    data = bad()
    del data["models"]
    assert ("models", "required key is missing.") in errors_of(data)


def test_all_errors_reported_at_once() -> None:
    errors = errors_of(bad(seeeds=[1], tasks=["mrcp"], methods={"loar": {}, "lora": {"rnak": 1}}))
    paths = {p for p, _ in errors}
    assert {"seeeds", "tasks.mrcp", "methods.loar", "methods.lora.rnak"} <= paths


def test_file_errors(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("name: x\nmodels: [a\n")
    with pytest.raises(SuiteError, match=r"(?s)broken.yaml: .*not valid YAML at line 3"):
        load_suite(f)
    f.write_text("name: x\nmethods:\n  lora: {}\n  sift: {}\n  lora: {dropout: 0.1}\n")
    with pytest.raises(SuiteError, match="line 5, column 3: the key 'lora' appears twice"):
        load_suite(f)
    f.write_text("- just\n- a list\n")
    with pytest.raises(SuiteError, match="a suite is a YAML mapping"):
        load_suite(f)
    with pytest.raises(SiftBenchError, match="Suite file not found"):
        load_suite(tmp_path / "nope.yaml")
    with pytest.raises(SiftBenchError, match=r"is a directory, not a suite file: pass one YAML file from it \(broken"):
        load_suite(tmp_path)
    (tmp_path / "no_yaml").mkdir()
    with pytest.raises(SiftBenchError, match=r"is a directory, not a suite file: .*suites/quickstart.yaml"):
        load_suite(tmp_path / "no_yaml")
    for empty in ("", "# only a comment\n"):
        f.write_text(empty)
        with pytest.raises(SuiteError, match=rf"{f}: 1 problem.*\n  - \(top level\): the file is empty; a suite needs"):
            load_suite(f)
    f.write_text(yaml.safe_dump(bad(methods={"lora": {"dropout": "high"}})))
    with pytest.raises(SuiteError) as info:
        load_suite(f)
    text = str(info.value)
    assert text.startswith(f"{f}: 1 problem in the suite:") and "methods.lora.dropout" in text
    assert "input_value" not in text and "errors.pydantic.dev" not in text  # formatted, not a raw dump


def test_suite_budgets_are_budgets() -> None:
    from sift_bench.spec import Budget

    suite = validate_suite(bad(budgets=["0.80%", 786432, "1e6"]))
    assert suite.budgets == [Budget.parse("0.8%"), Budget.parse(786432), Budget.parse(1_000_000)]
    assert [str(b) for b in suite.budgets] == ["0.8%", "786432", "1000000"]


def test_bad_suites_on_the_command_line_exit_2_without_a_traceback(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sift_bench.cli import app

    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    dup = tmp_path / "dup.yaml"
    dup.write_text(yaml.safe_dump(bad(seeds=[0, 0], epochs=3)))
    for path, fragment in ((tmp_path, "is a directory"), (empty, "is empty"), (dup, "belongs under `train:`")):
        result = CliRunner().invoke(app, ["plan", str(path)])
        assert result.exit_code == 2, result.output
        assert fragment in " ".join(result.output.split()) and "Traceback" not in result.output


def test_heldout_selection_sets_every_trials_fraction_and_is_checked() -> None:
    specs = expand(validate_suite(bad(selection="heldout"), "x.yaml"))
    assert {s.train.heldout_fraction for s in specs} == {0.1}
    specs = expand(validate_suite(bad(selection="heldout", heldout_fraction=0.25), "x.yaml"))
    assert {s.train.heldout_fraction for s in specs} == {0.25}
    # The default (dev) leaves the setting, and so every trial id, as before it existed.
    plain = expand(validate_suite(bad(), "x.yaml"))
    assert {s.train.heldout_fraction for s in plain} == {0.0}
    assert all("heldout_fraction" not in s.identity()["train"] for s in plain)
    assert {s.trial_id for s in plain}.isdisjoint(s.trial_id for s in specs)
    [(path, msg)] = errors_of(bad(heldout_fraction=0.2))
    assert path == "heldout_fraction" and "selection: heldout" in msg
    [(path, msg)] = errors_of(bad(selection="test"))
    assert path == "selection" and "'dev' or 'heldout'" in msg


FLAGSHIPS = ("glue_budget", "modules_ablation", "glue")


@pytest.mark.parametrize("name", FLAGSHIPS)
def test_flagship_suites_are_fair_and_their_headers_count_right(name: str) -> None:
    """Each method its own grid of 3+ learning rates, held-out selection, edge extension, early stopping; the
    header's trial count is what `plan` expands to."""
    path = REPO / "suites" / f"{name}.yaml"
    suite = load_suite(path)
    assert suite.selection == "heldout" and suite.search.extend_edges >= 1
    specs = expand(suite)
    for label in suite.methods:
        rates = {s.train.learning_rate for s in specs if s.label == label}
        assert len(rates) >= 3, (name, label, rates)
    assert all(s.train.early_stopping is not None for s in specs)
    worst = worst_case_extensions(suite, specs)
    assert f"{len(specs)} trials" in path.read_text() and f"up to {worst}" in path.read_text()


@pytest.mark.parametrize("name", FLAGSHIPS)
def test_paper_twins_select_nothing(name: str) -> None:
    path = REPO / "suites" / f"{name}_paper.yaml"
    suite = load_suite(path)
    specs = expand(suite)
    assert suite.selection == "dev" and suite.search.extend_edges == 0
    assert all(not s.grid and s.train.early_stopping is None for s in specs)
    text = path.read_text()
    assert "nothing selected" in text and f"{len(specs)} trials" in text
