"""Forgetting: what fine-tuning cost the model's pre-trained ability (sift_bench.forgetting and the trial)."""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_bert, tiny_char_tokenizer, tiny_llama

from sift_bench import forgetting as F
from sift_bench.models import resolve_model
from sift_bench.spec import TrainSettings, TrialSpec
from sift_bench.trial import run_trial

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own cache, and a 240-pair STS-B sample (48 measured) so the MiniLM trials take seconds."""
    monkeypatch.setenv("SIFT_BENCH_CACHE", str(tmp_path / "cache"))
    lines = F.STSB_DEV.read_text(encoding="utf-8").splitlines()
    small = tmp_path / "stsb_dev_240.tsv"
    small.write_text("\n".join(lines[:241]) + "\n", encoding="utf-8")
    monkeypatch.setattr(F, "STSB_DEV", small)
    return tmp_path / "cache"


def minilm_spec(method: str, lr: float, steps: int = 24, seed: int = 0) -> TrialSpec:
    return TrialSpec(
        model="minilm-l6", task="sst2", method=method, budget="0.5%" if method == "sift" else None, seed=seed,
        train=TrainSettings(learning_rate=lr, batch_size=16, epochs=1, max_steps=steps, max_seq_len=48,
                            max_train_samples=16 * steps, max_eval_samples=32, warmup_ratio=0.0, precision="fp32"),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# The measure's arithmetic and choice.


def test_ability_and_drop_point_the_right_way() -> None:
    sts = F.MEASURES["sts_zero_shot"]
    gold = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    perfect = F.Scores(np.array([0.1, 0.2, 0.3, 0.4, 0.5]), np.ones(5), gold)
    shuffled = F.Scores(np.array([0.2, 0.1, 0.3, 0.5, 0.4]), np.ones(5), gold)
    assert F.ability(sts, perfect) == pytest.approx(100.0)
    assert F.ability(sts, shuffled) == pytest.approx(80.0)  # Spearman 0.8 on these ranks
    assert F.drop(sts, 100.0, 80.0) == pytest.approx(20.0)  # the correlation fell: it forgot 20 points
    loss = F.MEASURES["lm_loss"]
    s = F.Scores(np.array([6.0, 2.0]), np.array([3.0, 1.0]))  # 8 nats over 4 tokens
    assert F.ability(loss, s) == 2.0 and F.ability(loss, s, np.array([1])) == 2.0
    assert F.drop(loss, 2.0, 2.5) == pytest.approx(0.5)  # the loss rose: it forgot half a nat per token


def test_auto_picks_the_measure_the_model_supports(tmp_path: Path) -> None:
    minilm = resolve_model("minilm-l6").path
    assert F.sentence_pooling(minilm) == "mean"  # what its 1_Pooling/config.json declares
    assert F.choose("auto", False, minilm)[0] == F.MEASURES["sts_zero_shot"]
    assert F.choose("auto", True, None)[0] == F.MEASURES["lm_loss"]
    assert F.choose("auto", False, str(tmp_path))[0] == F.MEASURES["mlm_loss"]  # a plain encoder folder
    measure, why = F.choose("off", False, minilm)
    assert measure is None and "off" in why


def _bert_folder(root: Path, with_mlm_head: bool) -> str:
    from transformers import BertForMaskedLM, BertTokenizerFast

    root.mkdir()
    chars = string.ascii_lowercase + string.digits + ".,'\"-()"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(root / "vocab.txt")).save_pretrained(root)
    encoder = tiny_bert()
    if with_mlm_head:
        torch.manual_seed(1)
        BertForMaskedLM(encoder.config).save_pretrained(root)
    else:
        encoder.bert.save_pretrained(root)  # an encoder without any pre-trained head
    return str(root)


def test_mlm_measure_needs_a_pretrained_head_and_is_deterministic(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with_head = _bert_folder(tmp_path / "with", True)
    model = AutoModelForSequenceClassification.from_pretrained(with_head, num_labels=2)
    tok = AutoTokenizer.from_pretrained(with_head)
    probe, why = F.start("auto", with_head, False, model, tok, CPU)
    assert why is None and probe.measure.name == "mlm_loss"
    again = probe.run(model.eval())
    assert np.array_equal(again.values, probe.before.values) and probe.before.weights.sum() > 1000  # masked tokens
    assert 0 < probe.before_value < 10  # nats per token, near log(128) for a random head

    without = _bert_folder(tmp_path / "without", False)
    model = AutoModelForSequenceClassification.from_pretrained(without, num_labels=2)
    probe, why = F.start("auto", without, False, model, AutoTokenizer.from_pretrained(without), CPU)
    assert probe is None and "no pre-trained masked-LM head" in why


def test_lm_measure_on_a_causal_lm_and_the_before_value_is_cached(
    private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tok = tiny_llama(), tiny_char_tokenizer(chat_template=False)
    folder = _save_llama(private_cache.parent, model, tok)
    probe, why = F.start("auto", folder, True, model, tok, CPU)
    assert why is None and probe.measure.name == "lm_loss"
    assert probe.before.weights.sum() >= 20_000  # the sample holds at least 20k scored tokens
    assert abs(probe.before_value - np.log(128)) < 1.0  # a random 128-word LM: about log(128) nats
    assert len(list((private_cache / "forgetting").glob("*.json"))) == 1
    calls: list[int] = []
    original = F.lm_scores
    monkeypatch.setattr(F, "lm_scores", lambda *a: calls.append(1) or original(*a))
    second, _ = F.start("auto", folder, True, model, tok, CPU)
    assert calls == [] and np.array_equal(second.before.values, probe.before.values)  # read, not measured
    assert np.array_equal(probe.run(model).values, probe.before.values) and calls == [1]  # same weights


def _save_llama(root: Path, model: torch.nn.Module, tok) -> str:
    folder = root / "llama"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


# ---------------------------------------------------------------------------------------------------------
# In a trial.


def test_classifier_only_forgets_exactly_nothing() -> None:
    r = run_trial(minilm_spec("classifier_only", 1e-2, steps=8), progress=False)
    assert r.status == "ok", r.error
    assert r.forgetting_measure == "sts_zero_shot" and r.forgetting == 0.0
    assert r.forgetting_before == r.forgetting_after and r.best["forgetting"] == 0.0
    assert len(r.forgetting_items) == 48 and all(i.before == i.after for i in r.forgetting_items)  # 240 / stride 5


def test_full_fine_tuning_forgets_more_than_sift_and_the_value_is_deterministic() -> None:
    full = run_trial(minilm_spec("full", 1e-3), progress=False)
    sift = run_trial(minilm_spec("sift", 1e-3), progress=False)
    again = run_trial(minilm_spec("sift", 1e-3), progress=False)
    assert full.status == sift.status == "ok", (full.error, sift.error)
    assert full.forgetting > 0 and full.forgetting > sift.forgetting, (full.forgetting, sift.forgetting)
    assert again.forgetting == sift.forgetting and again.forgetting_items == sift.forgetting_items


def test_a_suite_can_turn_it_off_and_a_model_without_a_measure_records_why(tmp_path: Path) -> None:
    off = run_trial(minilm_spec("classifier_only", 1e-2, steps=2).model_copy(update={"forgetting": "off"}),
                    progress=False)  # fmt: skip
    assert off.status == "ok" and off.forgetting is None and off.forgetting_measure is None
    assert "off" in off.forgetting_note and "forgetting" not in off.best
    plain = _bert_folder(tmp_path / "plain", False)
    spec = TrialSpec(model=plain, task="sst2", method="full", seed=0,
                     train=TrainSettings(max_steps=2, batch_size=4, max_train_samples=8, max_eval_samples=8,
                                         max_seq_len=32, precision="fp32"))  # fmt: skip
    r = run_trial(spec, progress=False)
    assert r.status == "ok" and r.forgetting is None and "no pre-trained masked-LM head" in r.forgetting_note
