"""One self-contained HTML report of a run: leaderboard, budget curves, Pareto plots, learned vs forgot (when
trials measured forgetting), regressions, manifest.

The file works offline: plotly.js is inlined once in <head> and nothing else is referenced, so it can be
mailed, attached to CI, or opened from a laptop on a plane. With two results folders (BASELINE NEW) the
report describes NEW and adds the regression view from `sift_bench.compare`. Files are read through
`sift_bench.results`; the numbers come from `sift_bench.aggregate`, as the leaderboard's do.
`sift_bench.dashboard_server` serves the report live while a suite runs.
"""

from __future__ import annotations

import html
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from sift_bench.aggregate import Cell, aggregate
from sift_bench.compare import Comparison, columns, compare_runs, row_cells, row_verdict, summary_line
from sift_bench.defaults import MEMORY_THRESHOLD, TIME_THRESHOLD, TOLERANCE
from sift_bench.errors import SiftBenchError
from sift_bench.forgetting_bootstrap import UNITS
from sift_bench.leaderboard import build as build_leaderboard
from sift_bench.leaderboard import selection_rules
from sift_bench.metrics import MetricInfo, metric_info
from sift_bench.results import atomic_write_text, load_run, read_forgetting, read_predictions
from sift_bench.spec import Budget

PLOT_CONFIG = {"displaylogo": False, "responsive": True}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
td { white-space: nowrap; } td.notes { white-space: normal; }
tr.regressed td { background: #fde2e1; } tr.improved td { background: #e3f6e5; }
tr.noise td { color: #777; } tr.new td, tr.fixed td { background: #e6f0fb; }
.best { font-weight: bold; }
pre { background: #f7f7f7; padding: 8px; overflow-x: auto; font-size: 0.85em; }
.banner { padding: 8px 12px; border-radius: 4px; font-weight: bold; }
.banner.bad { background: #fde2e1; color: #8a1c14; } .banner.good { background: #e3f6e5; color: #1d5e26; }
"""

# ----------------------------------------------------------------------------- data


def cell_frame(cells: list[Cell]) -> pd.DataFrame:
    """The aggregated cells as a frame for the plots: `method` is the variant label, `mean`/`std` are in
    display units (points for % metrics), `chosen` the grid point chosen with its tuning marks, as the
    leaderboard shows it ("lr=3e-3 ↑edge"; "" without a grid), `tuning` the marks alone ("lr ↑edge");
    `forgetting`/`forgetting_std` in the measure's units (NaN: not measured)."""
    cols = ["model", "task", "method", "budget", "metric", "mean", "std", "n", "params", "memory_mib", "seconds",
            "chosen", "selection", "forgetting", "forgetting_std", "forgetting_measure", "tuning"]  # fmt: skip
    rows = [
        [c.model, c.task, c.variant, Budget.text(c.budget), c.metric, *c.display(), c.n, c.params,
         math.nan if c.memory_bytes is None else c.memory_bytes / 2**20,
         math.nan if c.train_seconds is None else c.train_seconds, c.chosen_marked(), c.selection,
         math.nan if c.forgetting.mean is None else c.forgetting.mean, c.forgetting.std or 0.0,
         c.forgetting_measure or "", c.tuning_text()]
        for c in cells
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def _method_colors(methods: list[str]) -> dict[str, str]:
    palette = qualitative.Plotly + qualitative.D3
    return {m: palette[i % len(palette)] for i, m in enumerate(sorted(methods))}


# ----------------------------------------------------------------------------- sections


def _hover(budget: str, n: int, chosen: str) -> str:
    """A point's hover line: its budget, seeds and chosen grid point with its tuning marks."""
    return f"budget {budget}, n={n}" + (f", {chosen}" if chosen else "")


def leaderboard_html(
    trials: pd.DataFrame,
    predictions: list[dict[str, Any]] | None = None,
    forgetting: list[dict[str, Any]] | None = None,
) -> str:
    """The Table-2-style leaderboard of `sift_bench.leaderboard` (same numbers, chosen grid points, forgetting
    columns and significance marks as `sift-bench leaderboard`)."""
    try:
        board = build_leaderboard(trials, predictions=predictions, forgetting=forgetting)
    except SiftBenchError:
        return "<p>No finished trials yet.</p>"
    head = board.header()
    n_left = 2 + (len(board.models) > 1)  # model?, method, budget are text columns
    out = ['<table id="leaderboard"><thead><tr>']
    out += [f"<th{' class=l' if i < n_left else ''}>{html.escape(h)}</th>" for i, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for row in board.rows:
        cells = board.cells(row)
        out.append('<tr class="lb-row">')
        out += [f"<td{' class=l' if i < n_left else ''}>{html.escape(c)}</td>" for i, c in enumerate(cells)]
        out.append("</tr>")
    out.append("</tbody></table>")
    footer = [*board.footer(), "Params exclude the task head."]
    out += [f'<p class="meta lb-note">{html.escape(line)}</p>' for line in footer]
    return "".join(out)


def budget_curves(cfg: pd.DataFrame, colors: dict[str, str]) -> list[go.Figure]:
    """Per task: metric vs trainable params, one line per method, error bars = std over seeds (Figure 6)."""
    figs = []
    for task in sorted(cfg["task"].unique()):
        t = cfg[cfg["task"] == task]
        positive = t[t["params"] > 0]["params"]
        fig = go.Figure()
        for method in sorted(t["method"].unique()):
            m = t[t["method"] == method].sort_values("params")
            if (m["params"] > 0).any() or positive.empty:
                fig.add_trace(
                    go.Scatter(
                        x=m["params"], y=m["mean"], error_y={"type": "data", "array": m["std"], "visible": True},
                        mode="lines+markers", name=method, line={"color": colors[method]},
                        text=[_hover(b, n, ch) for b, n, ch in zip(m["budget"], m["n"], m["chosen"], strict=True)],
                        hovertemplate="%{y:.2f} at %{x:,.0f} params<br>%{text}<extra>" + method + "</extra>",
                    )
                )  # fmt: skip
            else:  # no trainable body parameters (classifier only): a reference line, as in Figure 6
                fig.add_trace(
                    go.Scatter(
                        x=[positive.min() / 2, positive.max() * 2], y=[m["mean"].mean()] * 2, mode="lines", name=method,
                        line={"color": colors[method], "dash": "dot"},
                        text=[_hover("-", m["n"].iat[0], m["chosen"].iat[0])] * 2,
                        hovertemplate="%{y:.2f} (head only)<br>%{text}<extra>" + method + "</extra>",
                    )
                )  # fmt: skip
        log = not positive.empty
        fig.update_layout(
            title=f"{task}: {t['metric'].iat[0]} vs trainable parameters",
            xaxis={"title": "trainable parameters (task head excluded)", "type": "log" if log else "linear"},
            yaxis={"title": t["metric"].iat[0]}, height=420, margin={"t": 50, "b": 50}, legend_title="method",
        )  # fmt: skip
        figs.append(fig)
    return figs


def pareto_front(x: pd.Series, y: pd.Series, info: MetricInfo) -> list[int]:
    """Indices (positional) of configs no other config beats on both cost (x, lower) and metric (y, in the
    direction of `info`)."""
    order = sorted(range(len(x)), key=lambda i: (x.iat[i], -info.signed(y.iat[i])))
    front, best = [], -math.inf
    for i in order:
        score = info.signed(y.iat[i])
        if score > best:
            front.append(i)
            best = score
    return front


def pareto_plots(cfg: pd.DataFrame, colors: dict[str, str]) -> list[go.Figure]:
    """Per task: metric vs peak memory and vs train time, with the Pareto front of the configs."""
    figs = []
    for task in sorted(cfg["task"].unique()):
        t = cfg[cfg["task"] == task].reset_index(drop=True)
        metric = t["metric"].iat[0]
        info = metric_info(metric)
        fig = make_subplots(rows=1, cols=2, subplot_titles=("vs peak memory", "vs train time"))
        for col, (xcol, xtitle) in enumerate((("memory_mib", "peak memory (MiB)"), ("seconds", "train seconds")), 1):
            have = t[t[xcol].notna() & (t[xcol] > 0)].reset_index(drop=True)
            for method in sorted(have["method"].unique()):
                m = have[have["method"] == method]
                fig.add_trace(
                    go.Scatter(
                        x=m[xcol], y=m["mean"], mode="markers", name=method, legendgroup=method,
                        showlegend=col == 1, marker={"color": colors[method], "size": 9},
                        text=[_hover(b, n, ch) for b, n, ch in zip(m["budget"], m["n"], m["chosen"], strict=True)],
                        hovertemplate="%{y:.2f}, %{x:.1f}<br>%{text}<extra>" + method + "</extra>",
                    ),
                    row=1, col=col,
                )  # fmt: skip
            if len(have):
                front = have.iloc[pareto_front(have[xcol], have["mean"], info)]
                fig.add_trace(
                    go.Scatter(
                        x=front[xcol], y=front["mean"], mode="lines", name="Pareto front",
                        line={"color": "#888", "dash": "dash", "shape": "hv"}, showlegend=col == 1,
                        legendgroup="front", hoverinfo="skip",
                    ),
                    row=1, col=col,
                )  # fmt: skip
            fig.update_xaxes(title_text=xtitle, row=1, col=col)
            fig.update_yaxes(title_text=metric, row=1, col=col)
        fig.update_layout(title=f"{task}: cost vs {metric}", height=420, margin={"t": 70, "b": 50})
        figs.append(fig)
    return figs


def learned_vs_forgot(cfg: pd.DataFrame, colors: dict[str, str]) -> list[go.Figure]:
    """Per task whose cells measured forgetting: task score (x) against forgetting (y) per method and budget,
    error bars = std over seeds, with the Pareto front (no other cell both scores higher and forgets less)."""
    figs = []
    have = cfg[cfg["forgetting"].notna()]
    for task in sorted(have["task"].unique()):
        t = have[have["task"] == task].reset_index(drop=True)
        metric = t["metric"].iat[0]
        measures = sorted(set(t["forgetting_measure"]) - {""})
        unit = ", ".join(f"{m}, {UNITS.get(m, '?')}" for m in measures)
        fig = go.Figure()
        for method in sorted(t["method"].unique()):
            m = t[t["method"] == method]
            fig.add_trace(
                go.Scatter(
                    x=m["mean"], y=m["forgetting"], mode="markers+text", name=method, text=m["budget"].replace("-", ""),
                    textposition="top center", marker={"color": colors[method], "size": 10},
                    error_x={"type": "data", "array": m["std"], "visible": True},
                    error_y={"type": "data", "array": m["forgetting_std"], "visible": True},
                    customdata=[_hover(b, n, ch) for b, n, ch in zip(m["budget"], m["n"], m["chosen"], strict=True)],
                    hovertemplate="learned %{x:.2f}, forgot %{y:.3f}<br>%{customdata}<extra>" + method + "</extra>",
                )
            )  # fmt: skip
        # The front: forgetting is the cost (lower is better), the score the quality; drawn in score order.
        front = t.iloc[pareto_front(t["forgetting"], t["mean"], metric_info(metric))].sort_values("mean")
        fig.add_trace(
            go.Scatter(
                x=front["mean"], y=front["forgetting"], mode="lines", name="Pareto front",
                line={"color": "#888", "dash": "dash"}, hoverinfo="skip",
            )
        )  # fmt: skip
        fig.update_layout(
            title=f"{task}: learned ({metric}) vs forgot", height=460, margin={"t": 50, "b": 50},
            xaxis={"title": f"{metric} (dev, higher is better)"},
            yaxis={"title": f"forgetting ({unit}; lower is better)"}, legend_title="method",
        )  # fmt: skip
        figs.append(fig)
    return figs


def regression_html(cmp: Comparison) -> tuple[str, go.Figure | None]:
    """The compare report as a coloured table (the same cells as `sift-bench compare`: verdicts, bands,
    bootstrap intervals and notes) plus a bar chart of primary-metric changes."""
    bad = cmp.regressed
    cols = columns(cmp)
    numeric = ("baseline", "new", "delta", "band", "95% CI")
    parts = [
        f'<p class="banner {"bad" if bad else "good"}" id="regression-summary">{html.escape(summary_line(cmp))}</p>',
        f'<p class="meta">baseline <code>{html.escape(cmp.baseline)}</code> → new <code>{html.escape(cmp.new)}'
        f"</code>; tolerance {cmp.tolerance} pt, time ratio {cmp.time_threshold}, memory ratio "
        f"{cmp.memory_threshold}</p>",
        '<table id="regressions"><thead><tr>',
        *[f"<th{'' if col in numeric else ' class=l'}>{html.escape(col)}</th>" for col in cols],
        "</tr></thead><tbody>",
    ]
    for c in cmp.cells:
        cells = row_cells(c)
        # Missing, new and fixed cells are coloured by their status (the CSS classes of the same names).
        row_class = row_verdict(c) if c.regressed or c.status == "compared" else c.status
        parts.append(f'<tr class="{row_class}">')
        for col in cols:
            css = "" if col in numeric else ' class="l notes"' if col == "notes" else ' class="l"'
            parts.append(f"<td{css}>{html.escape(cells[col])}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table>")
    if cmp.tuning_legend:
        parts.append(f'<p class="meta">{html.escape(cmp.tuning_legend)}</p>')

    changes = [c for c in cmp.cells if c.primary and c.primary.delta is not None]
    if not changes:
        return "".join(parts), None
    colour = {"improved": "#2ca02c", "regressed": "#d62728", "noise": "#9e9e9e"}
    labels = [f"{c.task} {c.method} {c.budget}" + (f" {c.chosen}" if c.chosen else "") for c in changes]
    fig = go.Figure(
        go.Bar(
            x=labels, y=[c.primary.delta for c in changes],
            marker_color=[colour.get(c.primary.verdict, "#9e9e9e") for c in changes],
            error_y={"type": "data", "array": [c.primary.band for c in changes], "visible": True},
            hovertemplate="%{x}: %{y:+.2f} (band ±%{error_y.array:.2f})<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(
        title="Change of the primary metric (new - baseline); whiskers: noise band", height=420,
        yaxis={"title": "Δ (points for % metrics)"}, margin={"t": 50, "b": 120},
    )  # fmt: skip
    return "".join(parts), fig


def failed_html(trials: pd.DataFrame) -> str:
    failed = trials[trials["status"] != "ok"]
    if failed.empty:
        return "<p>No failed trials.</p>"
    rows = "".join(
        f'<tr><td class="l">{html.escape(str(r.get("task")))}</td><td class="l">{html.escape(str(r.get("method")))}'
        f'</td><td class="l">{html.escape(Budget.text(r.get("budget")))}</td><td>{r.get("seed")}</td>'
        f'<td class="l"><code>{html.escape(str(r.get("error") or ""))[:500]}</code></td></tr>'
        for _, r in failed.iterrows()
    )
    return (
        '<table id="failed"><thead><tr><th class="l">task</th><th class="l">method</th><th class="l">budget</th>'
        f'<th>seed</th><th class="l">error</th></tr></thead><tbody>{rows}</tbody></table>'
    )


# ----------------------------------------------------------------------------- the page


def build_dashboard(
    results: list[str | Path],
    *,
    tolerance: float = TOLERANCE,
    time_threshold: float = TIME_THRESHOLD,
    memory_threshold: float = MEMORY_THRESHOLD,
) -> str:
    """The HTML text of the report of `results[-1]`; with two folders, also the regression view."""
    if not 1 <= len(results) <= 2:
        raise SiftBenchError(
            f"dashboard takes one results folder, or two (BASELINE NEW) for the regression view; got {len(results)}."
        )
    runs = [load_run(r) for r in results]
    run = runs[-1]
    cells = aggregate(run.trials)
    cfg = cell_frame(cells)
    colors = _method_colors(list(cfg["method"].unique()))
    figs: list[tuple[str, go.Figure]] = []

    n_ok = int((run.trials["status"] == "ok").sum())
    n_failed = len(run.trials) - n_ok
    body = [
        f"<h1>SIFT-Bench: {html.escape(run.suite)}</h1>",
        f'<p class="meta">results <code>{html.escape(str(run.path))}</code> · {n_ok} finished trials, '
        f"{n_failed} failed · generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC</p>",
    ]
    if len(runs) == 2:
        cmp = compare_runs(
            runs[0], runs[1], tolerance=tolerance, time_threshold=time_threshold, memory_threshold=memory_threshold
        )
        table, fig = regression_html(cmp)
        body += ['<h2 id="regression-view">Regressions: baseline vs new</h2>', table]
        if fig is not None:
            figs.append(("regression-plot", fig))
            body.append('<div id="regression-plot-slot"></div>')
    leaderboard = leaderboard_html(run.trials, read_predictions(run.path), read_forgetting(run.path))
    body += ['<h2 id="leaderboard-section">Leaderboard</h2>', leaderboard]
    rules = " ".join(selection_rules(cells))
    body.append(
        '<h2 id="budget-curves">Budget curves</h2><p class="meta">Metric vs trainable parameters (task head '
        "excluded), one line per method; error bars: std over seeds (the paper's Figure 6); hover for the "
        "grid point chosen and its tuning marks (see the leaderboard).</p>"
        f'<p class="meta" id="selection-rule">{html.escape(rules)}</p>'
    )
    for i, fig in enumerate(budget_curves(cfg, colors)):
        figs.append((f"budget-{i}", fig))
        body.append(f'<div id="budget-{i}-slot"></div>')
    body.append(
        '<h2 id="pareto">Cost vs quality</h2><p class="meta">Mean over seeds per config; dashed: the Pareto '
        "front (no other config is both cheaper and better).</p>"
    )
    for i, fig in enumerate(pareto_plots(cfg, colors)):
        figs.append((f"pareto-{i}", fig))
        body.append(f'<div id="pareto-{i}-slot"></div>')
    forgot = learned_vs_forgot(cfg, colors)
    if forgot:
        body.append(
            '<h2 id="learned-vs-forgot">Learned vs forgot</h2><p class="meta">Per method and budget, at the grid '
            "point the score chose: the task score against the pre-trained ability lost in fine-tuning (positive = "
            "forgot); error bars: std over seeds; dashed: the Pareto front (no other cell both scores higher and "
            "forgets less).</p>"
        )
    for i, fig in enumerate(forgot):
        figs.append((f"forgot-{i}", fig))
        body.append(f'<div id="forgot-{i}-slot"></div>')
    body += ['<h2 id="failed-section">Failed trials</h2>', failed_html(run.trials)]
    body.append('<h2 id="manifest">Run manifest</h2>')
    for r in runs:
        text = json.dumps(r.manifest, indent=2, default=str) if r.manifest else "(no manifest.json)"
        body.append(f"<h3>{html.escape(str(r.path))}</h3><pre>{html.escape(text)}</pre>")

    page = "\n".join(body)
    for name, fig in figs:  # each figure replaces its slot; plotly.js itself is inlined once in <head>
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=name, config=PLOT_CONFIG)
        page = page.replace(f'<div id="{name}-slot"></div>', f'<div class="plot">{div}</div>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>SIFT-Bench: {html.escape(run.suite)}</title><style>{CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>\n<body>\n{page}\n</body></html>\n'
    )


def write_dashboard(results: list[str | Path], out: str | Path, **kwargs: Any) -> Path:
    """Build the report and write it atomically (temp file + rename), so a reader never sees half a page."""
    return atomic_write_text(out, build_dashboard(results, **kwargs))
