"""The live view of a suite run: one bar over the trials to run, ok / running / failed counts, an ETA, and
one line per finished trial. The driver (`run_suite`) is the only caller."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sift_bench.spec import TrialResult, TrialSpec


def describe(s: TrialSpec) -> str:
    """One trial in a few words: model, task, method label, budget, grid point, seed."""
    budget = f" {s.budget}" if s.budget is not None else ""
    grid = " " + ",".join(f"{k}={v}" for k, v in s.grid.items()) if s.grid else ""
    return f"{s.model} {s.task} {s.label}{budget}{grid} seed={s.seed}"


def score(result: TrialResult) -> str:
    """The primary metric of an ok trial (and its best epoch when early stopping ended it), or the last line
    of a failed trial's error."""
    if result.status != "ok":
        first = (result.error or "failed").strip().splitlines()
        return f"[red]failed[/red]: {first[-1][:300] if first else ''}"
    name = result.primary_metric
    value = result.best.get(name) if name else None
    stopped = (
        f" (best epoch {result.best_epoch}, stopped at {result.stopped_epoch})"
        if result.stopped_epoch is not None
        else ""
    )
    return (f"{name}={value:.4f}" if value is not None else "ok") + stopped


class ProgressView:
    """Live rich view: a bar over the trials to run, with ok / running / failed counts and an ETA."""

    def __init__(self, total: int, console: Console | None) -> None:
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "[green]{task.fields[ok]} ok[/green] [cyan]{task.fields[running]} running[/cyan] "
                "[red]{task.fields[failed]} failed[/red]"
            ),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task("trials", total=total, ok=0, running=0, failed=0)
        self.running: set[str] = set()
        self.ok = 0
        self.failed = 0

    def __enter__(self) -> ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _update(self, advance: int = 0) -> None:
        self.progress.update(self.task, advance=advance, ok=self.ok, running=len(self.running), failed=self.failed)

    def note(self, text: str) -> None:
        """A line above the bar."""
        self.progress.console.print(text)

    def start(self, trial_id: str) -> None:
        self.running.add(trial_id)
        self._update()

    def retry(self, spec: TrialSpec, result: TrialResult) -> None:
        self.note(f"[yellow]retry[/yellow] {describe(spec)}: {score(result)}")

    def finish(self, spec: TrialSpec, result: TrialResult, seconds: float) -> None:
        self.running.discard(spec.trial_id)
        if result.status == "ok":
            self.ok += 1
        else:
            self.failed += 1
        mark = "[green]✓[/green]" if result.status == "ok" else "[red]✗[/red]"
        self.note(f"{mark} {spec.trial_id} {describe(spec)}  {score(result)}  ({seconds:.1f} s)")
        self._update(advance=1)
