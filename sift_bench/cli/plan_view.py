"""What `sift-bench plan` prints: a summary that fits 80 columns (trials per task x method, the totals, where
each model comes from), or with `--detail` one row per trial."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.table import Table

from sift_bench.errors import SiftBenchError
from sift_bench.spec import TrialSpec
from sift_bench.suite import Suite

KIND_TEXT = {
    "alias": "alias, ships with a pip package",
    "local": "local folder",
    "hub-cache": "hub id, in the local cache",
    "hub": "needs the hub: downloaded on first use",
}


def model_sources(models: list[str]) -> list[tuple[str, str, bool]]:
    """(model, where it comes from, ok) per model, without touching the network (HF_HUB_OFFLINE honoured)."""
    from sift_bench.models import resolve_model

    out = []
    for name in models:
        try:
            ref = resolve_model(name, probe=False)
        except SiftBenchError as e:
            out.append((name, str(e), False))
            continue
        out.append((name, KIND_TEXT.get(ref.kind, ref.kind), True))
    return out


def summary_table(rows: list[dict[str, Any]]) -> Table:
    """Methods down, tasks across: each cell is the trial count, with how many are done."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    total = Counter((r["method"], r["task"]) for r in rows)
    done = Counter((r["method"], r["task"]) for r in rows if r["state"] == "done")

    def cell(n: int, d: int) -> str:
        return f"{n}" if not d else f"{n} ({d} done)"

    table = Table(title="Trials per method and task", title_justify="left")
    table.add_column("method", overflow="fold")
    for task in tasks:
        table.add_column(task, justify="right", overflow="fold")
    table.add_column("all", justify="right", style="bold")
    for m in methods:
        cells = [cell(total[m, t], done[m, t]) for t in tasks]
        row_total = sum(total[m, t] for t in tasks)
        table.add_row(m, *cells, cell(row_total, sum(done[m, t] for t in tasks)))
    return table


def totals_line(rows: list[dict[str, Any]]) -> str:
    states = Counter(r["state"] for r in rows)
    failed = f", {states['failed']} of them failed before" if states["failed"] else ""
    return f"{len(rows)} trials ({len(rows) - states['done']} to run{failed}, {states['done']} done)"


def search_line(suite: Suite, specs: list[TrialSpec]) -> str | None:
    """With `search.extend_edges`, how many trials the driver may add beyond the grid (worst case)."""
    from sift_bench.search import untuned_axes, worst_case_extensions

    n = suite.search.extend_edges
    if not n:
        return None
    line = (
        f"search.extend_edges: {n} — the driver may add up to {worst_case_extensions(suite, specs)} trials beyond "
        f"grid edges ({n} per numeric axis of 3+ values × cells × seeds)"
    )
    short = untuned_axes(specs)
    return line + (f"; axes with fewer than 3 values are not extended ({', '.join(short)})" if short else "")


def detail_table(title: str, rows: list[dict[str, Any]]) -> Table:
    """Every trial, one row each. A setting that is the same for every trial goes into the caption instead
    of a column, and an empty column is left out, so that the table keeps to 80 columns where it can."""
    keep = ("trial_id", "state")
    same = {k: v for k, v in rows[0].items() if k not in keep and all(r[k] == v for r in rows)} if rows else {}
    columns = [k for k in (rows[0] if rows else {}) if k not in same]
    caption = ", ".join(f"{k} {v}" for k, v in same.items() if v != "")
    table = Table(title=title, title_justify="left", caption=f"Every trial: {caption}" if caption else None)
    table.add_column("#", justify="right")
    for col in columns:
        table.add_column(col, no_wrap=col == "trial_id", overflow="fold")
    for i, row in enumerate(rows, 1):
        table.add_row(str(i), *(str(row[k]) for k in columns))
    return table
