"""One self-contained HTML report of a run: leaderboard, budget curves, Pareto plots, regressions, manifest.

The file works offline: plotly.js is inlined once in <head> and nothing else is referenced, so it can be
mailed, attached to CI, or opened from a laptop on a plane. With two results folders (BASELINE NEW) the
report describes NEW and adds the regression view from `sift_bench.compare`.

`DashboardServer` serves the report on 127.0.0.1 and rebuilds it when a results table changes (mtime
polling; a suite's result store rewrites its files atomically); the served page polls `/version` and
reloads itself. That poll script is only added to the served copy, so the file on disk stays offline-clean.
"""

from __future__ import annotations

import html
import json
import math
import os
import tempfile
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from sift_bench.compare import Comparison, compare_runs, load_run, summary_line
from sift_bench.errors import SiftBenchError
from sift_bench.leaderboard import build as build_leaderboard
from sift_bench.metrics import metric_info

WATCHED = ("trials.parquet", "evals.parquet", "manifest.json")
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

LIVE_JS = """<script>
(function () {  // sift-bench dashboard --serve: reload when the results change
  var seen = null;
  setInterval(function () {
    fetch("/version", {cache: "no-store"}).then(function (r) { return r.text(); }).then(function (v) {
      if (seen === null) { seen = v; } else if (v !== seen) { location.reload(); }
    }).catch(function () {});
  }, 2000);
})();
</script>"""


# ----------------------------------------------------------------------------- data


def trial_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Finished trials, one per (model, task, method label, budget, seed): the best grid point on dev, as
    the leaderboard picks it. `value` is the task's primary metric in display units (points for % metrics)
    and `method` is the suite's label (the `variant` column, e.g. sift_qv)."""
    ok = trials[trials["status"] == "ok"].copy()
    if ok.empty:
        return ok.assign(value=pd.Series(dtype=float), metric=pd.Series(dtype=str))
    ok["method"] = ok["variant"]
    ok["budget"] = ok.get("budget", pd.Series("-", index=ok.index)).map(_budget_label)
    primary = ok.groupby("task")["primary_metric"].agg(lambda s: s.dropna().mode().iat[0] if s.notna().any() else "")
    ok["metric"] = ok["task"].map(primary)
    values, scores = [], []
    for _, row in ok.iterrows():
        v = row.get(f"metric.{row['metric']}")
        info = metric_info(row["metric"]) if row["metric"] else metric_info("score")
        value = float(v) * (100.0 if info.percent else 1.0) if pd.notna(v) else math.nan
        values.append(value)
        scores.append(value if info.higher_is_better else -value)  # larger is better either way
    ok["value"], ok["_score"] = values, scores
    for col in ("trainable_params", "train_seconds", "peak_memory_bytes"):
        ok[col] = pd.to_numeric(ok[col], errors="coerce") if col in ok.columns else math.nan
    ok = ok[ok["value"].notna()].sort_values("_score", ascending=False, kind="stable")
    return ok.drop_duplicates(["model", "task", "method", "budget", "seed"]).drop(columns="_score")


