"""Forgetting: how much of its pre-trained ability a model lost in fine-tuning, measured before and after.

Fine-tuning teaches a task and can cost what the model knew (Biderman et al., 2024, "LoRA Learns Less and
Forgets Less"). Each trial measures one pre-trained ability on a fixed sample that ships with the package,
once on the loaded model (cached on disk, so once per model and machine, not once per trial) and then on the
weights of each epoch that becomes the best, so that the scored epoch's value is kept (no copy of the
weights). `forgetting` is the drop, in the measure's units: positive means it forgot.

- `sts_zero_shot`, for sentence-embedding encoders (a sentence-transformers folder such as MiniLM-L6): the
  Spearman correlation of the cosine of the model's own pooled embeddings with the gold scores of 300 STS-B
  dev pairs (every fifth of 1500), in points (x100);
- `mlm_loss`, for encoders whose checkpoint has a pre-trained masked-LM head (BERT, RoBERTa): that head's
  masked-LM loss on the fine-tuned encoder, 15% of the tokens masked with a fixed seed, in nats per token;
- `lm_loss`, for causal LMs (Llama, SmolLM2): the mean next-token cross-entropy, in nats per token.

The two losses use `data/general_text/` (700 Wikipedia sentences, ~27k tokens; no shipped training set
uses them). Per-item values are kept (`Scores`) so reports can bootstrap over the sample's items.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

DATA = Path(__file__).resolve().parent / "data"
STSB_DEV = DATA / "glue" / "STS-B" / "dev.tsv"
GENERAL_TEXT = DATA / "general_text" / "wikipedia_qnli_dev.txt"
MASK_SEED, MASK_SHARE = 1234, 0.15
MAX_LEN = 128
# Sentences per forward pass. The measure runs inside the trial, so its transient memory counts in the trial's
# peak: 128 sentences per pass raised MiniLM-L6 classifier-only's peak by 109 MiB, 32 stay below the trial's own
# dev pass. A loss keeps (B, T, vocab) logits: SmolLM2 at 16 x 128 x 49152 in fp32 is 400 MB.
EMBED_BATCH, LOSS_BATCH = 32, 16
# Every fifth STS-B dev pair: 300 pairs that span its three genres (captions, news, forums). Measuring every
# third (500 pairs) made the quickstart 15.7% slower than with forgetting off, over the 15% budget.
STS_STRIDE = 5
CACHE_VERSION = 1  # bump when a measure's definition changes: cached "before" values are then recomputed

MeasureName = Literal["sts_zero_shot", "mlm_loss", "lm_loss"]
Setting = Literal["auto", "off", "sts_zero_shot", "mlm_loss", "lm_loss"]


@dataclass(frozen=True)
class Measure:
    name: MeasureName
    units: str
    higher_is_better: bool  # of the ability itself: a correlation rises, a loss falls


MEASURES: dict[str, Measure] = {
    "sts_zero_shot": Measure("sts_zero_shot", "points", True),
    "mlm_loss": Measure("mlm_loss", "nats/token", False),
    "lm_loss": Measure("lm_loss", "nats/token", False),
}


@dataclass
class Scores:
    """Per-item values of one measure. sts: `values` cosine per pair, `gold` the gold score, `weights` 1;
    losses: `values` summed token cross-entropy per sentence, `weights` its scored tokens, `gold` None."""

    values: np.ndarray  # (n,)
    weights: np.ndarray  # (n,)
    gold: np.ndarray | None = None  # (n,)

    def to_json(self) -> dict[str, Any]:
        gold = None if self.gold is None else self.gold.tolist()
        return {"values": self.values.tolist(), "weights": self.weights.tolist(), "gold": gold}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Scores:
        gold = None if d["gold"] is None else np.asarray(d["gold"], dtype=np.float64)
        return cls(np.asarray(d["values"], dtype=np.float64), np.asarray(d["weights"], dtype=np.float64), gold)


def ability(measure: Measure, s: Scores, idx: np.ndarray | None = None) -> float:
    """The measure's value over the items `idx` (default all): Spearman x 100, or loss per token."""
    v, w = (s.values, s.weights) if idx is None else (s.values[idx], s.weights[idx])
    if measure.name == "sts_zero_shot":
        from scipy.stats import spearmanr

        gold = s.gold if idx is None else s.gold[idx]
        return 100.0 * float(spearmanr(v, gold).statistic)
    return float(v.sum() / w.sum())


