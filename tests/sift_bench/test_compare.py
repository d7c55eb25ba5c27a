"""`sift-bench compare` on synthetic result tables with known improvements, regressions and noise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from results_factory import MIB, result
from results_factory import write_run as factory_write_run
from typer.testing import CliRunner

from sift_bench.cli import app
from sift_bench.compare import compare_paths, judge, to_markdown
from sift_bench.errors import SiftBenchError
from sift_bench.metrics import heldout_metric
from sift_bench.results import load_run
from sift_bench.schema import metric_column, metric_names
from sift_bench.spec import TrainSettings, TrialResult, TrialSpec


def trial(
    task: str = "mrpc",
    method: str = "sift",
    budget: str | None = "0.8%",
    seed: int = 0,
    value: float | None = 0.80,
    *,
    status: str = "ok",
    primary: str = "accuracy",
    lr: float = 2e-4,
    grid: bool = False,
    epochs: float = 3,
    variant: str | None = None,
    heldout: float | None = None,
    train_seconds: float = 10.0,
    memory: int = 100 * MIB,
    data_dir: str = "/data/glue",
    suite: str = "quickstart",
    extra: dict[str, float] | None = None,
) -> TrialResult:
    """One finished trial. `grid`: lr is a grid point of the suite's lr grid; `heldout`: the trial held out
    20% of the training set and scored this there."""
    fraction = 0.2 if heldout is not None else 0.0
    spec = TrialSpec(
        model="minilm-l6", task=task, method=method, budget=budget, seed=seed, data_dir=data_dir, suite=suite,
        train=TrainSettings(learning_rate=lr, epochs=epochs, heldout_fraction=fraction), variant=variant,
        grid={"learning_rate": lr} if grid else {},
    )  # fmt: skip
    metrics = {primary: value} if value is not None and status == "ok" else {}
    metrics.update(extra or {})
    if heldout is not None:
        metrics[heldout_metric(primary)] = heldout
    return result(spec, metrics, status=status, primary=primary, train_seconds=train_seconds, peak_memory_bytes=memory)


def write_run(root: Path, rows: list[TrialResult], *, shuffle: bool = False) -> Path:
    """results/<suite>/ as a run writes it, with a manifest."""
    suite = rows[0].spec.suite if rows else "quickstart"
    return factory_write_run(root, rows, manifest={"suite": suite, "git_commit": "abc123"}, shuffle=shuffle)


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["compare", *map(str, args)])


def by_method(cmp: Any) -> dict[str, Any]:
    return {c.method: c for c in cmp.cells}


# ----------------------------------------------------------------------------- verdicts


def test_identical_runs_pass(tmp_path: Path) -> None:
    rows = [trial(method=m, seed=s, value=0.8 + 0.01 * s) for m in ("sift", "lora") for s in (0, 1, 2)]
    base, new = write_run(tmp_path / "a", rows), write_run(tmp_path / "b", rows)
    cmp = compare_paths(base, new)
    assert not cmp.regressed
    assert len(cmp.cells) == 2  # three seeds folded into one config each
    assert all(c.primary.verdict == "noise" and c.primary.delta == 0 for c in cmp.cells)
    result = run_cli(base, new)
    assert result.exit_code == 0, result.output
    assert "OK: 0 of 2 cells regressed" in result.output


def test_single_seed_improvement_regression_and_tolerance(tmp_path: Path) -> None:
    base = write_run(
        tmp_path / "a",
        [trial(method="sift", value=0.80), trial(method="lora", value=0.80), trial(method="full", value=0.80)],
    )
    new = write_run(
        tmp_path / "b",
        [trial(method="sift", value=0.83), trial(method="lora", value=0.77), trial(method="full", value=0.795)],
    )
    cmp = by_method(compare_paths(base, new, tolerance=1.0))
    assert cmp["sift"].primary.verdict == "improved" and cmp["sift"].primary.delta == pytest.approx(3.0)
    assert cmp["lora"].primary.verdict == "regressed" and cmp["lora"].regressed
    assert "accuracy -3.00pt beyond the noise band ±1.00" in cmp["lora"].flags[0]
    assert cmp["full"].primary.verdict == "noise" and not cmp["full"].regressed  # -0.5 pt < 1 pt tolerance
    # A looser tolerance forgives the 3-point drop; the CLI flag reaches the function.
    assert run_cli(base, new).exit_code == 1
    assert run_cli(base, new, "--tolerance", "5").exit_code == 0


def test_noise_band_from_seed_spread(tmp_path: Path) -> None:
    # Baseline seeds spread by ~2.6 pt (std); a 2-point drop of the mean is noise, a 6-point drop is not.
    base_vals = [0.78, 0.80, 0.83]
    base = write_run(
        tmp_path / "a",
        [trial(method=m, seed=s, value=v) for m in ("sift", "lora") for s, v in enumerate(base_vals)],
    )
    new = write_run(
        tmp_path / "b",
        [trial(method="sift", seed=s, value=v - 0.02) for s, v in enumerate(base_vals)]
        + [trial(method="lora", seed=s, value=v - 0.06) for s, v in enumerate(base_vals)],
    )
    cmp = by_method(compare_paths(base, new, tolerance=0.0))
    sift, lora = cmp["sift"].primary, cmp["lora"].primary
    assert sift.base_n == sift.new_n == 3
    assert sift.band == pytest.approx(2.5166, abs=1e-3)  # sample std of 78, 80, 83
    assert sift.verdict == "noise" and not cmp["sift"].regressed
    assert lora.verdict == "regressed" and cmp["lora"].regressed


def test_tolerance_is_a_floor_when_seeds_agree(tmp_path: Path) -> None:
    rows = [trial(seed=s, value=0.80) for s in (0, 1)]  # std 0: only the tolerance protects
    base = write_run(tmp_path / "a", rows)
    new = write_run(tmp_path / "b", [trial(seed=s, value=0.795) for s in (0, 1)])
    assert compare_paths(base, new, tolerance=1.0).cells[0].primary.verdict == "noise"
    assert compare_paths(base, new, tolerance=0.0).cells[0].primary.verdict == "regressed"


def test_direction_comes_from_the_metric_registry() -> None:
    # eval_loss is lower-is-better and not a percentage: a rise is a regression, in raw units.
    worse = judge("eval_loss", [0.50], [0.70], primary=True, tolerance=0.1)
    better = judge("eval_loss", [0.50], [0.30], primary=True, tolerance=0.1)
    assert worse.verdict == "regressed" and worse.unit == "" and worse.delta == pytest.approx(0.2)
    assert better.verdict == "improved"
    assert judge("f1", [0.5], [0.7], primary=True, tolerance=1.0).verdict == "improved"


def test_only_the_primary_metric_gates(tmp_path: Path) -> None:
    base = write_run(tmp_path / "a", [trial(primary="f1", value=0.80, extra={"accuracy": 0.80})])
    new = write_run(tmp_path / "b", [trial(primary="f1", value=0.80, extra={"accuracy": 0.70})])
    c = compare_paths(base, new).cells[0]
    assert [m.metric for m in c.metrics] == ["f1", "accuracy"]  # primary first
    assert c.metrics[1].verdict == "regressed" and not c.regressed


def test_metric_option_gates_on_the_named_metric(tmp_path: Path) -> None:
    # Accuracy stuck at the majority class on both sides, while the dev loss got clearly worse.
    base = write_run(tmp_path / "a", [trial(value=0.6953, extra={"eval_loss": 0.600})])
    new = write_run(tmp_path / "b", [trial(value=0.6953, extra={"eval_loss": 0.650})])
    assert not compare_paths(base, new).regressed
    gated = compare_paths(base, new, metric="eval_loss", tolerance=0.01)
    assert gated.regressed and gated.cells[0].primary.metric == "eval_loss"
    assert not compare_paths(base, base, metric="eval_loss", tolerance=0.01).regressed
    result = run_cli(base, new, "--metric", "eval_loss", "--tolerance", "0.01")
    assert result.exit_code == 1, result.output
    result = run_cli(base, new, "--metric", "eval_los")
    assert result.exit_code == 2 and "Did you mean 'eval_loss'" in result.output


# ----------------------------------------------------------------------------- matching, missing, failed


def test_matches_by_config_not_order_or_data_dir(tmp_path: Path) -> None:
    rows = [trial(method=m, seed=s, value=0.7 + 0.05 * i) for i, m in enumerate(("sift", "lora")) for s in (0, 1)]
    base = write_run(tmp_path / "a", rows)
    moved = [trial(method=r.spec.method, seed=r.spec.seed, value=r.best["accuracy"], data_dir="/ci/glue") for r in rows]
    new = write_run(tmp_path / "b", moved, shuffle=True)
    cmp = compare_paths(base, new)
    assert [c.status for c in cmp.cells] == ["compared", "compared"]
    assert all(c.primary.delta == pytest.approx(0) for c in cmp.cells)
    assert not cmp.regressed


def test_grid_cells_are_judged_at_the_mean_chosen_points(tmp_path: Path) -> None:
    # A 2-point lr grid, 2 seeds. Baseline: lr=1e-3 scores 80/80 (mean 80), lr=3e-3 90/66 (mean 78); the
    # best point per seed would be 3e-3 for seed 0 and 1e-3 for seed 1 (mean 85), the mean over seeds picks
    # 1e-3 (80). New: lr=1e-3 70/72, lr=3e-3 82/82: 3e-3 (82). At the mean-chosen points that is +2 pt
    # (improved); against the per-seed best it would read as a 3-point drop.
    def run(root: Path, scores: dict[float, list[float]]) -> Path:
        rows = [trial(lr=lr, grid=True, seed=s, value=v) for lr, vals in scores.items() for s, v in enumerate(vals)]
        return write_run(root, rows)

    base = run(tmp_path / "a", {1e-3: [0.80, 0.80], 3e-3: [0.90, 0.66]})
    new = run(tmp_path / "b", {1e-3: [0.70, 0.72], 3e-3: [0.82, 0.82]})
    cmp = compare_paths(base, new, tolerance=1.0)
    assert len(cmp.cells) == 1  # one cell: the grid points are its candidates, not rows of their own
    c = cmp.cells[0]
    assert c.base_grid == {"learning_rate": 1e-3} and c.new_grid == {"learning_rate": 3e-3}
    assert c.chosen == "lr=1e-3 -> lr=3e-3" and c.n_configs == 2 and c.selection == "dev"
    p = c.primary
    assert (p.base_mean, p.new_mean, p.base_n, p.new_n) == (pytest.approx(80.0), pytest.approx(82.0), 2, 2)
    assert p.verdict == "improved" and not cmp.regressed and c.notes == []
    assert c.base_seeds == c.new_seeds == [0, 1]
    result = run_cli(base, new, "--format", "md")
    assert result.exit_code == 0 and "| chosen |" in result.output and "lr=1e-3 -> lr=3e-3" in result.output
    # Both sides choosing the same point show it once; judged there (80 -> 70.5: regressed).
    worse = run(tmp_path / "c", {1e-3: [0.70, 0.71], 3e-3: [0.60, 0.60]})
    c = compare_paths(base, worse).cells[0]
    assert c.chosen == "lr=1e-3" and c.primary.delta == pytest.approx(-9.5) and c.regressed


def test_heldout_selection_chooses_and_dev_is_judged(tmp_path: Path) -> None:
    # Held out: lr=1e-3 scores 70 there, lr=3e-3 90, so 3e-3 is chosen although its dev score is lower.
    rows = [trial(lr=1e-3, grid=True, value=0.80, heldout=0.70), trial(lr=3e-3, grid=True, value=0.75, heldout=0.90)]
    base = write_run(tmp_path / "a", rows)
    c = compare_paths(base, base).cells[0]
    assert c.chosen == "lr=3e-3" and c.selection == "heldout" and c.primary.base_mean == pytest.approx(75.0)
    dev = write_run(tmp_path / "b", [trial(lr=1e-3, grid=True, value=0.80), trial(lr=3e-3, grid=True, value=0.75)])
    c = compare_paths(base, dev).cells[0]
    assert c.selection == "heldout -> dev" and c.chosen == "lr=3e-3 -> lr=1e-3"
    assert any(n.startswith("settings differ outside the grid: train.heldout_fraction 0.2 -> 0.0") for n in c.notes)


def test_settings_outside_the_grid_are_compared_with_a_note(tmp_path: Path) -> None:
    # No grid, epochs changed: config-level matching would call this "missing" + "new"; the cell is
    # compared, and the note says what changed.
    base = write_run(tmp_path / "a", [trial(seed=s, value=0.80) for s in (0, 1)])
    new = write_run(tmp_path / "b", [trial(seed=s, value=0.70, epochs=5) for s in (0, 1)])
    cmp = compare_paths(base, new)
    (c,) = cmp.cells
    assert c.status == "compared" and c.regressed and c.missing_seeds == []
    assert c.notes == ["settings differ outside the grid: train.epochs 3.0 -> 5.0"]
    assert c.base_config_key != c.new_config_key and c.chosen == ""
    md = to_markdown(cmp)
    assert "settings differ outside the grid: train.epochs 3.0 -> 5.0" in md and "| chosen |" not in md


def test_renamed_variant_and_changed_grid(tmp_path: Path) -> None:
    base = write_run(
        tmp_path / "a",
        [trial(variant="sift_qv", lr=lr, grid=True, seed=s, value=0.8) for lr in (1e-3, 3e-3) for s in (0, 1)],
    )
    # Renamed to sift_a; the grid lost 3e-3 and gained 1e-2; seed 1 of lr=1e-3 did not run.
    new = write_run(
        tmp_path / "b",
        [trial(variant="sift_a", lr=1e-3, grid=True, seed=0, value=0.8)]
        + [trial(variant="sift_a", lr=1e-2, grid=True, seed=s, value=0.7) for s in (0, 1)],
    )
    (c,) = compare_paths(base, new).cells
    assert c.method == "sift_a" and c.status == "compared" and c.chosen == "lr=1e-3"
    assert c.notes[0] == "variant renamed: sift_qv -> sift_a"
    assert (
        "grid points only in the baseline: lr=3e-3" in c.notes and "grid points only in the new run: lr=0.01" in c.notes
    )
    assert c.missing_seeds == [1] and c.flags == ["missing seeds 1"]  # a seed lost at a shared point still gates


def test_missing_new_failed_fixed(tmp_path: Path) -> None:
    base = write_run(
        tmp_path / "a",
        [
            trial(method="sift"),
            trial(method="lora"),  # missing in new
            trial(method="full"),  # fails in new
            trial(method="adapter", status="failed"),  # failed on both sides
            trial(method="random", status="failed"),  # fixed in new
            trial(method="classifier_only", seed=0),
            trial(method="classifier_only", seed=1),  # seed 1 lost in new
        ],
    )
    new = write_run(
        tmp_path / "b",
        [
            trial(method="sift"),
            trial(method="full", status="failed"),
            trial(method="adapter", status="failed"),
            trial(method="random"),
            trial(method="classifier_only", seed=0),
            trial(task="rte", method="sift"),  # only in new
        ],
    )
    cmp = compare_paths(base, new)
    got = {(c.task, c.method): c for c in cmp.cells}
    assert got["mrpc", "lora"].status == "missing" and got["mrpc", "lora"].regressed
    assert got["mrpc", "full"].status == "newly_failed" and got["mrpc", "full"].regressed
    assert got["mrpc", "full"].newly_failed_seeds == [0] and got["mrpc", "full"].new_error == "RuntimeError: boom"
    assert got["mrpc", "adapter"].status == "still_failing" and not got["mrpc", "adapter"].regressed
    assert got["mrpc", "random"].status == "fixed" and not got["mrpc", "random"].regressed
    assert got["mrpc", "classifier_only"].missing_seeds == [1] and got["mrpc", "classifier_only"].regressed
    assert got["rte", "sift"].status == "new" and not got["rte", "sift"].regressed
    assert not got["mrpc", "sift"].regressed
    counts = cmp.counts()
    assert counts["regressed"] == 3 and counts["missing"] == 2 and counts["newly_failed"] == 1
    result = run_cli(tmp_path / "a", tmp_path / "b", "--format", "json")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["regressed"] is True and data["counts"]["new"] == 1
    assert {c["method"] for c in data["cells"] if c["regressed"]} == {"lora", "full", "classifier_only"}


def test_slower_and_more_memory(tmp_path: Path) -> None:
    base = write_run(
        tmp_path / "a",
        [
            trial(method="sift", train_seconds=10),
            trial(method="lora", memory=100 * MIB),
            trial(method="full", train_seconds=0.2),
        ],
    )
    new = write_run(
        tmp_path / "b",
        [
            trial(method="sift", train_seconds=20),  # x2 > 1.5
            trial(method="lora", memory=200 * MIB),  # x2 > 1.2
            trial(method="full", train_seconds=0.5),  # x2.5, but only 0.3 s: timer jitter
        ],
    )
    cmp = by_method(compare_paths(base, new))
    assert cmp["sift"].time_ratio == pytest.approx(2.0) and cmp["sift"].flags[0].startswith("slower")
    assert cmp["lora"].memory_ratio == pytest.approx(2.0) and cmp["lora"].flags[0].startswith("memory")
    assert not cmp["full"].regressed
    assert run_cli(base, new).exit_code == 1
    off = run_cli(base, new, "--time-threshold", "0", "--memory-threshold", "0")
    assert off.exit_code == 0, off.output
    assert run_cli(base, new, "--time-threshold", "3", "--memory-threshold", "2.5").exit_code == 0


def test_markdown_and_table_output(tmp_path: Path) -> None:
    base = write_run(tmp_path / "a", [trial(method="sift", value=0.8), trial(method="lora", value=0.8)])
    new = write_run(tmp_path / "b", [trial(method="sift", value=0.9), trial(method="lora", value=0.7)])
    md = to_markdown(compare_paths(base, new))
    lines = [ln for ln in md.splitlines() if ln.startswith("| mrpc")]
    assert len(lines) == 2
    assert any("lora" in ln and "**REGRESSED**" in ln and "-10.00pt" in ln for ln in lines)
    assert any("sift" in ln and "improved" in ln and "+10.00pt" in ln for ln in lines)
    result = run_cli(base, new, "--format", "md")
    assert result.exit_code == 1 and "| task | method | budget |" in result.output
    table = run_cli(base, new)
    assert table.exit_code == 1 and "REGRESSION: 1 of 2 cells regressed" in table.output


# ----------------------------------------------------------------------------- bad input: exit 2


def test_bad_input_exit_2(tmp_path: Path) -> None:
    good = write_run(tmp_path / "good", [trial()])
    other = write_run(tmp_path / "other", [trial(suite="glue_budget")])
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "trials.parquet").write_text("not parquet")
    cases = {
        tmp_path / "nope": "does not exist",
        tmp_path / "empty": "has no trials.parquet",
        tmp_path / "corrupt": "Cannot read",
        other: "different suites",
    }
    for bad, message in cases.items():
        result = run_cli(good, bad)
        assert result.exit_code == 2, (bad, result.output)
        assert message in " ".join(result.output.split()), result.output  # rich wraps long lines
        with pytest.raises(SiftBenchError, match=message):
            compare_paths(good, bad)
    assert run_cli(good, good, "--format", "xml").exit_code == 2


def test_load_run_accepts_the_parquet_path(tmp_path: Path) -> None:
    run = load_run(write_run(tmp_path / "r", [trial()]) / "trials.parquet")
    assert run.suite == "quickstart" and run.manifest == {"suite": "quickstart", "git_commit": "abc123"}
    assert run.evals is not None and len(run.evals) == 1


def test_reads_tables_written_by_the_result_store(tmp_path: Path) -> None:
    """The real writer's schema (config_key, variant, metric.* columns, manifest) round-trips."""

    def store(root: Path, f1: dict[int, float], failed: set[int] = frozenset()) -> Path:
        rows = []
        for seed, value in f1.items():
            spec = TrialSpec(
                model="minilm-l6", task="mrpc", method="sift", budget="0.8%", seed=seed, suite="quickstart",
                variant="sift_qv",
            )  # fmt: skip
            status = "failed" if seed in failed else "ok"
            best = {} if status == "failed" else {"f1": value, "accuracy": value - 0.05, "eval_loss": 0.5}
            rows.append(result(spec, best, status=status, primary="f1", train_seconds=3.0, peak_memory_bytes=500 * MIB))
        return write_run(root, rows)

    base = store(tmp_path / "a" / "quickstart", {0: 0.80, 1: 0.82})
    same = store(tmp_path / "b" / "quickstart", {0: 0.80, 1: 0.82})
    worse = store(tmp_path / "c" / "quickstart", {0: 0.70, 1: 0.82}, failed={1})
    ok = compare_paths(base, same)
    assert not ok.regressed and ok.cells[0].method == "sift_qv" and ok.cells[0].base_method == "sift"
    assert (
        ok.cells[0].new_config_key
        == ok.cells[0].base_config_key
        == TrialSpec(model="minilm-l6", task="mrpc", method="sift", budget="0.8%").config_key
    )
    bad = compare_paths(base, worse).cells[0]
    assert bad.primary.metric == "f1" and bad.primary.delta == pytest.approx(-11.0)  # 81 -> 70 over ok seeds
    assert bad.newly_failed_seeds == [1] and bad.regressed


