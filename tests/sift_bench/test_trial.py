"""`run_trial` end to end on a tiny BERT checkpoint with a character-level tokenizer (seconds on CPU)."""

from __future__ import annotations

import inspect
import json
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_bert
from typer.testing import CliRunner

from sift_bench.cli import app
from sift_bench.spec import TrainSettings, TrialSpec
from sift_bench.trial import run_trial


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    """tiny_bert saved with a WordPiece vocabulary of single characters, so any text tokenizes."""
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    chars = string.ascii_lowercase + string.digits + ".,'\"-"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    assert len(vocab) <= 128  # tiny_bert's vocab_size
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    tiny_bert().save_pretrained(folder)
    return str(folder)


def spec(checkpoint: str, glue_dir: Path, method: str = "sift", **train) -> TrialSpec:
    settings = {"epochs": 1, "batch_size": 8, "max_train_samples": 32, "max_eval_samples": 24,
                "max_seq_len": 48, "learning_rate": 1e-3, "eval_batch_size": 16} | train  # fmt: skip
    budget = None if method in ("full", "classifier_only") else "1%"
    return TrialSpec(model=checkpoint, task="mrpc", method=method, budget=budget, seed=3,
                     train=TrainSettings(**settings), data_dir=str(glue_dir))  # fmt: skip


def test_trial_is_deterministic_on_cpu(tiny_checkpoint: str, glue_dir: Path):
    a = run_trial(spec(tiny_checkpoint, glue_dir, epochs=2))
    b = run_trial(spec(tiny_checkpoint, glue_dir, epochs=2))
    assert a.status == "ok", a.error
    assert a.epochs == b.epochs and a.best == b.best
    assert a.epochs[0]["train_loss"] > 0 and a.trial_id == b.trial_id


@pytest.mark.parametrize("method", ["full", "classifier_only", "lora", "adapter", "sift", "random"])
def test_every_method_runs_and_records_its_counts(tiny_checkpoint: str, glue_dir: Path, method: str):
    r = run_trial(spec(tiny_checkpoint, glue_dir, method))
    assert r.status == "ok", r.error
    assert r.head_params == 66 and r.total_params > 0 and r.primary_metric == "accuracy"
    assert set(r.best) >= {"f1", "accuracy", "eval_loss", "train_loss"}
    assert r.tokens_per_second > 0 and r.peak_memory_bytes > 0 and r.device == "cpu"
    if method in ("full", "classifier_only"):
        assert r.knob is None and r.trainable_params == (r.total_params - 66 if method == "full" else 0)
    else:
        target = round(0.01 * (r.total_params - 66))
        assert r.knob is not None and r.knob_value is not None and r.trainable_params > 0
        assert method in ("lora", "adapter") or abs(r.trainable_params - target) <= 0.1 * target


def test_epochs_best_epoch_accumulation_and_checkpointing(tiny_checkpoint: str, glue_dir: Path):
    r = run_trial(spec(tiny_checkpoint, glue_dir, "full", epochs=3, grad_accum=2, gradient_checkpointing=True))
    assert r.status == "ok", r.error
    assert [e["epoch"] for e in r.epochs] == [1.0, 2.0, 3.0]
    best = max(r.epochs, key=lambda e: e["accuracy"])
    assert r.best["accuracy"] == best["accuracy"]
    assert r.epochs[r.best_epoch - 1] == {"epoch": float(r.best_epoch), **r.best}


def test_max_steps_stops_early(tiny_checkpoint: str, glue_dir: Path):
    r = run_trial(spec(tiny_checkpoint, glue_dir, "lora", epochs=3, max_steps=2))
    assert r.status == "ok", r.error
    assert len(r.epochs) == 1


def test_failures_come_back_as_data(tiny_checkpoint: str, glue_dir: Path, monkeypatch):
    missing = run_trial(spec("./nope/x", glue_dir))
    assert missing.status == "failed" and "Cannot load model './nope/x'" in missing.error

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(torch.optim, "AdamW", oom)
    r = run_trial(spec(tiny_checkpoint, glue_dir))
    assert r.status == "failed" and r.error.startswith("OutOfMemoryError: CUDA out of memory")
    assert r.trainable_params > 0  # what was known before the failure is kept