def drop(measure: Measure, before: float, after: float) -> float:
    """forgetting: the ability lost, positive = forgot."""
    return before - after if measure.higher_is_better else after - before


# ------------------------------------------------------------------------------------------ choosing


def sentence_pooling(model_dir: str | None) -> str | None:
    """The pooling a sentence-transformers folder declares (mean, cls, max), or None if it is not one."""
    if not model_dir or not (Path(model_dir) / "modules.json").is_file():
        return None
    modules = json.loads((Path(model_dir) / "modules.json").read_text())
    pool = next((m for m in modules if m.get("type", "").endswith("Pooling")), None)
    if pool is None:
        return None
    cfg = json.loads((Path(model_dir) / pool["path"] / "config.json").read_text())
    for mode in ("mean", "cls", "max"):
        if cfg.get(f"pooling_mode_{mode}_tokens") or cfg.get(f"pooling_mode_{mode}_token"):
            return mode
    return None


def choose(setting: str, causal_lm: bool, model_dir: str | None) -> tuple[Measure | None, str | None]:
    """(measure, None), or (None, why not). `auto`: a causal LM -> lm_loss; a sentence-transformers folder ->
    sts_zero_shot; another encoder -> mlm_loss (checked for a head when it is measured)."""
    if setting == "off":
        return None, "turned off by the suite (forgetting: off)"
    if setting != "auto":
        return MEASURES[setting], None
    if causal_lm:
        return MEASURES["lm_loss"], None
    if sentence_pooling(model_dir):
        return MEASURES["sts_zero_shot"], None
    return MEASURES["mlm_loss"], None


# ------------------------------------------------------------------------------------------ measuring


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under PEFT's wrapper (LoRA layers stay in place, so they still apply)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def encoder_of(model: nn.Module) -> nn.Module:
    m = unwrap(model)
    return getattr(m, m.base_model_prefix, m)


def max_length(model: nn.Module) -> int:
    """MAX_LEN, or less where the model has fewer positions (RoBERTa's two offset positions included)."""
    positions = getattr(unwrap(model).config, "max_position_embeddings", None) or MAX_LEN
    return min(MAX_LEN, positions - 2 if positions > MAX_LEN else positions)


def by_length(texts: list[str], tokenizer: Any, max_len: int) -> list[int]:
    """Indices of `texts`, shortest first: batches of like lengths waste little time on padding."""
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]]
    return sorted(range(len(texts)), key=lambda i: (lengths[i], i))


def _batches(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def sorted_batches(
    texts: list[str], tokenizer: Any, max_len: int, batch_size: int, **kwargs: Any
) -> Iterator[tuple[list[int], dict[str, Any]]]:
    """(indices, tokenized batch) over `texts` in length order; the caller puts results back by index."""
    order = by_length(texts, tokenizer, max_len)
    for sl in _batches(len(texts), batch_size):
        idx = order[sl]
        batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_len,
                          return_tensors="pt", **kwargs)  # fmt: skip
        yield idx, dict(batch)


