"""Leaderboard: the grid point with the best mean over seeds, mean +- std, average, filters, files, the selection
rule and the significance marks."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from results_factory import result, write_run, wrong_on
from rich.console import Console

from sift_bench.errors import SiftBenchError
from sift_bench.leaderboard import build, write_leaderboard
from sift_bench.metrics import heldout_metric
from sift_bench.results import load_run, read_predictions
from sift_bench.spec import TrainSettings, TrialResult, TrialSpec


def trial(task: str, method: str, seed: int, value: float, *, budget: str | None = "0.8%", lr: float = 1e-3,
          metric: str = "accuracy", params: int = 1000, status: str = "ok", grid: dict | None = None,
          variant: str | None = None, heldout: float | None = None,
          predictions: list[tuple[int, int, int]] | None = None) -> TrialResult:  # fmt: skip
    train = TrainSettings(learning_rate=lr, heldout_fraction=0.1 if heldout is not None else 0.0)
    spec = TrialSpec(model="m", task=task, method=method, budget=budget, seed=seed, suite="s", grid=grid or {},
                     train=train, variant=variant)  # fmt: skip
    best = {metric: value} | ({heldout_metric(metric): heldout} if heldout is not None else {})
    return result(spec, best, status=status, primary=metric, trainable_params=params, predictions=predictions or ())


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return write_run(tmp_path, [
        # sift on mrpc: a grid over lr; lr 1e-3 has the best mean over seeds (0.90, 0.80 -> 0.85).
        trial("mrpc", "sift", 0, 0.90, lr=1e-3, grid={"learning_rate": 1e-3}),
        trial("mrpc", "sift", 0, 0.70, lr=1e-4, grid={"learning_rate": 1e-4}),
        trial("mrpc", "sift", 1, 0.80, lr=1e-3, grid={"learning_rate": 1e-3}),
        trial("mrpc", "sift", 1, 0.60, lr=1e-4, grid={"learning_rate": 1e-4}),
        trial("rte", "sift", 0, 0.70),
        trial("rte", "sift", 1, 0.72),
        # stsb: pearson
        trial("stsb", "sift", 0, 0.88, metric="pearson"),
        # lora at two budgets, one seed; a failed trial is ignored.
        trial("mrpc", "lora", 0, 0.84),
        trial("mrpc", "lora", 0, 0.86, budget="2%", params=3000),
        trial("rte", "lora", 0, 0.0, status="failed"),
        # full: no budget.
        trial("mrpc", "full", 0, 0.88, budget=None, params=10**6),
    ])  # fmt: skip


def trials(run: Path):
    return load_run(run).trials


def test_best_mean_grid_point_then_mean_std(run: Path) -> None:
    board = build(trials(run))
    assert board.tasks == ["mrpc", "rte", "stsb"]  # the paper's column order
    rows = {(r.method, None if r.budget is None else str(r.budget)): r for r in board.rows}
    sift = rows[("sift", "0.8%")]
    assert sift.cells["mrpc"].mean == pytest.approx(0.85) and sift.cells["mrpc"].n == 2
    assert sift.cells["mrpc"].std == pytest.approx(0.0707107, rel=1e-5)  # sample std of 0.9, 0.8
    assert sift.cells["mrpc"].text() == "85.00 ± 7.07"
    avg, complete = sift.average(board.tasks)
    assert avg == pytest.approx((85.0 + 71.0 + 88.0) / 3) and complete
    lora = rows[("lora", "0.8%")]
    assert "rte" not in lora.cells  # failed trials do not count
    assert board.cells(lora)[-1] == "84.00*"  # average over the tasks present, marked
    assert [r.method for r in board.rows] == ["full", "lora", "lora", "sift"]  # paper order, then budget


def test_filters(run: Path) -> None:
    board = build(trials(run), budget="2.0%")  # the same budget as "2%"
    assert {(r.method, r.budget) for r in board.rows} == {("lora", "2%"), ("full", None)}  # refs stay
    assert build(trials(run), task="rte").tasks == ["rte"]
    with pytest.raises(SiftBenchError, match=r"No finished .* model=nope"):
        build(trials(run), model="nope")
    with pytest.raises(SiftBenchError, match=r"--budget 'abc': a budget is a percentage like '0.8%'"):
        build(trials(run), budget="abc")


def test_variant_labels_are_rows_and_lower_is_better_metrics(tmp_path: Path) -> None:
    s = write_run(tmp_path, [
        trial("mrpc", "sift", 0, 0.80, variant="sift_qv"),
        trial("mrpc", "sift", 0, 0.70, variant="sift", lr=2e-3),
        # eval_loss as the primary metric: the lower grid point wins.
        trial("rte", "lora", 0, 0.40, metric="eval_loss", grid={"learning_rate": 1e-3}),
        trial("rte", "lora", 0, 0.30, metric="eval_loss", lr=2e-3, grid={"learning_rate": 2e-3}),
    ])  # fmt: skip
    board = build(trials(s))
    rows = {r.method: r for r in board.rows}
    assert set(rows) == {"sift", "sift_qv", "lora"} and rows["sift_qv"].base_method == "sift"
    assert rows["lora"].cells["rte"].mean == pytest.approx(0.30) and rows["lora"].cells["rte"].text() == "0.30"


def test_corrupt_trials_table_is_a_clear_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sift_bench.cli import app

    (tmp_path / "trials.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(SiftBenchError, match=r"trials\.parquet.*delete it and rerun the suite, or restore it"):
        write_leaderboard(tmp_path)
    result = CliRunner().invoke(app, ["leaderboard", str(tmp_path)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "delete it and rerun the suite" in " ".join(result.output.split())


def test_writes_markdown_csv_and_prints(run: Path, tmp_path: Path) -> None:
    board, md, csv_path = write_leaderboard(run, out_dir=tmp_path / "lb")
    text = md.read_text()
    assert "| method | budget | params | mrpc (accuracy) | rte (accuracy) | stsb (pearson) | avg |" in text
    # Two learning rates tried: the choice is marked untuned (the edge rule, sift_bench.tuning).
    assert "| sift | 0.8% | 1.0K | 85.00 ± 7.07 (lr=1e-3 untuned) | 71.00 ± 1.41 | 88.00 | 81.33 |" in text
    assert "Tuning of the grid point chosen: untuned = fewer than 3 values tried." in text
    assert (
        "Selection: for each method and budget, the grid point with the best mean over 1-2 seeds of dev primary "
        "metric (each trial at its best dev epoch; dev is also reported, so these scores are optimistic)."
    ) in text
    assert "No predictions: no significance marks." in text and "★" not in text
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    sift = next(r for r in rows if r["method"] == "sift")
    assert float(sift["mrpc.mean"]) == pytest.approx(85.0) and sift["mrpc.n"] == "2"
    assert sift["mrpc.chosen"] == "lr=1e-3" and sift["mrpc.selection"] == "dev" and sift["mrpc.mark"] == ""
    assert sift["mrpc.tuning"] == "lr untuned" and sift["rte.tuning"] == ""  # rte: no grid
    out = Console(file=io.StringIO(), width=200)
    out.print(board.to_rich())
    assert "85.00 ± 7.07" in out.file.getvalue()


def test_heldout_rule_line(tmp_path: Path) -> None:
    rows = []
    for seed in (0, 1, 2):  # dev prefers lr 1e-3; the held-out slice prefers 1e-4, and it chooses
        rows.append(trial("rte", "lora", seed, 0.80, grid={"learning_rate": 1e-3}, heldout=0.60))
        rows.append(trial("rte", "lora", seed, 0.70, lr=1e-4, grid={"learning_rate": 1e-4}, heldout=0.70))
    s = write_run(tmp_path, rows)
    board = build(trials(s))
    text = board.to_markdown()
    assert "| lora | 0.8% | 1.0K | 70.00 ± 0.00 (lr=1e-4 untuned) | 70.00 |" in text
    assert (
        "Selection: for each method and budget, the grid point with the best mean over 3 seeds of accuracy on a "
        "held-out 10% of the training set (each trial's best epoch picked there too; dev reported"
    ) in text


# ----------------------------------------------------------------------------- significance marks

N_EXAMPLES = 300
LABELS = [i % 2 for i in range(N_EXAMPLES)]


def predicted(n_wrong: int, offset: int = 0) -> tuple[float, list[tuple[int, int, int]]]:
    """Predictions on rte's dev set with `n_wrong` mistakes (spread from `offset`), and their accuracy."""
    wrong = {(offset + 3 * i) % N_EXAMPLES for i in range(n_wrong)}
    return 1 - len(wrong) / N_EXAMPLES, wrong_on(LABELS, wrong)