def test_baseline_compares_with_a_run_in_the_current_schema(tmp_path: Path) -> None:
    """The CI gate: the committed schema-1 baseline against the same trials written by today's store."""
    baseline = Path(__file__).resolve().parents[2] / "tests" / "data" / "schema1_quickstart"
    rows = []
    for _, row in load_run(baseline).trials.iterrows():
        metrics = {
            m: row[metric_column(m)] for m in metric_names(row.index) if row[metric_column(m)] == row[metric_column(m)]
        }
        rows.append(
            result(
                row["spec"], metrics, status=row["status"], primary=row["primary_metric"],
                best_epoch=row["best_epoch"], trainable_params=row["trainable_params"],
                train_seconds=row["train_seconds"], peak_memory_bytes=row["peak_memory_bytes"],
            )
        )  # fmt: skip
    write_run(tmp_path / "quickstart", rows)
    for args in ((), ("--metric", "eval_loss", "--tolerance", "0.005")):
        res = run_cli(baseline, tmp_path / "quickstart", "--tolerance", "2", *args)
        assert res.exit_code == 0, res.output
        assert "OK: 0 of 12 cells regressed" in " ".join(res.output.split())
    cmp = compare_paths(baseline, tmp_path / "quickstart")
    assert [c.status for c in cmp.cells] == ["compared"] * 12
    assert all(c.primary.delta == 0 for c in cmp.cells)


def test_a_cell_whose_new_grid_all_failed_regresses(tmp_path: Path) -> None:
    # The grid moved (1e-3 -> 3e-3) and every new trial failed: no seed failed "at the same point", yet the
    # cell finished nothing, so it still gates.
    base = write_run(tmp_path / "a", [trial(lr=1e-3, grid=True, seed=s) for s in (0, 1)])
    new = write_run(tmp_path / "b", [trial(lr=3e-3, grid=True, seed=s, status="failed") for s in (0, 1)])
    (c,) = compare_paths(base, new).cells
    assert c.status == "newly_failed" and c.newly_failed_seeds == [0, 1] and c.regressed
    assert c.new_error == "RuntimeError: boom" and c.chosen == "lr=1e-3 -> lr=3e-3"
