"""`sift-bench pairs RESULTS A B`: method A against method B at every budget, with bootstrap intervals
(sift_bench.pairs)."""

from __future__ import annotations

from typing import Annotated

import typer

from sift_bench.cli.common import console, fail, user_errors
from sift_bench.defaults import N_RESAMPLES


def pairs(
    results: Annotated[str, typer.Argument(help="Results folder (results/<suite>/) with predictions.parquet.")],
    a: Annotated[str, typer.Argument(help="Method label A (as the leaderboard's method column shows it).")],
    b: Annotated[str, typer.Argument(help="Method label B; the table shows A − B.")],
    metric: Annotated[
        str | None, typer.Option(help="Compare on this metric, or `forgetting` (default: each task's primary).")
    ] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples of the dev examples (or items).")] = N_RESAMPLES,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table (for docs).")] = False,
) -> None:
    """A minus B per task and budget: the chosen grid points, their means over seeds, the difference and its
    95% interval (paired bootstrap over dev examples, pooled over seeds; with --metric forgetting, over the
    forgetting sample's items; lower is better), and a verdict. Exit 2: bad input."""
    from rich.console import Console

    from sift_bench.pairs import load_pairs

    if resamples < 1:
        raise fail(f"--resamples must be at least 1, not {resamples}.")
    with user_errors():
        report = load_pairs(results, a, b, metric=metric, n_resamples=resamples)
    if markdown:
        typer.echo(report.to_markdown(), nl=False)
        return
    out = console if console.is_terminal else Console(width=160)  # keep the table whole in logs and pipes
    out.print(report.to_rich(title=f"{a} vs {b}: {results}"))
