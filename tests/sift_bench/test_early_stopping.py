"""Early stopping (`train.early_stopping: {patience: P}`): a trial stops once its selection score (held-out
under `selection: heldout`, else dev) has not improved for P epochs, keeps its best epoch, records
`stopped_epoch`, and stops at the same epoch every time, under `--serial` and under Ray alike. The run
summary counts the trial-epochs it saved. Scripted scores make the rule exact; a tiny STS-B model (whose
Pearson moves every epoch) checks it on real training."""

from __future__ import annotations

import inspect
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import GLUE_SLICES, tiny_bert
from rich.console import Console
from test_orchestrate import ray_tmp, tiny_model_dir  # noqa: F401  (ray_tmp: a private Ray temp dir fixture)

from sift_bench.driver import RunSummary, run_suite
from sift_bench.expand import expand
from sift_bench.results import ResultStore, read_trials
from sift_bench.spec import EarlyStopping, TrainSettings, TrialResult, TrialSpec
from sift_bench.suite import SuiteError, load_suite, validate_suite
from sift_bench.trial import run_trial

# GlueTask.evaluate's arguments, for the scripted stand-ins below.
Forward = Callable[..., Any]
Loaders = dict[str, Any]
Preds = list[Any] | None


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Hidden-32 models run faster on one thread than on two, ten times so on a busy shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mrpc_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_model_dir(tmp_path_factory.mktemp("es_mrpc")))


@pytest.fixture(scope="module")
def stsb_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny BERT with a one-output regression head, for STS-B."""
    folder = tiny_model_dir(tmp_path_factory.mktemp("es_stsb"))
    tiny_bert(num_labels=1).save_pretrained(folder)
    return str(folder)


def spec(
    model: str, patience: int | None = 2, task: str = "mrpc", method: str = "classifier_only", **train: Any
) -> TrialSpec:
    settings = {"epochs": 5, "batch_size": 8, "max_seq_len": 32, "max_train_samples": 16, "max_eval_samples": 16,
                "learning_rate": 1e-3, "precision": "fp32"} | train  # fmt: skip
    stopping = None if patience is None else EarlyStopping(patience=patience)
    return TrialSpec(model=model, task=task, method=method, seed=0, data_dir=str(GLUE_SLICES),
                     train=TrainSettings(**settings, early_stopping=stopping))  # fmt: skip


def script(monkeypatch: pytest.MonkeyPatch, dev: list[float], heldout: list[float] | None = None) -> None:
    """MRPC's accuracy (its primary metric) is `dev` epoch by epoch, and on the held-out slice `heldout`."""
    from sift_bench.tasks.glue import GlueTask

    real = GlueTask.evaluate
    scores = {"dev": iter(dev), "heldout": iter(heldout or [])}

    def evaluate(self: GlueTask, forward: Forward, loaders: Loaders, predictions: Preds = None) -> dict[str, float]:
        metrics = real(self, forward, loaders, predictions)
        # The held-out call is the one without a predictions list.
        metrics["accuracy"] = next(scores["dev" if predictions is not None else "heldout"])
        return metrics

    monkeypatch.setattr(GlueTask, "evaluate", evaluate)


def ok(result: TrialResult) -> TrialResult:
    assert result.status == "ok", result.error
    return result


# ---------------------------------------------------------------------------------------------------------
# The rule, on scripted scores.


@pytest.mark.parametrize(
    ("patience", "best_epoch", "stopped_epoch"),
    [(1, 2, 3), (2, 2, 4), (3, 5, None)],  # scores 0.5 0.6 0.55 0.58 0.7: the best is 2 until epoch 5
)
def test_stops_after_patience_epochs_without_improvement_and_reports_the_best(
    mrpc_model: str, monkeypatch: pytest.MonkeyPatch, patience: int, best_epoch: int, stopped_epoch: int | None
) -> None:
    script(monkeypatch, [0.5, 0.6, 0.55, 0.58, 0.7])
    r = ok(run_trial(spec(mrpc_model, patience), progress=False))
    assert (r.best_epoch, r.stopped_epoch) == (best_epoch, stopped_epoch)
    assert len(r.epochs) == (stopped_epoch or 5)
    assert r.epochs[best_epoch - 1] == {"epoch": float(best_epoch), **r.best}  # the best epoch's metrics
    assert r.best["accuracy"] == [0.5, 0.6, 0.55, 0.58, 0.7][best_epoch - 1]