def test_cli_trial_writes_json_and_rejects_unknown_method(tiny_checkpoint: str, glue_dir: Path, tmp_path: Path):
    out = tmp_path / "r.json"
    args = ["trial", "--model", tiny_checkpoint, "--task", "rte", "--method", "lora", "--budget", "1%",
            "-o", "dropout=0.0", "--epochs", "1", "--max-train-samples", "16", "--max-eval-samples", "16",
            "--max-seq-len", "32", "--data-dir", str(glue_dir), "--out", str(out)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    saved = json.loads(out.read_text())
    assert saved["status"] == "ok" and saved["spec"]["method_options"] == {"dropout": 0.0}
    assert "accuracy" in res.output

    bad = CliRunner().invoke(app, ["trial", "--method", "sfit", "--model", tiny_checkpoint])
    assert bad.exit_code == 2 and "Did you mean 'sift'" in bad.output


def test_peak_memory_is_per_trial_not_per_process(tiny_checkpoint: str, glue_dir: Path):
    # Under --serial and Ray, trials share a process: an earlier 1 GiB peak must not leak into this one.
    def rss() -> int:
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) * 1024

    before = rss()
    big = torch.ones(2**28)  # 1 GiB, touched
    assert rss() > before + 2**29
    del big
    r = run_trial(spec(tiny_checkpoint, glue_dir, "classifier_only"))
    assert r.status == "ok", r.error
    assert 0 < r.peak_memory_bytes < before + 2**29  # a tiny trial adds far less than 512 MiB
    assert "epoch" not in r.best and r.best_epoch == 1


# ---- per-example predictions, held-out selection, and the weights the evaluators score ------------------


def test_predictions_are_the_best_epochs_and_give_its_metrics(tiny_checkpoint: str, glue_dir: Path):
    from sift_bench.evaluators.glue import glue_metrics

    r = run_trial(spec(tiny_checkpoint, glue_dir, "full", epochs=2))
    assert r.status == "ok", r.error
    assert [p.example for p in r.predictions] == list(range(24)) and {p.split for p in r.predictions} == {"dev"}
    preds = [int(p.prediction) for p in r.predictions]
    labels = [int(p.label) for p in r.predictions]
    scores = glue_metrics("mrpc", np.array(preds), np.array(labels))
    assert scores["accuracy"] == pytest.approx(r.best["accuracy"]) and scores["f1"] == pytest.approx(r.best["f1"])


