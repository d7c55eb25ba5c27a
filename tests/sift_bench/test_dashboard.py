"""The HTML dashboard, checked in a real headless Chromium (Debian's `chromium`, driven by Playwright)."""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from results_factory import result
from results_factory import write_run as factory_write_run
from typer.testing import CliRunner

from sift_bench.cli import app
from sift_bench.dashboard import build_dashboard, pareto_front
from sift_bench.dashboard_server import DashboardServer
from sift_bench.errors import SiftBenchError
from sift_bench.metrics import metric_info
from sift_bench.spec import TrialResult, TrialSpec

REPO = Path(__file__).resolve().parents[2]
# Debian's chromium by default; any other Chromium or Chrome binary through $SIFT_BENCH_CHROMIUM.
CHROMIUM = Path(os.environ.get("SIFT_BENCH_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
BODY_PARAMS = 22_000_000  # a MiniLM-sized body: budgets below are shares of it
TASKS = {"mrpc": "f1", "rte": "accuracy"}
BUDGETED = {"sift": 0.02, "random": -0.03, "lora": 0.0}  # quality offset per method
BUDGETS = ("0.1%", "0.4%", "0.8%")


def row(task: str, method: str, budget: str | None, seed: int, value: float, **kw: Any) -> TrialResult:
    spec = TrialSpec(model="minilm-l6", task=task, method=method, budget=budget, seed=seed, suite="demo")
    share = float(budget.rstrip("%")) / 100 if budget else (1.0 if method == "full" else 0.0)
    params = int(BODY_PARAMS * share)
    fields: dict[str, Any] = {
        "trainable_params": params, "head_params": 770, "best_epoch": 2, "train_seconds": 5.0 + params / 1e6,
        "peak_memory_bytes": int((300 + params / 5e4) * 2**20), **kw,
    }  # fmt: skip
    metrics = {TASKS[task]: value} if fields.get("status", "ok") == "ok" else {}
    return result(spec, metrics, primary=TASKS[task], **fields)


def demo_rows(shift: dict[str, float] | None = None) -> list[TrialResult]:
    """2 tasks x (3 budgeted methods x 3 budgets + full + classifier_only) x 3 seeds, plus one failure."""
    shift = shift or {}
    rows = []
    for task in TASKS:
        for seed in range(3):
            noise = 0.004 * (seed - 1)
            for method, offset in BUDGETED.items():
                for i, budget in enumerate(BUDGETS):
                    v = 0.70 + 0.04 * i + offset + noise + shift.get(method, 0.0)
                    rows.append(row(task, method, budget, seed, v))
            rows.append(row(task, "full", None, seed, 0.80 + noise))
            rows.append(row(task, "classifier_only", None, seed, 0.62 + noise))
    rows.append(row("rte", "adapter", "0.8%", 0, float("nan"), status="failed", error="CUDA out of memory"))
    return rows


def write_run(root: Path, rows: list[TrialResult]) -> Path:
    """A results folder as a run writes it (the store writes atomically: the live server may read any time)."""
    manifest = {"suite": "demo", "git_commit": "0123abc", "hardware": {"cpu": "test"}, "packages": {"torch": "2"}}
    return factory_write_run(root, rows, manifest=manifest)


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    base = write_run(tmp_path / "base" / "demo", demo_rows())
    new = write_run(tmp_path / "new" / "demo", demo_rows(shift={"sift": 0.03, "lora": -0.05}))
    return base, new


# ----------------------------------------------------------------------------- HTML, no browser


def test_html_is_self_contained(runs: tuple[Path, Path]) -> None:
    from plotly.offline import get_plotlyjs

    full = build_dashboard([runs[1]])
    assert full.count(get_plotlyjs()) == 1  # the library, inlined once
    text = full.replace(get_plotlyjs(), "")  # (its bundle names CDNs it never loads for these plot types)
    assert "cdn." not in text and 'src="http' not in text and "<link" not in text
    assert text.count("Plotly.newPlot") == 2 + 2  # budget curves + Pareto plots, one per task
    assert 'id="regression-view"' not in text  # one run: no regression view
    assert "CUDA out of memory" in text and "0123abc" in text


def test_pareto_front() -> None:
    import pandas as pd

    cost, quality = pd.Series([1.0, 2.0, 3.0, 4.0]), pd.Series([50.0, 40.0, 60.0, 55.0])
    assert pareto_front(cost, quality, metric_info("accuracy")) == [0, 2]
    assert pareto_front(cost, quality, metric_info("eval_loss")) == [0, 1]


def test_bad_input(tmp_path: Path, runs: tuple[Path, Path]) -> None:
    with pytest.raises(SiftBenchError, match="one results folder, or two"):
        build_dashboard([runs[0], runs[1], runs[1]])
    result = CliRunner().invoke(app, ["dashboard", str(tmp_path / "nope"), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "does not exist" in " ".join(result.output.split())


def test_corrupt_evals_table_is_a_clear_error(tmp_path: Path, runs: tuple[Path, Path]) -> None:
    (runs[1] / "evals.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(SiftBenchError, match=r"evals\.parquet.*delete it and rerun the suite, or restore it"):
        build_dashboard([runs[1]])
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["dashboard", str(runs[0]), str(runs[1]), "-o", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output and not out.exists()
    assert "evals.parquet" in result.output and "delete it and rerun the suite" in " ".join(result.output.split())


def test_plots_use_the_leaderboard_cells(runs: tuple[Path, Path]) -> None:
    from sift_bench.aggregate import aggregate
    from sift_bench.dashboard import cell_frame
    from sift_bench.results import load_run

    cfg = cell_frame(aggregate(load_run(runs[0]).trials))
    # 2 tasks x (3 budgeted methods x 3 budgets + full + classifier_only); the failed adapter is not a cell.
    assert len(cfg) == 22 and set(cfg["budget"]) == {"-", *BUDGETS}
    sift = cfg[(cfg["task"] == "mrpc") & (cfg["method"] == "sift") & (cfg["budget"] == "0.8%")].iloc[0]
    assert sift["mean"] == pytest.approx(80.0) and sift["std"] == pytest.approx(0.4) and sift["n"] == 3


def test_chosen_grid_point_rule_and_marks(tmp_path: Path) -> None:
    from results_factory import wrong_on

    from sift_bench.spec import TrainSettings

    labels = [i % 2 for i in range(200)]
    rows = []
    for method, budget, lr, n_wrong in (
        ("full", None, 1e-5, 10),
        ("sift", "0.8%", 1e-3, 80),
        ("sift", "0.8%", 1e-4, 90),
    ):
        for seed in (0, 1):
            spec = TrialSpec(model="minilm-l6", task="rte", method=method, budget=budget, seed=seed, suite="demo",
                             grid={"learning_rate": lr}, train=TrainSettings(learning_rate=lr))  # fmt: skip
            rows.append(result(spec, {"accuracy": 1 - n_wrong / 200}, predictions=wrong_on(labels, range(n_wrong)),
                               trainable_params=1000 if budget else 10**6))  # fmt: skip
    factory_write_run(tmp_path, rows)
    page = build_dashboard([tmp_path])
    # The table, each choice marked by the edge rule (sift_bench.tuning): 1 and 2 learning rates are untuned.
    assert "95.00 ± 0.00 ★ (lr=1e-5 untuned)" in page and "60.00 ± 0.00 (lr=1e-3 untuned)" in page
    assert "budget 0.8%, n=2, lr=1e-3 untuned" in page  # the budget curve's hover text
    assert "untuned = fewer than 3 values tried" in page
    assert page.count("the grid point with the best mean over 2 seeds of dev accuracy") == 2  # table + curves
    assert "paired bootstrap over dev examples" in page


# ----------------------------------------------------------------------------- real Chromium


def test_dashboard_in_chromium(tmp_path: Path, runs: tuple[Path, Path]) -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium), or set "
            "SIFT_BENCH_CHROMIUM to any Chromium or Chrome binary; CI installs chromium."
        )
    from playwright.sync_api import sync_playwright

    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["dashboard", str(runs[0]), str(runs[1]), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1_000_000  # plotly.js is inlined

    url = out.as_uri()
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url, wait_until="load")
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 5")
            plots = page.eval_on_selector_all(
                ".js-plotly-plot",
                """els => els.map(el => ({
                    id: el.id,
                    width: el.querySelector('svg.main-svg').getBoundingClientRect().width,
                    marks: el.querySelectorAll('.scatterlayer path, .scatterlayer .point, .barlayer path').length,
                }))""",
            )
            leaderboard = page.eval_on_selector_all(
                "#leaderboard tbody tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText))"
            )
            regressions = page.eval_on_selector_all("#regressions tbody tr", "rows => rows.map(r => r.className)")
            # The README's picture of the dashboard (constructed demo data, two runs) is this page: refresh it
            # with SIFT_BENCH_UPDATE_DOCS=1 (a plain test run must not change a tracked file).
            shot = REPO / "docs" if os.environ.get("SIFT_BENCH_UPDATE_DOCS") == "1" else tmp_path
            page.screenshot(path=str(shot / "dashboard.png"), full_page=True)
        finally:
            browser.close()

    assert errors == [], errors
    assert set(requests) == {url}, requests  # nothing but the file itself: no CDN, no fonts
    ids = {p["id"] for p in plots}
    assert ids == {"regression-plot", "budget-0", "budget-1", "pareto-0", "pareto-1"}
    assert all(p["width"] > 100 and p["marks"] > 0 for p in plots), plots
    # 3 budgeted methods x 3 budgets + full + classifier_only (+ the failed adapter has no finished row).
    assert len(leaderboard) == 11
    assert [r[0] for r in leaderboard[:3]] == ["full", "classifier_only", "lora"]  # the paper's row order
    sift_08 = next(r for r in leaderboard if r[0] == "sift" and r[1] == "0.8%")
    assert sift_08[2] == "176.0K" and sift_08[3] == "83.00 ± 0.40"  # mrpc: 0.70 + 0.08 + 0.02 + 0.03
    # 2 tasks x 11 configs + the adapter that failed on both sides; lora regressed (-5 pt), sift improved.
    assert len(regressions) == 23
    assert regressions.count("regressed") == 6 and regressions.count("improved") == 6


def _wait_for_new_version(url: str, old: str) -> str:
    deadline = time.monotonic() + 20
    while (v := urllib.request.urlopen(url + "version", timeout=10).read().decode()) == old:
        assert time.monotonic() < deadline, "the server did not rebuild after the results changed"
        time.sleep(0.1)
    return v


def test_serve_follows_a_running_suite(tmp_path: Path) -> None:
    live = tmp_path / "results" / "demo"
    live.mkdir(parents=True)  # the suite has started but written no table yet
    server = DashboardServer([live], tmp_path / "live.html", port=0, poll_seconds=0.1).start()
    try:
        get = lambda path="": urllib.request.urlopen(server.url + path, timeout=10).read().decode()  # noqa: E731
        waiting = get()
        assert "has no trials.parquet" in waiting and 'fetch("/version"' in waiting
        v = get("version")
        write_run(live, demo_rows())
        v = _wait_for_new_version(server.url, v)
        first = get()
        assert 'id="leaderboard"' in first and 'fetch("/version"' in first
        assert 'fetch("/version"' not in (tmp_path / "live.html").read_text()  # the file stays offline-clean
        write_run(live, [row("mrpc", "adapter", "0.8%", 0, 0.7123)])  # one more trial: one more write
        _wait_for_new_version(server.url, v)
        assert "71.23" in get()
    finally:
        server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=2)


def test_cli_serve_calls_the_server(monkeypatch: pytest.MonkeyPatch, runs: tuple[Path, Path]) -> None:
    calls: list[DashboardServer] = []
    monkeypatch.setattr(DashboardServer, "serve_forever", lambda self: calls.append(self))
    result = CliRunner().invoke(
        app, ["dashboard", str(runs[1]), "--serve", "--port", "0", "-o", str(runs[1] / "x.html")]
    )
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and calls[0].results == [runs[1]] and "http://127.0.0.1:" in result.output
    calls[0].httpd.server_close()


def test_cli_serve_port_taken(runs: tuple[Path, Path]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(app, ["dashboard", str(runs[1]), "--serve", "--port", port])
    assert result.exit_code == 2 and "pick another --port" in " ".join(result.output.split())