def _pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, T, H) hidden states -> (B, H) sentence embeddings, as sentence-transformers pools them."""
    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    if mode == "max":
        return hidden.masked_fill(m == 0, float("-inf")).max(dim=1).values
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


@torch.no_grad()
def sts_scores(model: nn.Module, tokenizer: Any, device: torch.device, pooling: str) -> Scores:
    with STSB_DEV.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[::STS_STRIDE]
    encoder = encoder_of(model)

    def embed(texts: list[str]) -> torch.Tensor:
        parts: dict[int, torch.Tensor] = {}
        for idx, batch in sorted_batches(texts, tokenizer, max_length(model), EMBED_BATCH):
            batch = {k: v.to(device) for k, v in batch.items()}
            hidden = encoder(**batch).last_hidden_state  # (B, T, H)
            pooled = _pool(hidden.float(), batch["attention_mask"], pooling).cpu()  # (B, H)
            parts.update(zip(idx, pooled, strict=True))
        return torch.stack([parts[i] for i in range(len(texts))])  # (n, H)

    a, b = embed([r["sentence1"] for r in rows]), embed([r["sentence2"] for r in rows])
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).double().numpy()  # (n,)
    gold = np.asarray([float(r["score"]) for r in rows], dtype=np.float64)
    return Scores(cos, np.ones_like(cos), gold)


def general_text() -> list[str]:
    return GENERAL_TEXT.read_text(encoding="utf-8").splitlines()


@torch.no_grad()
def lm_scores(model: nn.Module, tokenizer: Any, device: torch.device) -> Scores:
    """Summed next-token cross-entropy per sentence (the first token has no context and is not scored)."""
    texts = general_text()
    values, weights = np.zeros(len(texts)), np.zeros(len(texts))
    for idx, batch in sorted_batches(texts, tokenizer, max_length(model), LOSS_BATCH):
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits.float()  # (B, T, V)
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
        keep = (mask[:, 1:] * mask[:, :-1]).float()  # (B, T-1): both the target and its context are real
        values[idx] = (nll * keep).sum(1).double().cpu().numpy()
        weights[idx] = keep.sum(1).double().cpu().numpy()
    return Scores(values, weights)


def load_mlm_head(model_dir: str, local_only: bool) -> nn.Module | None:
    """The checkpoint's pre-trained masked-LM head, or None when the checkpoint has none."""
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        mlm, info = AutoModelForMaskedLM.from_pretrained(model_dir, output_loading_info=True,
                                                         local_files_only=local_only)  # fmt: skip
    except (OSError, ValueError):
        return None
    finally:
        hf_logging.set_verbosity(level)
    prefix = mlm.base_model_prefix + "."
    if any(not k.startswith(prefix) for k in info["missing_keys"]):  # the head was freshly initialised
        return None
    head = mlm.get_output_embeddings()
    owner = next((m for n, m in mlm.named_children() if n != mlm.base_model_prefix), None)
    return owner if owner is not None and head is not None else None


@torch.no_grad()
def mlm_scores(model: nn.Module, tokenizer: Any, device: torch.device, head: nn.Module) -> Scores:
    """Masked-LM loss of the pre-trained `head` on the (fine-tuned) encoder: MASK_SHARE of each sentence's
    ordinary tokens replaced by the mask token, chosen by a generator seeded with MASK_SEED."""
    encoder, texts = encoder_of(model), general_text()
    gen = torch.Generator().manual_seed(MASK_SEED)
    head = head.to(device).eval()
    values, weights = np.zeros(len(texts)), np.zeros(len(texts))
    for idx, batch in sorted_batches(texts, tokenizer, max_length(model), LOSS_BATCH, return_special_tokens_mask=True):
        ordinary = (batch["attention_mask"] == 1) & (batch.pop("special_tokens_mask") == 0)  # (B, T)
        chosen = (torch.rand(ordinary.shape, generator=gen) < MASK_SHARE) & ordinary
        targets = batch["input_ids"].clone()
        batch["input_ids"][chosen] = tokenizer.mask_token_id
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = head(encoder(**batch).last_hidden_state).float()  # (B, T, V)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets.to(device), reduction="none")
        keep = chosen.to(device).float()
        values[idx] = (nll * keep).sum(1).double().cpu().numpy()
        weights[idx] = keep.sum(1).double().cpu().numpy()
    return Scores(values, weights)


# ------------------------------------------------------------------------------------------ the cache


def fingerprint(model: nn.Module) -> str:
    """A cheap identity of the pre-trained weights: every parameter's name, shape and first 1024 values."""
    h = hashlib.sha256()
    for name, p in unwrap(model).named_parameters():
        flat = p.detach().reshape(-1)[:1024].float().cpu().numpy()
        h.update(f"{name}{tuple(p.shape)}".encode())
        h.update(flat.tobytes())
    return h.hexdigest()[:24]