def test_scoring_shortest_first_changes_no_score_and_maps_predictions_back(
    tiny_checkpoint: str, glue_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    from sift_bench import trial
    from sift_bench.tasks import TASKS

    s = spec(tiny_checkpoint, glue_dir, "sift", epochs=1, heldout_fraction=0.25)
    rows = TASKS.get("mrpc").load(str(glue_dir), "dev", 24)
    sorted_run = run_trial(s)
    monkeypatch.setattr(trial, "EVAL_BY_LENGTH", False)
    file_run = run_trial(s)
    assert sorted_run.status == file_run.status == "ok", (sorted_run.error, file_run.error)
    assert [p.label for p in sorted_run.predictions] == [str(r["label"]) for r in rows]  # each back on its row
    assert [p.prediction for p in sorted_run.predictions] == [p.prediction for p in file_run.predictions]
    assert sorted_run.best == pytest.approx(file_run.best, abs=1e-6)


def test_how_often_dev_is_scored_changes_no_training(
    tiny_checkpoint: str, glue_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """Scoring dev only on new-best epochs (held-out selection) must leave the trial as it was: an eval pass
    must not draw from the generator dropout uses."""
    import shutil

    from sift_bench import trial

    dropout = tmp_path / "tiny_bert_dropout"  # dropout draws from the global generator: the one at stake
    shutil.copytree(tiny_checkpoint, dropout)
    model = tiny_bert()
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.1
    model.save_pretrained(dropout)
    s = spec(str(dropout), glue_dir, "full", epochs=3, heldout_fraction=0.25)
    sparse = run_trial(s)
    monkeypatch.setattr(trial, "DEV_EVERY_EPOCH", True)
    every = run_trial(s)
    assert sparse.status == every.status == "ok", (sparse.error, every.error)
    assert sum("accuracy" in e for e in every.epochs) == 3
    assert [e["heldout_eval_loss"] for e in sparse.epochs] == [e["heldout_eval_loss"] for e in every.epochs]
    assert sparse.best == every.best and sparse.predictions == every.predictions


def test_heldout_split_is_disjoint_fixed_and_independent_of_the_seed():
    from sift_bench.trial_setup import split_heldout

    rows = [{"text_a": str(i), "text_b": None, "label": i % 2} for i in range(50)]
    train, held = split_heldout(rows, 0.2)
    assert len(held) == 10 and len(train) == 40
    assert not {r["text_a"] for r in train} & {r["text_a"] for r in held}
    assert sorted([*train, *held], key=lambda r: int(r["text_a"])) == rows
    assert train == sorted(train, key=lambda r: int(r["text_a"]))  # file order kept
    torch.manual_seed(123)  # the trial's seed must not move the split
    assert split_heldout(rows, 0.2) == (train, held)
    assert split_heldout(rows, 0.0) == (rows, [])
    with pytest.raises(Exception, match="heldout_fraction"):
        split_heldout(rows[:1], 0.5)


def test_heldout_selection_picks_the_epoch_on_the_heldout_slice(tiny_checkpoint: str, glue_dir: Path, monkeypatch):
    from sift_bench.tasks.glue import GlueTask

    real = GlueTask.evaluate
    scripted = {"dev": iter([0.9, 0.1, 0.2]), "heldout": iter([0.3, 0.8, 0.5])}

    def evaluate(self, forward, loaders, predictions=None):
        # The held-out call is the one without a predictions list; script both so dev and heldout disagree.
        metrics = real(self, forward, loaders, predictions)
        metrics["accuracy"] = next(scripted["dev" if predictions is not None else "heldout"])
        return metrics

    monkeypatch.setattr(GlueTask, "evaluate", evaluate)
    r = run_trial(spec(tiny_checkpoint, glue_dir, "lora", epochs=3, heldout_fraction=0.25))
    assert r.status == "ok", r.error
    assert r.best_epoch == 2  # held-out best (0.8), although dev's best is epoch 1 (0.9)
    assert r.best["accuracy"] == 0.1 and r.best["heldout_accuracy"] == 0.8
    assert [e["heldout_accuracy"] for e in r.epochs] == [0.3, 0.8, 0.5]


def test_evaluators_score_the_best_epochs_weights(tiny_checkpoint: str, glue_dir: Path, monkeypatch):
    from sift_bench.evaluators.base import EVALUATORS, Evaluator, EvaluatorOptions
    from sift_bench.tasks.glue import GlueTask

    def fingerprint(model: torch.nn.Module) -> float:
        return float(sum(p.detach().double().sum() for p in model.parameters()))

    seen: list[float] = []  # the weights' fingerprint at each epoch's evaluation
    real = GlueTask.evaluate

    def evaluate(self, forward, loaders, predictions=None):
        metrics = real(self, forward, loaders, predictions)
        seen.append(fingerprint(inspect.unwrap(forward).__defaults__[0]))  # its default argument is the model
        metrics["accuracy"] = [0.2, 0.9, 0.4][len(seen) - 1]  # epoch 2 is the best
        return metrics

    class Probe(Evaluator):
        name = "probe"
        options = EvaluatorOptions

        def evaluate(self, model, tokenizer, opts) -> dict[str, float]:
            return {"probe": fingerprint(model)}

    monkeypatch.setattr(GlueTask, "evaluate", evaluate)
    monkeypatch.setitem(EVALUATORS._items, "probe", Probe())
    s = spec(tiny_checkpoint, glue_dir, "full", epochs=3).model_copy(update={"evaluators": {"probe": {}}})
    r = run_trial(s)
    assert r.status == "ok", r.error
    assert r.best_epoch == 2 and r.scored_epoch == 2
    assert r.best["probe"] == pytest.approx(seen[1]) and seen[1] != pytest.approx(seen[2])
    assert "probe" in r.epochs[1] and "probe" not in r.epochs[2]
