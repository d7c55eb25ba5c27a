"""The plotly figures of `sift-bench analyze` (Figures 2, 3(d) and 4 of the paper), one function each,
from the tables `sift_bench.analyze` builds."""

from __future__ import annotations

from typing import Any

import pandas as pd

INIT_COLORS = {"pre-trained": "#1f77b4", "random init": "#d62728"}
DASHES = ["solid", "dash", "dot", "dashdot", "longdash"]


def landscape_figure(table: pd.DataFrame, dims: int, mode: str) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    what = ("from random init (alpha=0) to pre-trained (alpha=1)" if mode == "interpolate"
            else "along random filter-normalised directions")  # fmt: skip
    inits = list(dict.fromkeys(table["init"]))
    if dims == 1:
        fig = go.Figure(
            [
                go.Scatter(x=g["alpha"], y=g["loss"], mode="lines+markers", name=i, line={"color": INIT_COLORS.get(i)})
                for i, g in table.groupby("init", sort=False)
            ]
        )
        fig.update_layout(title=f"Training loss {what} (Figure 2, 1-D)", xaxis_title="alpha", yaxis_title="loss")
        return fig
    fig = make_subplots(rows=1, cols=len(inits), subplot_titles=inits, horizontal_spacing=0.15)
    for c, init in enumerate(inits, start=1):
        g = table[table["init"] == init].pivot(index="beta", columns="alpha", values="loss")
        right = fig.layout[f"xaxis{c if c > 1 else ''}"].domain[1]  # each colour bar right of its own plot
        contour = go.Contour(x=g.columns, y=g.index, z=g.values, colorbar={"x": right + 0.01},
                             contours={"showlabels": True}, name=init)  # fmt: skip
        fig.add_trace(contour, 1, c)
        fig.update_xaxes(title_text="alpha", row=1, col=c)
        fig.update_yaxes(title_text="beta", row=1, col=c)
    fig.update_layout(title=f"Training loss {what} (Figure 2, 2-D)")
    return fig


def quasi_sparsity_figure(table: pd.DataFrame) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fractions = sorted(set(table["fraction"]))
    f_batch = min(fractions, key=lambda f: abs(f - 0.01))  # the paper's headline: top 1%
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        f"gradient accumulated over {int(table['batch'].max()) + 1} batches",
        f"top {100 * f_batch:g}% of each batch's own gradient (overall)"))  # fmt: skip
    last = table["batch"].max()
    acc = table[(table["mode"] == "accumulated") & (table["batch"] == last) & (table["scope"] != "weight")]
    for (init, scope), g in acc.groupby(["init", "scope"], sort=False):
        line = {"color": INIT_COLORS.get(init), "dash": "solid" if scope == "overall" else "dot"}
        name = f"{init}, {'per-weight top-x% (as SIFT)' if scope == 'overall' else 'global top-x%'}"
        fig.add_trace(go.Scatter(x=100 * g["fraction"], y=g["share"], mode="lines+markers", line=line, name=name), 1, 1)
    per = table[(table["mode"] == "batch") & (table["scope"] == "overall") & (table["fraction"] == f_batch)]
    for init, g in per.groupby("init", sort=False):
        fig.add_trace(go.Scatter(x=g["batch"], y=g["share"], mode="lines+markers", showlegend=False,
                                 line={"color": INIT_COLORS.get(init)}, name=init), 1, 2)  # fmt: skip
    fig.update_xaxes(title_text="top x% of entries", type="log", row=1, col=1)
    fig.update_xaxes(title_text="batch", dtick=1, row=1, col=2)
    fig.update_yaxes(title_text="share of squared gradient norm", range=[0, 1.02])
    fig.update_layout(title="Gradient quasi-sparsity (Figure 3(d)): share of ||g||^2 in the top-x% entries")
    return fig


def stability_figure(table: pd.DataFrame) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    inits = list(dict.fromkeys(table["init"]))
    fig = make_subplots(rows=2, cols=len(inits), subplot_titles=inits, shared_yaxes=True, vertical_spacing=0.12)
    overall = table[table["scope"] == "overall"]
    series = [  # (column, row, colour, label)
        ("share_own", 1, "#1f77b4", "top-x% of the current batch"),
        ("share_first", 1, "#d62728", "top-x% of the first batch (SIFT)"),
        ("jaccard_first", 2, "#2ca02c", "Jaccard(first batch, current)"),
        ("jaccard_prev", 2, "#9467bd", "Jaccard(previous batch, current)"),
    ]
    for c, init in enumerate(inits, start=1):
        for n, (f, g) in enumerate(overall[overall["init"] == init].groupby("fraction")):
            for col, row, color, label in series:
                fig.add_trace(go.Scatter(x=g["step"], y=g[col], mode="lines+markers", name=f"{label}, x={100 * f:g}%",
                                         legendgroup=f"{col}{f}", showlegend=c == 1,
                                         line={"color": color, "dash": DASHES[n % len(DASHES)]}), row, c)  # fmt: skip
        fig.update_xaxes(title_text="training step", dtick=2, row=2, col=c)
    fig.update_yaxes(range=[0, 1.02])
    fig.update_yaxes(title_text="share of squared gradient norm", row=1, col=1)
    fig.update_yaxes(title_text="index-set overlap", row=2, col=1)
    fig.update_layout(title="Selection stability (Figure 4): does the first batch's top-x% keep the gradient?",
                      height=800)  # fmt: skip
    return fig
