"""`sift-bench pairs`: A vs B at every budget on a constructed results folder, and the budget-curve PNG."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest
from results_factory import result, write_run
from results_factory import wrong_on as predictions_wrong_on
from typer.testing import CliRunner

from sift_bench.aggregate import aggregate
from sift_bench.cli import app
from sift_bench.errors import SiftBenchError
from sift_bench.pairs import compare_pairs, load_pairs, pair_cells
from sift_bench.results import load_run
from sift_bench.spec import Budget, TrainSettings, TrialResult, TrialSpec

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("SIFT_BENCH_CHROMIUM", "/usr/bin/chromium"))
LABELS = [(i * 7) % 3 % 2 for i in range(200)]  # 200 dev examples, both classes
BUDGETS = ("0.1%", "1%")
PARAMS = {"0.1%": 22_000, "1%": 220_000, None: 22_000_000}  # a MiniLM-sized body (full; classifier_only: 0)
EXTRA = list(range(150, 160))  # the 10 examples random gets wrong and sift gets right, on every seed


def wrong_on(seed: int, extra: list[int] = EXTRA) -> list[int]:
    """Each seed misses another 40 examples (so seeds differ), none of them in EXTRA."""
    return [*range(20 * seed, 20 * seed + 40), *extra]


def trial(method: str, budget: str | None, seed: int, lr: float, wrong: list[int],
          variant: str | None = None) -> TrialResult:  # fmt: skip
    spec = TrialSpec(model="minilm-l6", task="rte", method=method, budget=budget, seed=seed, suite="pairs",
                     variant=variant, grid={"learning_rate": lr}, train=TrainSettings(learning_rate=lr))  # fmt: skip
    acc = 1 - len(set(wrong)) / len(LABELS)
    return result(spec, {"accuracy": acc}, predictions=predictions_wrong_on(LABELS, wrong),
                  trainable_params=0 if method == "classifier_only" else PARAMS[budget])  # fmt: skip


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    """rte, 3 seeds. sift and random at two budgets with a two-point lr grid (the bad lr misses 60 more);
    random is sift plus EXTRA wrong; lora_copy predicts exactly as random; full is knob-less."""
    rows = []
    for seed in range(3):
        for budget in BUDGETS:
            for lr, worse in ((1e-3, []), (1e-4, list(range(100, 150)) + list(range(160, 170)))):
                rows.append(trial("sift", budget, seed, lr, wrong_on(seed, worse)))
                rows.append(trial("random", budget, seed, lr, wrong_on(seed, [*EXTRA, *worse])))
                rows.append(trial("lora", budget, seed, lr, wrong_on(seed, [*EXTRA, *worse]), variant="lora_copy"))
        rows.append(trial("full", None, seed, 5e-5, wrong_on(seed, [])))
    return write_run(tmp_path / "run", rows)


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(app, ["pairs", *map(str, args)])


def test_a_right_on_ten_more_examples_is_five_points_better(run_dir: Path) -> None:
    report = load_pairs(run_dir, "sift", "random")
    assert [str(p.budget) for p in report.pairs] == list(BUDGETS)
    for p in report.pairs:
        r = p.result
        assert r is not None and r.n_examples == 200 and r.n_resamples == 1000
        assert r.diff * 100 == pytest.approx(5.0) and 0 < r.low < r.diff < r.high  # excludes 0
        assert p.verdict == "sift better" and p.a.chosen_text() == "lr=1e-3" == p.b.chosen_text()
        assert len(p.a.trial_ids) == 3  # the chosen config's seeds, pooled
    assert report.summary_line() == "sift beat random at 2 of 2 budgets (2 significantly)."
    # The other way round: B is better, and the summary says so.
    flipped = load_pairs(run_dir, "random", "sift")
    assert {p.verdict for p in flipped.pairs} == {"sift better"}
    summary = "random beat sift at 0 of 2 budgets (0 significantly); sift was significantly better at 2."
    assert flipped.summary_line() == summary


def test_identical_predictions_are_indistinguishable(run_dir: Path) -> None:
    report = load_pairs(run_dir, "random", "lora_copy", n_resamples=200)
    assert len(report.pairs) == 2
    for p in report.pairs:
        assert p.result is not None and (p.result.diff, p.result.low, p.result.high) == (0.0, 0.0, 0.0)
        assert p.verdict == "indistinguishable" and p.a_better is None
    assert report.summary_line() == "random beat lora_copy at 0 of 2 budgets (0 significantly)."


def test_knobless_b_pairs_with_every_budget_of_a(run_dir: Path) -> None:
    cells = aggregate(load_run(run_dir).trials)
    found = pair_cells(cells, "random", "full")
    assert [(a.budget, b.variant, b.budget, at) for a, b, at in found] == [
        (Budget.parse(x), "full", None, Budget.parse(x)) for x in BUDGETS
    ]
    # full predicts as sift does: -5 points for random at each budget; and the knob-less side may be A.
    report = compare_pairs(cells, [], "full", "random")
    assert [p.verdict for p in report.pairs] == ["not compared"] * 2  # no predictions passed: noted, not raised
    assert "rte at 0.1%: full's trials have no dev predictions." in report.footer()
    report = load_pairs(run_dir, "full", "random")
    assert [p.verdict for p in report.pairs] == ["full better"] * 2
    assert [round(p.result.diff * 100, 2) for p in report.pairs if p.result] == [5.0, 5.0]
    # Two knob-less methods: one row, no budget.
    # 50%: the majority class
    write_run(run_dir, [trial("classifier_only", None, seed, 1e-3, list(range(100))) for seed in range(3)])
    both = load_pairs(run_dir, "full", "classifier_only")
    assert [(p.budget, p.verdict) for p in both.pairs] == [(None, "full better")]
    assert both.cells(both.pairs[0])[1] == "-" and both.summary_line().startswith("full beat classifier_only at 1 of 1")


def test_cli_table_markdown_and_bad_input(run_dir: Path) -> None:
    table = invoke(run_dir, "sift", "random", "--resamples", "300")
    assert table.exit_code == 0, table.output
    assert "sift better" in table.output and "+5.00" in table.output and "lr=1e-3" in table.output
    assert "sift beat random at 2 of 2 budgets (2 significantly)." in table.output
    md = invoke(run_dir, "sift", "full", "--markdown")
    assert md.exit_code == 0, md.output
    head = md.output.splitlines()[0]
    assert head == "| task | budget | sift chosen | sift | full chosen | full | sift − full | 95% CI | verdict |"
    rows = [ln for ln in md.output.splitlines() if ln.startswith("| rte")]
    assert len(rows) == 2 and all("| +0.00 | [+0.00, +0.00] | indistinguishable |" in r for r in rows), rows
    assert "knob-less method (full, classifier_only: no budget)" in md.output
    assert "sift beat full at 0 of 2 budgets (0 significantly)." in md.output

    unknown = invoke(run_dir, "sift", "adapter")
    assert unknown.exit_code == 2 and "No method labelled 'adapter'" in unknown.output
    assert "sift, random, lora_copy, full" in unknown.output
    metric = invoke(run_dir, "sift", "random", "--metric", "f1")
    assert metric.exit_code == 2 and "--metric f1" in metric.output and "rte: accuracy" in metric.output
    (run_dir / "predictions.parquet").unlink()
    missing = invoke(run_dir, "sift", "random")
    assert missing.exit_code == 2 and str(run_dir) in missing.output.replace("\n", "")
    assert "no per-example dev predictions" in missing.output and "Traceback" not in missing.output
    with pytest.raises(SiftBenchError, match="does not exist"):
        load_pairs(run_dir / "nope", "sift", "random")


def test_budget_curve_png(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install -y chromium, or set SIFT_BENCH_CHROMIUM.")
    spec = importlib.util.spec_from_file_location("budget_curve_png", REPO / "benchmarks" / "budget_curve_png.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "curves.png"
    report = module.main([str(run_dir), "--out", str(out), "--width", "800"])
    assert report == {"png": str(out), "panels": 1} and json.loads(capsys.readouterr().out) == report
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == 800 and height > 300 and len(data) > 10_000
