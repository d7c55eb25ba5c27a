"""The command line at its edge: bad input is one red line and exit code 2 in every command, nothing is
written; `plan` summarises at 80 columns; every option has help text and a whole name at 80 columns."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from sift_bench.cli import app
from sift_bench.errors import SiftBenchError

SUITE: dict[str, Any] = {
    "name": "clitest",
    "schema_version": 1,
    "models": ["minilm-l6"],
    "tasks": ["mrpc", "rte"],
    "methods": {"full": {}, "sift": {}},
    "budgets": ["0.1%", "1%"],
    "seeds": [0, 1],
}


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), terminal_width=80, env={"COLUMNS": "80"})


def write_suite(folder: Path, **changes: Any) -> Path:
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump({**SUITE, **changes}, sort_keys=False))
    return path


def all_commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(name path, command) of every leaf command; typer ships its own click, so groups are duck-typed."""
    out = []
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            out += all_commands(cmd, (*path, name))
        else:
            out.append(((*path, name), cmd))
    return out


COMMANDS = all_commands(typer.main.get_command(app))


def test_every_command_is_covered() -> None:
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"plan", "run", "trial", "compare", "leaderboard", "dashboard", "eval mmlu", "analyze memory"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_at_80_columns_shows_every_option_whole_with_help(path: tuple[str, ...], command: Any) -> None:
    res = invoke(*path, "--help")
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80, res.output
    for param in command.params:
        assert getattr(param, "help", None), f"`{' '.join(path)}`: {param.name} has no help text"
        if param.param_type_name == "option":
            for name in param.opts + param.secondary_opts:
                assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", res.output), f"{name} cut off:\n{res.output}"


# ---------------------------------------------------------------------------------------------------------
# Bad input: exit code 2, one line that says what to fix, nothing written.


def assert_bad_input(res: Any, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "error:" in res.output
    for needle in needles:
        assert needle in res.output, res.output


def test_trial_option_without_equals_sign(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = invoke("trial", "--method", "lora", "-o", "rank", "--out", str(out))
    assert_bad_input(res, "-o KEY=VALUE", "'rank'")
    assert not out.exists()


def test_trial_bad_budget_fails_before_the_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before --budget was checked")

    monkeypatch.setattr("sift_bench.models.load_model", no_loading)
    monkeypatch.setattr("sift_bench.trial_setup.load_model_with_head", no_loading)
    assert_bad_input(invoke("trial", "--method", "lora", "--budget", "abc"), "--budget", "'abc'")


def test_trial_unknown_method_and_bad_value() -> None:
    assert_bad_input(invoke("trial", "--method", "sfit"), "Did you mean 'sift'")
    assert_bad_input(invoke("trial", "--precision", "fp8"), "precision")  # pydantic's message, one line


def test_run_and_plan_reject_a_bad_suite_and_write_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SUITE, "seeeds": [1]}, sort_keys=False))
    out = tmp_path / "out"
    for command in ("run", "plan"):
        assert_bad_input(invoke(command, str(bad), "--results", str(out)), "Did you mean 'seeds'?")
    assert_bad_input(invoke("run", str(tmp_path), "--serial", "--results", str(out)))  # a folder, not a file
    good = write_suite(tmp_path)
    assert_bad_input(invoke("run", str(good), "--serial", "--max-failures", "-1", "--results", str(out)))
    assert not out.exists()


def test_run_on_an_unreachable_cluster_writes_nothing(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on (bound, never listening)
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        out = tmp_path / "out"
        res = invoke("run", str(write_suite(tmp_path)), "--address", address, "--results", str(out))
    assert_bad_input(res, f"Cannot reach the Ray cluster at {address}")
    assert not out.exists()


def test_reports_reject_missing_results(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    report = tmp_path / "report.html"
    assert_bad_input(invoke("leaderboard", missing))
    assert_bad_input(invoke("compare", missing, missing))
    assert_bad_input(invoke("compare", missing, missing, "--format", "xml"), "--format")
    assert_bad_input(invoke("dashboard", missing, "-o", str(report)))
    assert not report.exists()


def test_eval_and_analyze_reject_bad_input(tmp_path: Path) -> None:
    assert_bad_input(invoke("eval", "humaneval", "--samples", str(tmp_path / "none.jsonl")), "none.jsonl")
    assert_bad_input(invoke("eval", "mmlu", "--model", "smollm2-135m", "--shots", "-1"), "shots")
    assert_bad_input(invoke("analyze", "stability", "--task", "mrcp", "--out", str(tmp_path)), "Did you mean 'mrpc'")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------
# plan: a summary at 80 columns, the full table on --detail, models and their sources.


def test_plan_summary_detail_and_done_trials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from results_factory import result, write_run

    from sift_bench.expand import expand
    from sift_bench.suite import load_suite

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    local = tmp_path / "my-model"
    local.mkdir()
    (local / "config.json").write_text(json.dumps({"model_type": "bert"}))
    path = write_suite(tmp_path, models=["minilm-l6", str(local), "someorg/not-cached-model"])
    out = tmp_path / "out"
    res = invoke("plan", str(path), "--results", str(out))
    assert res.exit_code == 0, res.output
    # 3 models x 2 seeds x (full 1 + sift 2 budgets) per task; 2 tasks
    assert "36 trials (36 to run, 0 done)" in res.output
    assert re.search(r"full\s+│\s+6\s+│\s+6\s+│\s+12", res.output), res.output
    assert re.search(r"sift\s+│\s+12\s+│\s+12\s+│\s+24", res.output), res.output
    flat = " ".join(res.output.split())  # long paths wrap at 80 columns
    assert "minilm-l6: alias" in flat and f"{local}: local folder" in flat
    assert "someorg/not-cached-model: needs the hub" in flat
    assert max(len(line) for line in res.output.splitlines()) <= 80
    assert not out.exists()  # nothing ran, nothing written

    first = expand(load_suite(path))[0]
    write_run(out, [result(first, {"accuracy": 0.8})])
    res = invoke("plan", str(path), "--results", str(out))
    assert "36 trials (35 to run, 1 done)" in res.output and "(1 done)" in res.output
    detail = invoke("plan", str(path), "--results", str(out), "--detail")
    assert detail.exit_code == 0 and first.trial_id in detail.output and "Every trial: lr 0.0002" in detail.output
    assert "Trials per method and task" not in detail.output


def test_plan_rejects_a_model_that_cannot_load(tmp_path: Path) -> None:
    res = invoke("plan", str(write_suite(tmp_path, models=["minilm-l6", "minilm-l7"])))
    assert_bad_input(res, "minilm-l7", "`models:`")


def test_humaneval_suites_probe_the_sandbox_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sift_bench.evaluators import humaneval

    def broken() -> None:
        raise SiftBenchError("the sandbox cannot start: unshare failed (EPERM). Fix: ...")

    monkeypatch.setattr(humaneval, "check_sandbox", broken)
    path = write_suite(tmp_path, evaluators={"humaneval": {"limit": 1}})
    out = tmp_path / "out"
    assert_bad_input(invoke("plan", str(path)), "sandbox cannot start")
    assert_bad_input(invoke("run", str(path), "--serial", "--results", str(out)), "sandbox cannot start")
    assert not (out / "trials.parquet").exists()  # no trial ran