def cache_dir() -> Path:
    """$SIFT_BENCH_CACHE/forgetting, by default ~/.cache/sift-bench/forgetting (XDG_CACHE_HOME honoured)."""
    root = os.environ.get("SIFT_BENCH_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sift-bench"
    return Path(root) / "forgetting"


def cached_scores(key_parts: dict[str, Any], compute: Callable[[], Scores]) -> Scores:
    """Scores from the on-disk cache, or computed and written atomically (two trials racing write the same
    bytes). The key holds everything that changes the numbers, thread count included: float sums depend on
    how a CPU splits them, and classifier-only's forgetting must come out exactly 0."""
    key = hashlib.sha256(json.dumps({**key_parts, "v": CACHE_VERSION}, sort_keys=True).encode()).hexdigest()[:32]
    path = cache_dir() / f"{key}.json"
    if path.is_file():
        try:
            return Scores.from_json(json.loads(path.read_text()))
        except (ValueError, KeyError):
            pass  # a damaged entry is recomputed
    scores = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(scores.to_json()))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: the value is still right, only not reused
    return scores


# ------------------------------------------------------------------------------------------ in a trial


def _model_folder(model_name: str) -> str | None:
    """The checkpoint folder of a model (an alias, a local folder, or a hub id already in the cache)."""
    from sift_bench.models import resolve_model

    ref = resolve_model(model_name, probe=False)
    if Path(ref.path).is_dir():
        return ref.path
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(ref.path, "config.json")
    return str(Path(found).parent) if isinstance(found, str) else None


@dataclass
class Probe:
    """One trial's forgetting measure: `before` on the loaded weights, then `measure(model)` on later ones."""

    measure: Measure
    run: Callable[[nn.Module], Scores]
    before: Scores

    @property
    def before_value(self) -> float:
        return ability(self.measure, self.before)


def start(setting: str, model_name: str, causal_lm: bool, model: nn.Module, tokenizer: Any,
          device: torch.device) -> tuple[Probe | None, str | None]:  # fmt: skip
    """The probe for this trial with its `before` scores (from the cache when this machine has measured the
    same weights already), or (None, why there is none). Call it before the method touches the model."""
    folder = _model_folder(model_name)
    measure, why = choose(setting, causal_lm, folder)
    if measure is None:
        return None, why
    if measure.name == "lm_loss":
        if not causal_lm:
            return None, f"{model_name} is not a causal LM, so it has no lm_loss (use forgetting: auto)"

        def run(m: nn.Module) -> Scores:
            return lm_scores(m, tokenizer, device)
    elif measure.name == "sts_zero_shot":
        pooling = sentence_pooling(folder) or "mean"

        def run(m: nn.Module) -> Scores:
            return sts_scores(m, tokenizer, device, pooling)
    else:
        head = load_mlm_head(folder, local_only=True) if folder and tokenizer.mask_token_id is not None else None
        if head is None:
            return None, f"the checkpoint of {model_name} has no pre-trained masked-LM head to measure with"

        def run(m: nn.Module) -> Scores:
            return mlm_scores(m, tokenizer, device, head)

    # The task head is fresh (seeded per trial), so only the pre-trained part identifies the weights.
    weights = unwrap(model) if causal_lm else encoder_of(model)
    sample = STSB_DEV if measure.name == "sts_zero_shot" else GENERAL_TEXT
    key = {
        "measure": measure.name,
        "weights": fingerprint(weights),
        "sample": hashlib.sha256(sample.read_bytes()).hexdigest(),
        "dtype": str(next(model.parameters()).dtype),
        "device": device.type,
        "threads": torch.get_num_threads(),
        "batch": EMBED_BATCH if measure.name == "sts_zero_shot" else LOSS_BATCH,  # padding changes float sums
        "stride": STS_STRIDE if measure.name == "sts_zero_shot" else 1,
        "torch": torch.__version__,
    }
    was_training = model.training
    model.eval()
    before = cached_scores(key, lambda: run(model))
    model.train(was_training)
    return Probe(measure, run, before), None
