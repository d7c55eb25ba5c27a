"""Edges are extended (a suite's `search.extend_edges`): a grid far below the optimum walks up to an interior
choice, each point for every seed, with stable ids; the limit holds; a resumed run loses and repeats nothing;
two-point axes, failed trials and forbidden values stop it; `plan` says what it may add. The trials are fake
(a score that is a function of the learning rate), so this runs in seconds."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from results_factory import result
from rich.console import Console
from typer.testing import CliRunner

from sift_bench.aggregate import aggregate
from sift_bench.cli import app
from sift_bench.driver import run_suite
from sift_bench.expand import expand
from sift_bench.results import ResultStore, load_run, read_trials
from sift_bench.search import worst_case_extensions
from sift_bench.spec import TrialResult, TrialSpec
from sift_bench.suite import Suite, validate_suite
from sift_bench.tuning import axis_marks

GRID = [1e-5, 3e-5, 1e-4]  # far below the fake optimum, 1e-2
WALK = [3.33e-4, 1.11e-3, 3.7e-3, 1.23e-2, 4.09e-2]  # each step at the outermost ratio, 3 significant digits


def suite(extend: int, grid: dict[str, list[Any]] | None = None, seeds: tuple[int, ...] = (0, 1)) -> Suite:
    data = {
        "name": "edges",
        "schema_version": 1,
        "models": ["m"],
        "tasks": ["mrpc"],
        "methods": {"full": {}},
        "seeds": list(seeds),
        "grid": grid or {"learning_rate": GRID},
        "search": {"extend_edges": extend},
    }
    return validate_suite(data, "edges.yaml")


def score(spec: TrialSpec) -> float:
    """Best at lr=1e-2, 0.1 less per decade away; weight decay costs; a seed adds a little."""
    lr, wd = spec.train.learning_rate, spec.train.weight_decay
    return 0.9 - 0.1 * abs(math.log10(lr) - math.log10(1e-2)) - wd + 0.001 * spec.seed


class Fake:
    """A run_trial that records its calls; fails the trials `fail` picks, and stops the driver (Ctrl-C) on
    the call numbered `interrupt_at` (1-based)."""

    def __init__(self, fail: Any = None, interrupt_at: int | None = None) -> None:
        self.calls: list[TrialSpec] = []
        self.fail, self.interrupt_at = fail, interrupt_at

    def __call__(self, spec: TrialSpec) -> TrialResult:
        self.calls.append(spec)
        if len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        if self.fail is not None and self.fail(spec):
            return result(spec, status="failed")
        return result(spec, {"accuracy": score(spec)})


def run(s: Suite, out: Path, fake: Fake, console: Console | None = None) -> Any:
    console = console or Console(file=io.StringIO(), width=200)
    return run_suite(s, out, serial=True, max_failures=0, console=console, run_trial=fake)


def lr_mark(out: Path) -> Any:
    trials = load_run(out).trials
    (cell,) = aggregate(trials)
    (mark,) = axis_marks([spec.grid for spec in trials["spec"]], cell.chosen)
    return cell, mark


def state(out: Path) -> set[tuple[Any, ...]]:
    return {(r["trial_id"], r["status"], r["extension"], r["train.learning_rate"], r["seed"]) for r in read_trials(out)}


def test_the_walk_reaches_an_interior_choice_with_every_seed_and_stable_ids(tmp_path: Path) -> None:
    fake, text = Fake(), io.StringIO()
    summary = run(suite(extend=6), tmp_path, fake, Console(file=text, width=200))
    ext = [s for s in fake.calls if s.extension]
    assert [s.train.learning_rate for s in ext] == [lr for lr in WALK for _ in (0, 1)]  # each point, both seeds
    assert [s.extension for s in ext] == [k for k in range(1, 6) for _ in (0, 1)]
    assert [s.grid for s in ext[::2]] == [{"learning_rate": lr} for lr in WALK]
    cell, mark = lr_mark(tmp_path)
    assert cell.chosen == {"learning_rate": 1.23e-2} and mark.state == "interior"  # 5 of 6 allowed: it stopped
    assert (summary.planned, summary.ran, summary.extended, summary.ok, summary.failed) == (16, 16, 10, 16, 0)
    assert "Extending 1 cell(s) beyond an edge: +2 trials (round 5)" in text.getvalue()
    run_record = ResultStore(tmp_path).read_manifest()["runs"][-1]
    assert (run_record["planned"], run_record["ran"], run_record["extended"]) == (16, 16, 10)

    again = Fake()
    rerun = run(suite(extend=6), tmp_path, again)
    assert again.calls == [] and (rerun.ran, rerun.planned, rerun.skipped) == (0, 16, 16)
    assert len(ResultStore(tmp_path).read_manifest()["runs"]) == 1  # nothing ran: no run recorded


def test_the_limit_leaves_the_cell_at_its_edge(tmp_path: Path) -> None:
    fake, text = Fake(), io.StringIO()
    summary = run(suite(extend=1), tmp_path, fake, Console(file=text, width=200))
    assert [s.train.learning_rate for s in fake.calls if s.extension] == [3.33e-4, 3.33e-4]
    assert summary.extended == 2
    cell, mark = lr_mark(tmp_path)
    assert cell.chosen == {"learning_rate": 3.33e-4} and mark.state == "high"
    assert "learning_rate is at its high edge (3.33e-4) after 1 extension(s)" in text.getvalue()


def test_a_run_stopped_mid_extension_resumes_without_loss_or_repeats(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    run(suite(extend=6), whole, Fake())

    # 6 grid trials, 2 of round 1, then round 2's first seed is saved and its second stops the driver.
    stopped = Fake(interrupt_at=10)
    with pytest.raises(KeyboardInterrupt):
        run(suite(extend=6), tmp_path / "cut", stopped)
    before = read_trials(tmp_path / "cut")
    assert sorted(r["extension"] for r in before) == [0] * 6 + [1, 1, 2]
    assert ResultStore(tmp_path / "cut").read_manifest()["runs"][-1]["finished_at"]  # the record was closed

    resumed = Fake()
    summary = run(suite(extend=6), tmp_path / "cut", resumed)
    ran = [(s.extension, s.seed) for s in resumed.calls]
    assert ran == [(2, 1), (3, 0), (3, 1), (4, 0), (4, 1), (5, 0), (5, 1)]  # nothing twice, nothing lost
    assert (summary.skipped, summary.ran, summary.extended) == (9, 7, 7)
    assert state(tmp_path / "cut") == state(whole)


def test_two_point_axes_are_never_extended(tmp_path: Path) -> None:
    two = suite(extend=3, grid={"learning_rate": [1e-5, 1e-4]})
    fake = Fake()
    summary = run(two, tmp_path, fake)
    assert len(fake.calls) == 4 and summary.extended == 0
    assert worst_case_extensions(two, expand(two)) == 0
    assert worst_case_extensions(suite(extend=3), expand(suite(extend=3))) == 3 * 2  # 1 axis, 2 seeds


def test_a_failed_trial_holds_its_cell_back_until_it_is_ok(tmp_path: Path) -> None:
    def first_seed_of_the_smallest(spec: TrialSpec) -> bool:
        return spec.train.learning_rate == 1e-5 and spec.seed == 0

    summary = run(suite(extend=1), tmp_path, Fake(fail=first_seed_of_the_smallest))
    assert (summary.ran, summary.failed, summary.extended) == (6, 1, 0)

    fake = Fake()
    summary = run(suite(extend=1), tmp_path, fake)  # the failed trial passes now, then the cell extends
    assert [(s.train.learning_rate, s.extension) for s in fake.calls] == [(1e-5, 0), (3.33e-4, 1), (3.33e-4, 1)]
    assert (summary.failed, summary.extended) == (0, 2)


def test_a_failed_extension_trial_ends_the_rounds_and_is_retried_next_run(tmp_path: Path) -> None:
    summary = run(suite(extend=6), tmp_path, Fake(fail=lambda s: s.extension == 2 and s.seed == 1))
    assert (summary.extended, summary.failed) == (4, 1)  # rounds 1 and 2; the cell waits for the failed trial
    fake = Fake()
    run(suite(extend=6), tmp_path, fake)
    assert [(s.extension, s.seed) for s in fake.calls][:1] == [(2, 1)]
    assert lr_mark(tmp_path)[1].state == "interior"


def test_a_value_the_setting_forbids_is_not_tried(tmp_path: Path) -> None:
    text = io.StringIO()
    grid = {"weight_decay": [0.0, 0.01, 0.02]}  # best at 0, the low edge: one step below is negative
    summary = run(suite(extend=2, grid=grid, seeds=(0,)), tmp_path, Fake(), Console(file=text, width=200))
    assert summary.extended == 0 and summary.ran == 3
    out = text.getvalue()
    assert "weight_decay is at its low edge (0); not extended: -0.01 is not a valid weight_decay" in out
    assert out.count("not extended") == 1


def test_plan_says_how_many_trials_extensions_may_add(tmp_path: Path) -> None:
    path = tmp_path / "edges.yaml"
    data = {
        "name": "edges", "schema_version": 1, "models": ["minilm-l6"], "tasks": ["mrpc", "rte"],
        "methods": {"full": {}, "lora": {"grid": {"warmup_ratio": [0.0, 0.1]}}}, "seeds": [0, 1, 2],
        "grid": {"learning_rate": GRID}, "search": {"extend_edges": 2},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(app, ["plan", str(path)], terminal_width=200, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    # lr (3 values) in 4 cells x 2 points x 3 seeds; lora's warmup_ratio (2 values) is never extended.
    assert "the driver may add up to 24 trials beyond grid edges" in res.output
    assert "axes with fewer than 3 values are not extended (warmup_ratio)" in res.output
    data["search"] = {"extend_edges": 0}
    path.write_text(yaml.safe_dump(data))
    assert "extend_edges" not in CliRunner().invoke(app, ["plan", str(path)]).output