def test_a_tie_is_no_improvement_and_without_early_stopping_every_epoch_runs(
    mrpc_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    script(monkeypatch, [0.5] * 10)
    r = ok(run_trial(spec(mrpc_model, 2), progress=False))
    assert (r.best_epoch, r.stopped_epoch, len(r.epochs)) == (1, 3, 3)
    r = ok(run_trial(spec(mrpc_model, None), progress=False))
    assert (r.best_epoch, r.stopped_epoch, len(r.epochs)) == (1, None, 5)


def test_a_trial_that_runs_out_of_epochs_or_steps_was_not_stopped(
    mrpc_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    script(monkeypatch, [0.5] * 10)
    last = ok(run_trial(spec(mrpc_model, 2, epochs=3), progress=False))  # stalls 2 epochs, on the last one
    assert (last.best_epoch, last.stopped_epoch, len(last.epochs)) == (1, None, 3)
    # 2 steps an epoch: max_steps 3 ends training in epoch 2, which stalls once; that is not early stopping.
    steps = ok(run_trial(spec(mrpc_model, 1, epochs=5, max_steps=3), progress=False))
    assert (steps.best_epoch, steps.stopped_epoch, len(steps.epochs)) == (1, None, 2)


@pytest.mark.parametrize(
    ("dev", "heldout", "best_epoch", "stopped_epoch"),
    [
        # Dev keeps improving while the held-out score stalls after epoch 2: the held-out score stops the trial.
        ([0.1, 0.2, 0.3, 0.4, 0.5], [0.6, 0.7, 0.7, 0.65, 0.9], 2, 4),
        # Dev stalls while the held-out score improves: the trial runs every epoch.
        ([0.9, 0.1, 0.1, 0.1, 0.1], [0.1, 0.2, 0.3, 0.4, 0.5], 5, None),
    ],
)
def test_heldout_selection_drives_early_stopping(
    mrpc_model: str,
    monkeypatch: pytest.MonkeyPatch,
    dev: list[float],
    heldout: list[float],
    best_epoch: int,
    stopped_epoch: int | None,
) -> None:
    script(monkeypatch, dev, heldout)
    r = ok(run_trial(spec(mrpc_model, 2, heldout_fraction=0.25), progress=False))
    assert (r.best_epoch, r.stopped_epoch, len(r.epochs)) == (best_epoch, stopped_epoch, stopped_epoch or 5)
    assert r.best["heldout_accuracy"] == heldout[best_epoch - 1]
    # Dev is scored only on the epochs that became the best on the held-out slice (the scripted dev values
    # are consumed in that order), and every epoch has its held-out score.
    new_best = [h > max(heldout[:i], default=-1.0) for i, h in enumerate(heldout[: len(r.epochs)])]
    assert ["accuracy" in e for e in r.epochs] == new_best
    assert all("heldout_accuracy" in e for e in r.epochs)
    assert r.best["accuracy"] == dev[sum(new_best) - 1]


def test_evaluators_score_the_best_epochs_weights_after_a_stop(
    mrpc_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sift_bench.evaluators.base import EVALUATORS, Evaluator, EvaluatorOptions
    from sift_bench.tasks.glue import GlueTask

    def fingerprint(model: torch.nn.Module) -> float:
        return float(sum(p.detach().double().sum() for p in model.parameters()))

    seen: list[float] = []  # the weights' fingerprint at each epoch's evaluation
    real = GlueTask.evaluate

    def evaluate(self: GlueTask, forward: Forward, loaders: Loaders, predictions: Preds = None) -> dict[str, float]:
        metrics = real(self, forward, loaders, predictions)
        seen.append(fingerprint(inspect.unwrap(forward).__defaults__[0]))  # its default argument is the model
        metrics["accuracy"] = [0.2, 0.9, 0.4, 0.3, 0.95][len(seen) - 1]
        return metrics

    class Probe(Evaluator):
        name = "probe"
        options = EvaluatorOptions

        def evaluate(self, model: torch.nn.Module, tokenizer: Any, opts: Any) -> dict[str, float]:
            return {"probe": fingerprint(model)}

    monkeypatch.setattr(GlueTask, "evaluate", evaluate)
    monkeypatch.setitem(EVALUATORS._items, "probe", Probe())
    s = spec(mrpc_model, 2, method="full").model_copy(update={"evaluators": {"probe": {}}})
    r = ok(run_trial(s, progress=False))
    assert (r.best_epoch, r.stopped_epoch, r.scored_epoch, len(seen)) == (2, 4, 2, 4)
    assert r.best["probe"] == pytest.approx(seen[1]) and seen[1] != pytest.approx(seen[3])


# ---------------------------------------------------------------------------------------------------------
# Real training: the stop is a function of the spec.


def test_the_same_spec_stops_at_the_same_epoch(stsb_model: str) -> None:
    s = spec(stsb_model, 2, task="stsb", method="full", epochs=8)
    a, b = ok(run_trial(s, progress=False)), ok(run_trial(s, progress=False))
    assert a.stopped_epoch is not None and a.stopped_epoch - a.best_epoch == 2 and len(a.epochs) == a.stopped_epoch
    assert (a.best_epoch, a.stopped_epoch, a.epochs, a.best) == (b.best_epoch, b.stopped_epoch, b.epochs, b.best)


# ---------------------------------------------------------------------------------------------------------
# The suite, the driver's summary and the rows.

SUITE: dict[str, Any] = {
    "name": "es",
    "schema_version": 1,
    "models": ["m"],
    "tasks": ["mrpc"],
    "methods": {"full": {}, "classifier_only": {}},
    "seeds": [0, 1],
    "train": {"epochs": 5, "early_stopping": {"patience": 2}},
}


def fake_trial(spec: TrialSpec) -> TrialResult:
    """Seed 0 stops at epoch 3 (2 of 5 epochs saved); seed 1 runs all 5."""
    stopped = 3 if spec.seed == 0 else None
    return TrialResult(
        trial_id=spec.trial_id, spec=spec, status="ok", primary_metric="accuracy", best={"accuracy": 0.5},
        epochs=[{"epoch": float(e + 1), "accuracy": 0.5} for e in range(stopped or 5)], best_epoch=1,
        stopped_epoch=stopped,
    )  # fmt: skip


def run_captured(data: dict[str, Any], out: Path) -> tuple[RunSummary, str]:
    text = io.StringIO()
    summary = run_suite(validate_suite(data, "es.yaml"), out, serial=True, run_trial=fake_trial,
                        console=Console(file=text, width=200))  # fmt: skip
    return summary, text.getvalue()


def test_the_run_summary_counts_the_trial_epochs_saved_and_rows_record_the_stop(tmp_path: Path) -> None:
    summary, text = run_captured(SUITE, tmp_path / "es")
    assert (summary.ran, summary.trial_epochs, summary.epochs_saved) == (4, 20, 4)
    assert "early stopping saved 4 of 20 trial-epochs" in text
    assert "stopped at 3" in text  # the per-trial line
    run = ResultStore(tmp_path / "es").read_manifest()["runs"][-1]
    assert (run["trial_epochs"], run["epochs_saved"]) == (20, 4)
    rows = read_trials(tmp_path / "es")
    assert sorted((r["seed"], r["stopped_epoch"]) for r in rows) == [(0, 3), (0, 3), (1, None), (1, None)]
    assert all(json.loads(r["train.early_stopping"]) == {"patience": 2} for r in rows)

    plain = {**SUITE, "train": {"epochs": 5}}  # no early stopping: no line about it
    summary, text = run_captured(plain, tmp_path / "plain")
    assert "early stopping" not in text
    assert all(r["train.early_stopping"] is None for r in read_trials(tmp_path / "plain"))


def test_suite_validates_early_stopping_and_names_a_bad_patience() -> None:
    specs = {s.trial_id: s for s in expand(validate_suite(SUITE))}
    assert [s.train.early_stopping for s in specs.values()] == [EarlyStopping(patience=2)] * 4
    plain = expand(validate_suite({**SUITE, "train": {"epochs": 5}}))
    assert not set(specs) & {s.trial_id for s in plain}  # early stopping is part of the trial id

    bad = {**SUITE, "train": {"early_stopping": {"patience": 0}},
           "methods": {"full": {"train": {"early_stopping": {"patince": 2}}}}}  # fmt: skip
    with pytest.raises(SuiteError) as err:
        validate_suite(bad, "bad.yaml")
    paths = dict(err.value.errors)
    assert "greater than or equal to 1 (got 0)" in paths["train.early_stopping.patience"]
    assert "Did you mean 'patience'" in paths["methods.full.train.early_stopping.patince"]
    assert str(err.value).startswith("bad.yaml: ")


# ---------------------------------------------------------------------------------------------------------
# Serial and Ray stop at the same epoch.


@pytest.mark.slow
def test_serial_and_ray_stop_at_the_same_epoch(tmp_path: Path, stsb_model: str, ray_tmp: Path) -> None:  # noqa: F811
    data = {
        "name": "es_ray", "schema_version": 1, "models": [stsb_model], "tasks": ["stsb"], "data_dir": str(GLUE_SLICES),
        "methods": {"full": {}, "classifier_only": {}}, "seeds": [0, 1],
        "train": {"epochs": 8, "batch_size": 8, "max_seq_len": 32, "max_train_samples": 32, "max_eval_samples": 32,
                  "learning_rate": 1e-3, "precision": "fp32", "early_stopping": {"patience": 2}},
        "resources": {"cpu": 1, "gpu": 0},
    }  # fmt: skip
    path = tmp_path / "es_ray.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    suite = load_suite(path)
    quiet = Console(file=open(os.devnull, "w"), width=120)  # noqa: SIM115
    serial = run_suite(suite, tmp_path / "serial", serial=True, max_failures=0, console=quiet)
    ray = run_suite(suite, tmp_path / "ray", max_failures=0, console=quiet)
    assert serial.ok == ray.ok == 4
    assert serial.epochs_saved == ray.epochs_saved > 0

    def stops(folder: Path) -> dict[str, tuple[int, int | None, float]]:
        return {r["trial_id"]: (r["best_epoch"], r["stopped_epoch"], r["metric.pearson"]) for r in read_trials(folder)}

    here, there = stops(tmp_path / "serial"), stops(tmp_path / "ray")
    assert {t: v[:2] for t, v in here.items()} == {t: v[:2] for t, v in there.items()}
    assert all(v[2] == pytest.approx(there[t][2], abs=1e-6) for t, v in here.items())
    assert any(stopped is not None for _, stopped, _ in there.values())