def config_frame(ok: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (model, task, method, budget)."""
    keys = ["model", "task", "method", "budget"]
    if ok.empty:
        return pd.DataFrame(columns=[*keys, "metric", "mean", "std", "n", "params", "memory_mib", "seconds"])
    agg = ok.groupby(keys, dropna=False).agg(
        metric=("metric", "first"),
        mean=("value", "mean"),
        std=("value", "std"),
        n=("value", "size"),
        params=("trainable_params", "mean"),
        memory_mib=("peak_memory_bytes", lambda s: s.mean() / 2**20),
        seconds=("train_seconds", "mean"),
    )
    return agg.reset_index().fillna({"std": 0.0})


def _budget_label(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _method_colors(methods: list[str]) -> dict[str, str]:
    palette = qualitative.Plotly + qualitative.D3
    return {m: palette[i % len(palette)] for i, m in enumerate(sorted(methods))}


# ----------------------------------------------------------------------------- sections


def leaderboard_html(trials: pd.DataFrame) -> str:
    """The Table-2-style leaderboard of `sift_bench.leaderboard` (same numbers as `sift-bench leaderboard`)."""
    records = trials.astype(object).where(trials.notna(), None).to_dict("records")  # NaN -> None, as pyarrow reads
    try:
        board = build_leaderboard(records)
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
    out.append(
        '<p class="meta">Mean ± std over seeds of each task\'s primary metric (best dev epoch, best grid point '
        "per seed); * = average over the tasks present; params exclude the task head.</p>"
    )
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
                        text=[f"budget {b}, n={n}" for b, n in zip(m["budget"], m["n"], strict=True)],
                        hovertemplate="%{y:.2f} at %{x:,.0f} params<br>%{text}<extra>" + method + "</extra>",
                    )
                )  # fmt: skip
            else:  # no trainable body parameters (classifier only): a reference line, as in Figure 6
                fig.add_trace(
                    go.Scatter(
                        x=[positive.min() / 2, positive.max() * 2], y=[m["mean"].mean()] * 2, mode="lines", name=method,
                        line={"color": colors[method], "dash": "dot"},
                        hovertemplate="%{y:.2f} (head only)<extra>" + method + "</extra>",
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


def pareto_front(x: pd.Series, y: pd.Series, higher_is_better: bool) -> list[int]:
    """Indices (positional) of configs no other config beats on both cost (x, lower) and metric (y)."""
    order = sorted(range(len(x)), key=lambda i: (x.iat[i], -y.iat[i] if higher_is_better else y.iat[i]))
    front, best = [], -math.inf
    for i in order:
        score = y.iat[i] if higher_is_better else -y.iat[i]
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
        hib = metric_info(metric).higher_is_better
        fig = make_subplots(rows=1, cols=2, subplot_titles=("vs peak memory", "vs train time"))
        for col, (xcol, xtitle) in enumerate((("memory_mib", "peak memory (MiB)"), ("seconds", "train seconds")), 1):
            have = t[t[xcol].notna() & (t[xcol] > 0)].reset_index(drop=True)
            for method in sorted(have["method"].unique()):
                m = have[have["method"] == method]
                fig.add_trace(
                    go.Scatter(
                        x=m[xcol], y=m["mean"], mode="markers", name=method, legendgroup=method,
                        showlegend=col == 1, marker={"color": colors[method], "size": 9},
                        text=[f"budget {b}" for b in m["budget"]],
                        hovertemplate="%{y:.2f}, %{x:.1f}<br>%{text}<extra>" + method + "</extra>",
                    ),
                    row=1, col=col,
                )  # fmt: skip
            if len(have):
                front = have.iloc[pareto_front(have[xcol], have["mean"], hib)]
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


def regression_html(cmp: Comparison) -> tuple[str, go.Figure | None]:
    """The compare report as a coloured table plus a bar chart of primary-metric changes."""
    bad = cmp.regressed
    parts = [
        f'<p class="banner {"bad" if bad else "good"}" id="regression-summary">{html.escape(summary_line(cmp))}</p>',
        f'<p class="meta">baseline <code>{html.escape(cmp.baseline)}</code> → new <code>{html.escape(cmp.new)}'
        f"</code>; tolerance {cmp.tolerance} pt, time ratio {cmp.time_threshold}, memory ratio "
        f"{cmp.memory_threshold}</p>",
        '<table id="regressions"><thead><tr><th class="l">task</th><th class="l">method</th>'
        '<th class="l">budget</th><th class="l">model</th><th class="l">metric</th><th>baseline</th><th>new</th>'
        '<th>Δ</th><th>band</th><th class="l">verdict</th><th>time</th><th>memory</th><th class="l">notes</th>'
        "</tr></thead><tbody>",
    ]
    for c in cmp.configs:
        p = c.primary
        verdict = "regressed" if c.regressed else c.status if c.status != "compared" else p.verdict if p else "n/a"
        label = c.status if c.status != "compared" else (p.verdict if p else "n/a")

        def cell(mean: float | None, std: float | None, n: int) -> str:
            if mean is None:
                return "-"
            return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "") + f" <small>(n={n})</small>"

        ratio = lambda r: f"x{r:.2f}" if r else "-"  # noqa: E731
        parts.append(
            f'<tr class="{verdict}"><td class="l">{html.escape(c.task)}</td><td class="l">'
            f'{html.escape(c.method)}</td><td class="l">{html.escape(c.budget)}</td>'
            f'<td class="l">{html.escape(c.model)}{" " + html.escape(c.settings) if c.settings else ""}</td>'
            f'<td class="l">{html.escape(p.metric) if p else "-"}</td>'
            f"<td>{cell(p.base_mean, p.base_std, p.base_n) if p else '-'}</td>"
            f"<td>{cell(p.new_mean, p.new_std, p.new_n) if p else '-'}</td>"
            f"<td>{f'{p.delta:+.2f}' if p and p.delta is not None else '-'}</td>"
            f"<td>{f'±{p.band:.2f}' if p and p.band is not None else '-'}</td>"
            f'<td class="l">{"REGRESSED" if c.regressed else label}</td>'
            f"<td>{ratio(c.time_ratio)}</td><td>{ratio(c.memory_ratio)}</td>"
            f'<td class="l notes">{html.escape("; ".join(c.flags))}</td></tr>'
        )
    parts.append("</tbody></table>")

    changes = [c for c in cmp.configs if c.primary and c.primary.delta is not None]
    if not changes:
        return "".join(parts), None
    colour = {"improved": "#2ca02c", "regressed": "#d62728", "noise": "#9e9e9e"}
    labels = [f"{c.task} {c.method} {c.budget}" + (f" {c.settings}" if c.settings else "") for c in changes]
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
        f'</td><td class="l">{html.escape(_budget_label(r.get("budget")))}</td><td>{r.get("seed")}</td>'
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
    tolerance: float = 1.0,
    time_threshold: float = 1.5,
    memory_threshold: float = 1.2,
) -> str:
    """The HTML text of the report of `results[-1]`; with two folders, also the regression view."""
    if not 1 <= len(results) <= 2:
        raise SiftBenchError(
            f"dashboard takes one results folder, or two (BASELINE NEW) for the regression view; got {len(results)}."
        )
    runs = [load_run(r) for r in results]
    run = runs[-1]
    ok = trial_frame(run.trials)
    cfg = config_frame(ok)
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
    body += ['<h2 id="leaderboard-section">Leaderboard</h2>', leaderboard_html(run.trials)]
    body.append(
        '<h2 id="budget-curves">Budget curves</h2><p class="meta">Metric vs trainable parameters (task head '
        "excluded), one line per method; error bars: std over seeds (the paper's Figure 6).</p>"
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
    out = Path(out)
    text = build_dashboard(results, **kwargs)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, out)
    return out


# ----------------------------------------------------------------------------- --serve


def _error_page(message: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>SIFT-Bench dashboard</title>'
        f"<style>{CSS}</style></head><body><h1>SIFT-Bench dashboard</h1>"
        f'<p class="banner bad">{html.escape(message)}</p><p>This page reloads when the results change.</p>'
        "</body></html>"
    )


class DashboardServer:
    """Serve the report on host:port and rebuild it when a watched results file changes.

    `start()` returns at once (server and watcher run in daemon threads); `stop()` shuts both down.
    Port 0 picks a free port; read it from `.port` / `.url` after `start()`.
    """

    def __init__(
        self,
        results: list[str | Path],
        out: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        poll_seconds: float = 1.0,
        **build_kwargs: Any,
    ) -> None:
        self.results = [Path(r) for r in results]
        self.out = Path(out)
        self.poll_seconds = poll_seconds
        self.build_kwargs = build_kwargs
        self.version = 0
        self._html = b""
        self._stamp: tuple = ()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/version":
                    body, ctype = str(server.version).encode(), "text/plain"
                elif path in ("/", f"/{server.out.name}"):
                    with server._lock:
                        body, ctype = server._html, "text/html; charset=utf-8"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # keep the terminal for our own lines
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.httpd.server_address[0]}:{self.port}/"

    def _mtimes(self) -> tuple:
        return tuple(
            (p / name).stat().st_mtime_ns if (p / name).exists() else None for p in self.results for name in WATCHED
        )

    def rebuild(self) -> None:
        """Write the report file and swap the served copy (with the live-reload script) in."""
        self._stamp = self._mtimes()
        try:
            write_dashboard(self.results, self.out, **self.build_kwargs)
            text = self.out.read_text(encoding="utf-8").replace("</body>", LIVE_JS + "</body>", 1)
        except SiftBenchError as e:  # e.g. the suite has not written its first table yet
            text = _error_page(str(e)).replace("</body>", LIVE_JS + "</body>", 1)
        with self._lock:
            self._html = text.encode("utf-8")
            self.version += 1

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            if self._mtimes() != self._stamp:
                self.rebuild()

    def start(self) -> DashboardServer:
        self.rebuild()
        self._threads = [
            threading.Thread(target=self.httpd.serve_forever, name="dashboard-http", daemon=True),
            threading.Thread(target=self._watch, name="dashboard-watch", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def serve_forever(self) -> None:
        """Block until Ctrl-C, then stop cleanly."""
        self.start()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
