"""What every command shares: the consoles, the typer factory and the bad-input rule.

Bad input (a SiftBenchError, or a pydantic ValidationError from a typed config) becomes one red line on
stderr and exit code 2, before anything is written; exit code 1 is kept for "it ran, and some trial
failed" (`run`, `trial`) or "it compared, and found a regression" (`compare`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

BAD_INPUT = 2

console = Console()
err_console = Console(stderr=True)


def make_typer(help: str) -> typer.Typer:
    # Click's plain help layout: at 80 columns it wraps the help text and never cuts an option name,
    # which rich's help panels do (`--max-train-sampl…`).
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False, rich_markup_mode=None)


def error_line(e: Exception) -> str:
    """One line for a SiftBenchError or a pydantic ValidationError (`field: message; ...`)."""
    from pydantic import ValidationError

    from sift_bench.errors import validation_line

    return validation_line(e) if isinstance(e, ValidationError) else str(e)


def fail(message: str, exit_code: int = BAD_INPUT) -> typer.Exit:
    """Print `error: message` in red on stderr; return the Exit to raise."""
    sys.stdout.flush()  # what the command printed so far comes first, also when stdout is a pipe
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)  # '[x]' is text
    return typer.Exit(exit_code)


@contextlib.contextmanager
def user_errors(exit_code: int = BAD_INPUT) -> Iterator[None]:
    """Turn the user's mistake (SiftBenchError, ValidationError) into a red one-line message and an exit code."""
    from pydantic import ValidationError

    from sift_bench.errors import SiftBenchError

    try:
        yield
    except (SiftBenchError, ValidationError) as e:
        raise fail(error_line(e), exit_code) from None


def print_all(items: list[Any]) -> None:
    for item in items:
        console.print(item)
