"""Weights & Biases: one run per trial, grouped by suite, with the trial id as the run id.

The run id is the trial id, and runs resume (`resume="allow"`), so exporting again updates the same W&B
run. W&B's history is append-only and its steps only grow: epochs the run already holds are not logged
again, and the final metrics go to the run summary (`final/<name>`, with `final_epoch`), not the history.
Where the runs go follows W&B's own settings: `wandb login` or `WANDB_MODE=offline`, `WANDB_ENTITY`; the
tracker's location is the folder W&B writes its `wandb/` folder into.
"""

from __future__ import annotations

from collections.abc import Sequence

import wandb

from sift_bench.trackers.records import TrialRecord

MAX_TAG = 64  # W&B's limit on one tag


class WandbTracker:
    def __init__(self, where: str | None, project: str | None) -> None:
        self.dir = where
        self.project = project
        # Quiet, and hands off the driver's own output: W&B would otherwise wrap stdout and sample the machine.
        self.settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False)

    def log(self, records: Sequence[TrialRecord]) -> None:
        for r in records:
            self._trial(r)

    def _trial(self, r: TrialRecord) -> None:
        run = wandb.init(
            project=self.project or r.suite,
            id=r.trial_id,
            name=r.name,
            group=r.suite,
            job_type="trial",
            config=r.params,
            tags=[f"{k}={v}"[:MAX_TAG] for k, v in r.tags.items() if k != "error"],
            notes=r.error,
            dir=self.dir,
            resume="allow",
            allow_val_change=True,
            reinit="create_new",
            settings=self.settings,
        )
        try:
            for epoch, metrics in r.epochs.items():
                if epoch >= run.starting_step:  # a resumed run already holds its earlier steps
                    run.log(metrics, step=epoch)
            run.summary.update(r.final_metrics() | {"final_epoch": r.final_epoch, "status": r.status})
            if r.error:
                run.summary["error"] = r.error
        finally:
            run.finish(exit_code=0 if r.ok else 1)
