"""TensorBoard: `<dir>/<suite>/<trial_id>/`, one event file per trial, rewritten whole on each export.

Scalars are TensorBoard's usual float32 ones: they read back as the Parquet values rounded to float32. (A
float64 tensor would keep every digit, but TensorBoard 2.21's default fast loader shows none of those.)
The params and the trial's tags go to the HParams dashboard, the tags and any error also as text.
A trial's folder is written next to the old one and swapped in, so TensorBoard never reads half a trial.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from sift_bench.trackers.records import TrialRecord, param_text

DEFAULT_DIR = "runs"


class TensorBoardTracker:
    def __init__(self, where: str | None, project: str | None) -> None:
        self.root = Path(where or DEFAULT_DIR)
        self.project = project

    def log(self, records: Sequence[TrialRecord]) -> None:
        for r in records:
            self._write(self.root / (self.project or r.suite) / r.trial_id, r)

    def _write(self, folder: Path, r: TrialRecord) -> None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{r.trial_id}.", suffix=".tmp", dir=folder.parent))
        try:
            _events(tmp, r)
            _swap(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _events(folder: Path, r: TrialRecord) -> None:
    wall = (r.finished_ms or 0) / 1000
    writer = SummaryWriter(log_dir=str(folder))
    try:
        for epoch, metrics in r.epochs.items():
            for name, value in metrics.items():
                writer.add_scalar(name, value, epoch, walltime=wall)
        final = r.final_metrics()
        for name, value in final.items():
            writer.add_scalar(name, value, r.final_epoch, walltime=wall)
        # HParams takes bools, numbers and strings: null and lists become text.
        hp = {k: v if isinstance(v, bool | int | float | str) else param_text(v) for k, v in r.params.items()}
        hp |= {"status": r.status, "trial_id": r.trial_id}
        for summary in hparams(hp, final):
            writer.file_writer.add_summary(summary, walltime=wall)
        writer.add_text("tags", _markdown(r.tags), walltime=wall)
        if r.error:
            writer.add_text("error", f"```\n{r.error}\n```", walltime=wall)
    finally:
        writer.close()


def _markdown(tags: dict[str, str]) -> str:
    """The tags (the error aside: it has its own text) as a Markdown table, which TensorBoard renders."""
    rows = "".join(f"| {k} | {v} |\n" for k, v in tags.items() if k != "error")
    return f"| tag | value |\n|---|---|\n{rows}"


def _swap(new: Path, folder: Path) -> None:
    """Put `new` at `folder`: rename the old folder aside, rename the new one in, delete the old one."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
        folder.replace(old / folder.name)
    new.replace(folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