def test_significance_marks(tmp_path: Path) -> None:
    rows: list[TrialResult] = []
    for seed in (0, 1):
        # At 0.8%: full (knob-less) wins clearly over sift; lora predicts exactly what full does -> ≈.
        acc, preds = predicted(15)
        rows.append(trial("rte", "full", seed, acc, budget=None, params=10**6, predictions=preds))
        rows.append(trial("rte", "lora", seed, acc, predictions=preds))
        acc, preds = predicted(90, offset=1)
        rows.append(trial("rte", "sift", seed, acc, grid={"learning_rate": 1e-3}, predictions=preds))
        # A worse sift grid point: not chosen, so its predictions play no part.
        acc, preds = predicted(150)
        rows.append(trial("rte", "sift", seed, acc, lr=1e-4, grid={"learning_rate": 1e-4}, predictions=preds))
        # At 2%: lora beats full clearly, so full is ★ at 0.8% only.
        acc, preds = predicted(0)
        rows.append(trial("rte", "lora", seed, acc, budget="2%", predictions=preds))
    board, md, csv_path = write_leaderboard(write_run(tmp_path, rows))
    rows = {(r.method, str(r.budget)): r for r in board.rows}
    text = lambda method, budget: board.cells(rows[(method, budget)])[3]  # noqa: E731
    assert text("full", "None") == "95.00 ± 0.00 ★0.8%"
    assert text("lora", "0.8%") == "95.00 ± 0.00 ≈"
    assert text("sift", "0.8%") == "70.00 ± 0.00 (lr=1e-3 untuned)"  # clearly worse: no mark
    assert text("lora", "2%") == "100.00 ± 0.00 ★"
    legend = md.read_text()
    assert "★ best per task and budget" in legend and "(1000 resamples)" in legend and "95% interval" in legend
    assert "No predictions" not in legend
    marks = {r["method"] + r["budget"]: r["rte.mark"] for r in csv.DictReader(io.StringIO(csv_path.read_text()))}
    assert marks == {"full": "★0.8%", "lora0.8%": "≈", "lora2%": "★", "sift0.8%": ""}


def test_missing_predictions_are_noted_not_marked(tmp_path: Path) -> None:
    acc, preds = predicted(10)
    s = write_run(tmp_path, [
        trial("rte", "full", 0, acc, budget=None, predictions=preds),
        trial("rte", "sift", 0, 0.5),  # no predictions
    ])  # fmt: skip
    board = build(trials(s), predictions=read_predictions(tmp_path))
    assert board.marks == {("m", "rte", "full", None): "★"}
    assert board.notes == ["rte at 0.8%: sift has no predictions; not compared."]
