"""The `sift-bench` command line. It parses flags and calls library functions; nothing else lives here."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from sift_bench import __version__

app = typer.Typer(
    name="sift-bench",
    help="Benchmark sparse fine-tuning (SIFT) against full fine-tuning, LoRA, adapters and more.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"sift-bench {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """SIFT-Bench: run declarative suites of fine-tuning trials and compare the results."""
