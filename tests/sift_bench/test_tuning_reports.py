"""Edges are visible: every report marks a choice at the edge of a 3+ point grid axis (↑edge/↓edge), a grid axis
of fewer than 3 points (untuned) and points the driver added beyond an edge (ext k), by the one rule in
sift_bench.tuning."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from results_factory import result, write_run, wrong_on
from typer.testing import CliRunner

from sift_bench.aggregate import Cell, aggregate
from sift_bench.cli import app
from sift_bench.compare import compare_paths, to_markdown
from sift_bench.dashboard import budget_curves, build_dashboard, cell_frame
from sift_bench.leaderboard import build, write_leaderboard
from sift_bench.results import load_run
from sift_bench.spec import TrainSettings, TrialResult, TrialSpec

REPO = Path(__file__).resolve().parents[2]
LABELS = [i % 2 for i in range(20)]
LEGEND = {
    "tuned": "no mark = tuned: chosen inside 3+ values tried",
    "edge": "↑edge/↓edge = chosen at the largest/smallest of 3+ values tried: the optimum may lie beyond",
    "untuned": "untuned = fewer than 3 values tried",
    "ext": "ext k = the driver added k points beyond an edge (search.extend_edges)",
}


def trial(method: str, budget: str | None, lr: float, wrong: int, *, extension: int = 0,
          grid: bool = True) -> TrialResult:  # fmt: skip
    """One seed on rte, wrong on the first `wrong` of 20 dev examples."""
    spec = TrialSpec(model="m", task="rte", method=method, budget=budget, seed=0, suite="s", extension=extension,
                     grid={"learning_rate": lr} if grid else {}, train=TrainSettings(learning_rate=lr))  # fmt: skip
    return result(spec, {"accuracy": 1 - wrong / len(LABELS)}, predictions=wrong_on(LABELS, range(wrong)))


def grid(method: str, budget: str, wrong: dict[float, int], added: dict[float, int] | None = None) -> list[TrialResult]:
    """A cell's trials, one per learning rate: `wrong` the suite's grid, `added` the points the driver added."""
    return [trial(method, budget, lr, w) for lr, w in wrong.items()] + [
        trial(method, budget, lr, w, extension=1) for lr, w in (added or {}).items()
    ]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run", [
        *grid("sift", "0.8%", {1e-4: 8, 3e-4: 5, 1e-3: 2}),  # the largest lr wins: ↑edge
        *grid("lora", "0.8%", {1e-4: 8, 3e-4: 3, 1e-3: 6}),  # the middle wins: tuned, no mark
        *grid("random", "0.8%", {1e-3: 9, 3e-3: 7}),  # two points: untuned
        *grid("sift", "2%", {1e-4: 8, 3e-4: 5, 1e-3: 2}, {3.33e-3: 4}),  # extended: 1e-3 is now inside
        *grid("lora", "2%", {1e-4: 8, 3e-4: 5, 1e-3: 3}, {3.33e-3: 1}),  # extended, and the new point wins
        trial("full", None, 1e-5, 12, grid=False),  # no grid: nothing to mark
    ])  # fmt: skip


def cells(trials: Any) -> dict[tuple[str, str], Cell]:
    return {(c.variant, str(c.budget)): c for c in aggregate(trials)}


def test_cells_carry_the_marks(run: Path) -> None:
    c = cells(load_run(run).trials)
    sift = c["sift", "0.8%"]
    assert [a.state for a in sift.axes] == ["high"] and sift.edge and not sift.untuned
    assert sift.tuning_text() == "lr ↑edge" and sift.chosen_marked() == "lr=1e-3 ↑edge"
    lora = c["lora", "0.8%"]
    assert lora.tuning_text() == "" and lora.chosen_marked() == "lr=3e-4" and not lora.edge
    assert c["random", "0.8%"].tuning_text() == "lr untuned" and c["random", "0.8%"].untuned
    wide = c["sift", "2%"]  # judged on the widened axis
    assert wide.axes[0].values == (1e-4, 3e-4, 1e-3, 3.33e-3) and wide.axes[0].state == "interior"
    assert wide.extended == 1 and wide.tuning_text() == "ext 1" and wide.chosen_marked() == "lr=1e-3, ext 1"
    assert c["lora", "2%"].chosen_marked() == "lr=3.33e-3 ↑edge, ext 1"
    full = c["full", "None"]
    assert full.axes == () and full.tuning_text() == "" and full.chosen_marked() == ""


def test_leaderboard_text_markdown_and_csv(run: Path, tmp_path: Path) -> None:
    board, md, csv_path = write_leaderboard(run, out_dir=tmp_path / "lb")
    text = {(r.method, str(r.budget)): board.cells(r)[3] for r in board.rows}
    assert text["sift", "0.8%"].endswith(" (lr=1e-3 ↑edge)") and text["lora", "0.8%"].endswith(" (lr=3e-4)")
    assert text["random", "0.8%"].endswith(" (lr=3e-3 untuned)")
    assert text["sift", "2%"].endswith(" (lr=1e-3, ext 1)") and text["full", "None"].endswith(("★", "≈", "00"))
    doc = md.read_text()
    assert "| sift | 0.8% | 1.0K | 90.00 ★ (lr=1e-3 ↑edge) | 90.00 |" in doc
    legend = "; ".join(LEGEND.values())
    assert f"Tuning of the grid point chosen: {legend}." in doc
    rows = {(r["method"], r["budget"]): r for r in csv.DictReader(io.StringIO(csv_path.read_text()))}
    assert rows["sift", "0.8%"]["rte.tuning"] == "lr ↑edge" and rows["lora", "0.8%"]["rte.tuning"] == ""
    assert (
        rows["random", "0.8%"]["rte.tuning"] == "lr untuned" and rows["lora", "2%"]["rte.tuning"] == "lr ↑edge, ext 1"
    )
    assert rows["sift", "0.8%"]["rte.chosen"] == "lr=1e-3"  # the existing column is unchanged


def test_legend_names_only_the_marks_that_occur(tmp_path: Path) -> None:
    tuned = write_run(tmp_path / "tuned", grid("lora", "0.8%", {1e-4: 8, 3e-4: 3, 1e-3: 6}))
    doc = build(load_run(tuned).trials).to_markdown()
    assert "(lr=3e-4) |" in doc and f"Tuning of the grid point chosen: {LEGEND['tuned']}.\n" in doc
    no_grid = write_run(tmp_path / "no_grid", [trial("full", None, 1e-5, 3, grid=False)])
    assert "Tuning of the grid point chosen" not in build(load_run(no_grid).trials).to_markdown()
    edge = write_run(tmp_path / "edge", grid("lora", "0.8%", {1e-4: 2, 3e-4: 3, 1e-3: 6}))
    doc = build(load_run(edge).trials).to_markdown()
    assert "(lr=1e-4 ↓edge)" in doc and f"Tuning of the grid point chosen: {LEGEND['edge']}.\n" in doc


def test_pairs_show_each_sides_marks(run: Path) -> None:
    out = CliRunner().invoke(app, ["pairs", str(run), "sift", "lora", "--markdown"])
    assert out.exit_code == 0, out.output
    assert "| rte (accuracy) | 0.8% | lr=1e-3 ↑edge | 90.00 | lr=3e-4 | 85.00 |" in out.output
    assert "| rte (accuracy) | 2% | lr=1e-3, ext 1 | 90.00 | lr=3.33e-3 ↑edge, ext 1 | 95.00 |" in out.output
    assert f"Tuning of the grid point chosen: {LEGEND['tuned']}; {LEGEND['edge']}; {LEGEND['ext']}." in out.output


def test_compare_shows_the_new_marks_and_the_old_when_different(tmp_path: Path) -> None:
    untuned = grid("random", "0.8%", {1e-3: 9, 3e-3: 7})
    base = write_run(tmp_path / "a", [*grid("sift", "0.8%", {1e-4: 8, 3e-4: 2, 1e-3: 5}), *untuned])
    new = write_run(tmp_path / "b", [*grid("sift", "0.8%", {1e-4: 8, 3e-4: 5, 1e-3: 2}), *untuned])
    cmp = compare_paths(base, new)
    by = {c.method: c for c in cmp.cells}
    assert by["sift"].chosen == "lr=3e-4 -> lr=1e-3" and by["sift"].tuning == "tuned -> lr ↑edge"
    assert by["random"].tuning == "lr untuned"
    assert by["sift"].primary.verdict == "noise" and not cmp.regressed  # the marks never judge
    md = to_markdown(cmp)
    assert "| chosen | tuning |" in md and "| lr=3e-4 -> lr=1e-3 | tuned -> lr ↑edge |" in md
    assert f"Tuning of the grid point chosen: {LEGEND['tuned']}; {LEGEND['edge']}; {LEGEND['untuned']}." in md
    assert json.loads(cmp.to_json())["cells"][0]["tuning"] in ("lr untuned", "tuned -> lr ↑edge")
    same = compare_paths(new, new)
    assert {c.method: c.tuning for c in same.cells} == {"sift": "lr ↑edge", "random": "lr untuned"}


def test_dashboard_table_and_hover_text(run: Path) -> None:
    page = build_dashboard([run])
    assert "90.00 ★ (lr=1e-3 ↑edge)" in page and "(lr=3e-3 untuned)" in page and LEGEND["ext"] in page
    cfg = cell_frame(aggregate(load_run(run).trials))
    sift = cfg[(cfg["method"] == "sift") & (cfg["budget"] == "0.8%")].iloc[0]
    assert sift["chosen"] == "lr=1e-3 ↑edge" and sift["tuning"] == "lr ↑edge"
    colors = {m: "#000" for m in cfg["method"].unique()}
    hovers = [t for trace in budget_curves(cfg, colors)[0].data for t in (trace.text or ())]
    assert "budget 0.8%, n=1, lr=1e-3 ↑edge" in hovers and "budget 2%, n=1, lr=3.33e-3 ↑edge, ext 1" in hovers


def test_tables_without_extensions_read_as_extension_0(run: Path) -> None:
    old = aggregate(load_run(REPO / "tests" / "data" / "schema1_quickstart").trials)  # schema 1
    assert old and all(c.extended == 0 for c in old)
    # A frame whose specs are not parsed falls back to the `extension` column, and without it to 0.
    trials = load_run(run).trials
    trials["spec"] = [s.model_dump_json() for s in trials["spec"]]
    assert cells(trials)["sift", "2%"].extended == 1
    bare = cells(trials.drop(columns=["extension"]))
    assert bare["sift", "2%"].extended == 0 and bare["sift", "0.8%"].tuning_text() == "lr ↑edge"
