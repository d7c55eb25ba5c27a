"""Shared fixtures: the GLUE fixture slices in tests/data, the full GLUE copy (opt-in), and tiny random-init models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# First 300 rows of each GLUE file the tests use, committed with the tests (see tests/data/glue/README.md).
GLUE_SLICES = REPO / "tests" / "data" / "glue"
# Tests over the full GLUE files run only where this names a folder (CI: ../shared/data/glue); a clone has none.
FULL_GLUE_ENV = "SIFT_BENCH_TEST_GLUE"

# Two cores: keep torch from oversubscribing when pytest and Ray workers share the machine.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def glue_dir() -> Path:
    """The committed GLUE slices, in the classic `<TASK>/{train,dev}.tsv` layout."""
    return GLUE_SLICES


@pytest.fixture
def full_glue_dir() -> Path:
    """The full GLUE folder named by $SIFT_BENCH_TEST_GLUE; the test is skipped when it is unset."""
    value = os.environ.get(FULL_GLUE_ENV)
    if not value:
        pytest.skip(f"set {FULL_GLUE_ENV} to a full GLUE folder")
    folder = Path(value).expanduser()
    if not folder.is_dir():
        pytest.fail(f"{FULL_GLUE_ENV}={value} is not a folder; point it at a full GLUE copy (<TASK>/train.tsv ...)")
    return folder


def tiny_bert(num_labels: int = 2, seed: int = 0):
    """A 2-layer BERT classifier (hidden 32) with random weights: trains in milliseconds on CPU."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, num_labels=num_labels,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return BertForSequenceClassification(cfg)


def tiny_llama(seed: int = 0):
    """A 2-layer Llama causal LM (hidden 32) with random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(cfg)


@pytest.fixture
def bert_factory():
    return tiny_bert


@pytest.fixture
def llama_factory():
    return tiny_llama


def tiny_char_tokenizer(chat_template: bool = True):
    """An offline character-level tokenizer (100 ids: 4 specials, newline, tab, printable ASCII) that fits
    `tiny_llama`'s 128-word vocabulary; optional ChatML-style chat template. Unknown characters -> <unk>."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    chars = ["\n", "\t", *(chr(c) for c in range(32, 127))]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    if chat_template:
        fast.chat_template = (
            "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
            "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
        )
    return fast
