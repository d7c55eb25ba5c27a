"""`sift-bench export RESULTS --to mlflow|tensorboard|wandb`: a results folder into an experiment tracker
(sift_bench.trackers)."""

from __future__ import annotations

from typing import Annotated

import typer

from sift_bench.cli.common import console, fail, user_errors


def export(
    results: Annotated[str, typer.Argument(help="Results folder (results/<suite>/).")],
    to: Annotated[str, typer.Option("--to", help="The tracker: mlflow, tensorboard or wandb.")],
    uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).")
    ] = None,
    dir_: Annotated[
        str | None, typer.Option("--dir", help="TensorBoard log folder (default: runs); W&B's folder for wandb/.")
    ] = None,
    project: Annotated[
        str | None, typer.Option(help="MLflow experiment, W&B project or TensorBoard subfolder (default: the suite).")
    ] = None,
) -> None:
    """Log one tracker run per trial (params, per-epoch and final metrics, tags), grouped by suite. Exporting
    again updates the same runs. Exit 2: bad input, a tracker that is not installed or that failed."""
    from sift_bench.trackers import TRACKERS, export

    with user_errors():
        info = TRACKERS.get(to)
    if uri is not None and info.option != "--uri":
        raise fail(f"--uri is for --to mlflow; {to} takes {info.option} ({info.where}).")
    if dir_ is not None and info.option != "--dir":
        raise fail(f"--dir is for --to tensorboard or wandb; {to} takes {info.option} ({info.where}).")
    with user_errors():
        n = export(results, to, uri or dir_, project)
    where = uri or dir_ or "its default location"
    console.print(f"Exported {n} trial(s) from {results} to {to} ({where}).", markup=False, soft_wrap=True)
