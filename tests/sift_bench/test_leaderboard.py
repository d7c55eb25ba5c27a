"""Leaderboard: best grid point per seed on dev, mean +- std over seeds, average, filters, files."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from rich.console import Console

from sift_bench.errors import SiftBenchError
from sift_bench.leaderboard import build, write_leaderboard
from sift_bench.results import ResultStore, load_run
from sift_bench.spec import TrainSettings, TrialResult, TrialSpec


def result(task: str, method: str, seed: int, value: float, *, budget: str | None = "0.8%", lr: float = 1e-3,
           metric: str = "accuracy", params: int = 1000, status: str = "ok", grid: dict | None = None,
           variant: str | None = None) -> TrialResult:  # fmt: skip
    spec = TrialSpec(model="m", task=task, method=method, budget=budget, seed=seed, suite="s", grid=grid or {},
                     train=TrainSettings(learning_rate=lr), variant=variant)  # fmt: skip
    return TrialResult(
        trial_id=spec.trial_id, spec=spec, status=status,
        primary_metric=metric, best={metric: value}, best_epoch=1, trainable_params=params,
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    s = ResultStore(tmp_path)
    # sift on mrpc: a grid over lr; seed 0's best point is 0.90, seed 1's is 0.80 -> mean 0.85.
    s.add(result("mrpc", "sift", 0, 0.90, lr=1e-3, grid={"learning_rate": 1e-3}))
    s.add(result("mrpc", "sift", 0, 0.70, lr=1e-4, grid={"learning_rate": 1e-4}))
    s.add(result("mrpc", "sift", 1, 0.80, lr=1e-3, grid={"learning_rate": 1e-3}))
    s.add(result("mrpc", "sift", 1, 0.60, lr=1e-4, grid={"learning_rate": 1e-4}))
    s.add(result("rte", "sift", 0, 0.70))
    s.add(result("rte", "sift", 1, 0.72))
    # stsb: pearson
    s.add(result("stsb", "sift", 0, 0.88, metric="pearson"))
    # lora at two budgets, one seed; a failed trial is ignored.
    s.add(result("mrpc", "lora", 0, 0.84))
    s.add(result("mrpc", "lora", 0, 0.86, budget="2%", params=3000))
    s.add(result("rte", "lora", 0, 0.0, status="failed"))
    # full: no budget.
    s.add(result("mrpc", "full", 0, 0.88, budget=None, params=10**6))
    return s


def trials(store: ResultStore):
    return load_run(store.root).trials


def test_best_grid_point_then_mean_std(store: ResultStore) -> None:
    board = build(trials(store))
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


def test_filters(store: ResultStore) -> None:
    board = build(trials(store), budget="2.0%")  # the same budget as "2%"
    assert {(r.method, r.budget) for r in board.rows} == {("lora", "2%"), ("full", None)}  # refs stay
    assert build(trials(store), task="rte").tasks == ["rte"]
    with pytest.raises(SiftBenchError, match=r"No finished .* model=nope"):
        build(trials(store), model="nope")
    with pytest.raises(SiftBenchError, match=r"--budget 'abc': a budget is a percentage like '0.8%'"):
        build(trials(store), budget="abc")


def test_variant_labels_are_rows_and_lower_is_better_metrics(tmp_path: Path) -> None:
    s = ResultStore(tmp_path)
    s.add(result("mrpc", "sift", 0, 0.80, variant="sift_qv"))
    s.add(result("mrpc", "sift", 0, 0.70, variant="sift", lr=2e-3))
    # eval_loss as the primary metric: the lower grid point wins.
    s.add(result("rte", "lora", 0, 0.40, metric="eval_loss", grid={"learning_rate": 1e-3}))
    s.add(result("rte", "lora", 0, 0.30, metric="eval_loss", lr=2e-3, grid={"learning_rate": 2e-3}))
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


def test_writes_markdown_csv_and_prints(store: ResultStore, tmp_path: Path) -> None:
    board, md, csv_path = write_leaderboard(store.root, out_dir=tmp_path / "lb")
    text = md.read_text()
    assert "| method | budget | params | mrpc (accuracy) | rte (accuracy) | stsb (pearson) | avg |" in text
    assert "| sift | 0.8% | 1.0K | 85.00 ± 7.07 | 71.00 ± 1.41 | 88.00 | 81.33 |" in text
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    sift = next(r for r in rows if r["method"] == "sift")
    assert float(sift["mrpc.mean"]) == pytest.approx(85.0) and sift["mrpc.n"] == "2"
    out = Console(file=io.StringIO(), width=200)
    out.print(board.to_rich())
    assert "85.00 ± 7.07" in out.file.getvalue()
