"""MLflow: an experiment per suite, a parent run for the suite, one nested run per trial.

A trial's run is found by its `trial_id` tag and reused. MLflow params cannot change and its metric
history only grows, so a run whose params or metrics differ from the record (the trial was rerun since)
is deleted and logged anew: there is always exactly one live run per trial, with the current values.
Tags (status, git commit) are refreshed every time.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import mlflow
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.entities import Run as MlflowRun
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE

from sift_bench.trackers.records import TrialRecord, param_text

KIND = "sift_bench.kind"  # "suite" (the parent run) or "trial"
MAX_TAG = 5000  # MLflow's limit on a tag value is 8000 characters; error texts can be longer


class MlflowTracker:
    def __init__(self, where: str | None, project: str | None) -> None:
        # MLflow retries a failed request 7 times with growing pauses: about 4 minutes against a server that
        # is down, all of it holding the driver. A few seconds say as much; the user's own settings win.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        self.client = mlflow.MlflowClient(tracking_uri=where)
        self.project = project

    def log(self, records: Sequence[TrialRecord]) -> None:
        suites: dict[str, list[TrialRecord]] = {}
        for r in records:
            suites.setdefault(r.suite, []).append(r)
        for suite, trials in suites.items():
            experiment = self._experiment(self.project or suite)
            parent = self._parent(experiment, suite, trials)
            for r in trials:
                self._trial(experiment, parent, r)
            end = max((r.finished_ms for r in trials if r.finished_ms), default=None)
            self.client.set_terminated(parent, "FINISHED", end_time=end)

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        # The UI opens a training experiment on its runs and charts (else on the GenAI traces view).
        return self.client.create_experiment(name, tags={"mlflow.experimentKind": "custom_model_development"})

    def _find(self, experiment: str, where: str) -> list[MlflowRun]:
        return list(self.client.search_runs([experiment], where, ViewType.ACTIVE_ONLY, max_results=100))

    def _parent(self, experiment: str, suite: str, trials: list[TrialRecord]) -> str:
        tags = {KIND: "suite", "suite": suite, "git_commit": trials[0].tags["git_commit"]}
        found = self._find(experiment, f"tags.`{KIND}` = 'suite' and tags.suite = '{suite}'")
        if found:
            run_id = found[0].info.run_id
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            return run_id
        start = min((r.started_ms for r in trials if r.started_ms), default=None)
        return self.client.create_run(experiment, start_time=start, tags=tags, run_name=suite).info.run_id

    def _trial(self, experiment: str, parent: str, r: TrialRecord) -> None:
        params = {k: param_text(v) for k, v in r.params.items()}
        metrics = _metrics(r)
        found = self._find(experiment, f"tags.trial_id = '{r.trial_id}'")
        keep = found[0] if found and self._same(found[0], params, metrics) else None
        for stale in found:
            if stale is not keep:
                self.client.delete_run(stale.info.run_id)
        if keep is not None:
            run_id = keep.info.run_id
        else:
            run_id = self.client.create_run(experiment, start_time=r.started_ms, run_name=r.name).info.run_id
            ts = r.finished_ms or 0  # one fixed timestamp: the values, not the export time, define the run
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, v, ts, step) for k, step, v in metrics],
                params=[Param(k, v) for k, v in params.items()],
            )
        tags = {k: v[:MAX_TAG] for k, v in r.tags.items()}
        tags |= {KIND: "trial", MLFLOW_PARENT_RUN_ID: parent, MLFLOW_RUN_NAME: r.name}
        if r.error:
            tags[MLFLOW_RUN_NOTE] = r.error[:MAX_TAG]  # the run page's description shows it
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run_id, "FINISHED" if r.ok else "FAILED", end_time=r.finished_ms)

    def _same(self, run: MlflowRun, params: dict[str, str], metrics: list[tuple[str, int, float]]) -> bool:
        """Whether the run already holds exactly these params and metric histories."""
        if run.data.params != params or set(run.data.metrics) != {k for k, _, _ in metrics}:
            return False
        for key in run.data.metrics:
            have = sorted((m.step, m.value) for m in self.client.get_metric_history(run.info.run_id, key))
            want = sorted((step, v) for k, step, v in metrics if k == key)
            if len(have) != len(want):
                return False
            if any(a[0] != b[0] or not _equal(a[1], b[1]) for a, b in zip(have, want, strict=True)):
                return False
        return True


def _metrics(r: TrialRecord) -> list[tuple[str, int, float]]:
    """(key, step, value): each epoch's metrics at step = epoch, the final ones at the scored epoch."""
    out = [(k, epoch, v) for epoch, values in r.epochs.items() for k, v in values.items()]
    return out + [(k, r.final_epoch or 0, v) for k, v in r.final_metrics().items()]


def _equal(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))
