"""A run's budget curves as one PNG (the paper's Figure 6 at CPU scale), rendered by headless Chromium.

    python benchmarks/budget_curve_png.py results/budget_curve_cpu --out docs/budget_curve_cpu.png
    python benchmarks/budget_curve_png.py results/quickstart --out /tmp/quickstart.png --width 1600

One panel per task: the primary dev metric against trainable parameters (task head excluded, log x axis),
the mean over seeds with std error bars, one line per method at the grid point `sift_bench.aggregate`
chose (the best mean over seeds). A knob-less method is a dotted reference line (classifier only: no
trainable body parameters) or a single point (full fine-tuning). The panels are the dashboard's figures
(`sift_bench.dashboard.budget_curves`) laid out side by side with one legend.

kaleido is not a dependency, so plotly writes self-contained HTML (plotly.js inlined, no network) and
Playwright drives Debian's chromium (/usr/bin/chromium, or $SIFT_BENCH_CHROMIUM) to screenshot it.
Prints one JSON object: {"png": path, "panels": n}. Bad input: one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from sift_bench.aggregate import aggregate
from sift_bench.dashboard import budget_curves, cell_frame
from sift_bench.errors import SiftBenchError
from sift_bench.results import atomic_write, load_run

COLUMNS = 2  # panels per row: two tasks (MRPC, SST-2) sit side by side
PANEL_HEIGHT = 420  # px, as the dashboard's figures
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium_path() -> Path:
    path = Path(os.environ.get("SIFT_BENCH_CHROMIUM", "/usr/bin/chromium"))
    if not path.is_file():
        raise SiftBenchError(
            f"{path} not found: install Debian's chromium (apt-get install -y chromium), or set "
            "SIFT_BENCH_CHROMIUM to any Chromium or Chrome binary."
        )
    return path


def curves_figure(results: str | Path, width: int) -> tuple[go.Figure, int]:
    """All tasks' budget curves in one figure (one subplot per task, a shared legend) and the panel count."""
    run = load_run(results)
    cfg = cell_frame(aggregate(run.trials))
    if cfg.empty:
        raise SiftBenchError(f"{run.path}: no finished (status ok) trials to plot; run the suite first.")
    palette = qualitative.Plotly + qualitative.D3
    colors = {m: palette[i % len(palette)] for i, m in enumerate(sorted(cfg["method"].unique()))}
    panels = budget_curves(cfg, colors)  # one per task, in sorted task order
    tasks = sorted(cfg["task"].unique())
    cols = min(COLUMNS, len(panels))
    rows = math.ceil(len(panels) / cols)
    titles = [f"{t} (dev {cfg[cfg['task'] == t]['metric'].iat[0]})" for t in tasks]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.08,
                        vertical_spacing=0.25 / rows)  # fmt: skip
    shown: set[str] = set()
    for i, panel in enumerate(panels):
        row, col = i // cols + 1, i % cols + 1
        for trace in panel.data:
            # One legend entry per method across panels; clicking it toggles the method everywhere.
            trace.update(legendgroup=trace.name, showlegend=trace.name not in shown)
            shown.add(trace.name)
            fig.add_trace(trace, row=row, col=col)
        fig.update_xaxes(type=panel.layout.xaxis.type, title_text="trainable parameters (head excluded)",
                         row=row, col=col)  # fmt: skip
        fig.update_yaxes(title_text=panel.layout.yaxis.title.text, row=row, col=col)
    fig.update_layout(
        title=f"{run.suite}: dev score vs trainable parameters (mean ± std over seeds, chosen grid points)",
        width=width, height=rows * PANEL_HEIGHT + 80, autosize=False, legend_title="method",
        margin={"t": 90, "b": 60, "l": 60, "r": 20}, template="plotly_white",
    )  # fmt: skip
    return fig, len(panels)


def render_png(fig: go.Figure, out: Path, chromium: Path) -> None:
    """Screenshot the figure's element in headless Chromium; `out` is replaced whole or left as it was."""
    from playwright.sync_api import sync_playwright

    width, height = int(fig.layout.width), int(fig.layout.height)
    page_html = fig.to_html(include_plotlyjs=True, full_html=True, config={"staticPlot": True})
    with tempfile.TemporaryDirectory() as tmp:
        page_file = Path(tmp) / "curves.html"
        page_file.write_text(page_html, encoding="utf-8")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": width + 40, "height": height + 40}, device_scale_factor=1)
                page.goto(page_file.as_uri(), wait_until="load")
                page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60_000)
                plot = page.locator(".js-plotly-plot").first
                atomic_write(out, lambda tmp_png: plot.screenshot(path=tmp_png, type="png"))
            finally:
                browser.close()


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="results folder (results/<suite>/)")
    ap.add_argument("--out", required=True, help="PNG to write, e.g. docs/budget_curve_cpu.png")
    ap.add_argument("--width", type=int, default=1200, help="image width in pixels")
    args = ap.parse_args(argv)
    try:
        if args.width < 300:
            raise SiftBenchError(f"--width {args.width}: too narrow for the panels; pass 300 or more.")
        fig, n = curves_figure(args.results, args.width)
        render_png(fig, Path(args.out), chromium_path())
    except SiftBenchError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    report: dict[str, object] = {"png": str(args.out), "panels": n}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
