"""MMLU through lm-eval's Python API, on the in-memory model (no save, no reload, no hub access).

Two sources of questions:

- `standard`: lm-eval's `mmlu` task (the 57 test sets of `cais/mmlu`), used when that data set is in
  the local Hugging Face cache (or `source: standard` is asked for explicitly).
- `local`: the MMLU *dev* questions that lm-eval itself ships (five per subject, in
  `lm_eval/tasks/mmlu/flan_cot_fewshot/mmlu_<subject>.yaml`, where they serve as chain-of-thought
  exemplars). We take the question, the four choices and the gold letter, and build one lm-eval task
  per subject with exactly the standard task's prompt (its description, `doc_to_text`, answer letters,
  delimiters: read from lm-eval's own `mmlu/default` YAML). k-shot uses the other dev questions of the
  same subject (`first_n`, the question itself left out), so at most 4 shots. 281 questions in all
  (one 5-option chemistry item is dropped; college_chemistry keeps 3, formal_logic and human_aging 4,
  and their shots are capped at that count minus one): a small, noisy but honest sample that needs no
  download.

Accuracy is reported overall and per category (STEM, humanities, social sciences, other), each a
question-weighted mean, with lm-eval's own subject -> category mapping (the `tag` of each subject's
YAML in `mmlu/default`). Loading lm-eval's task index is slow (its full index: ~40 s here), so we
index only MMLU's folder, at most once per process (`task_manager()`), never per trial. The local
task objects are rebuilt per call (cheap): lm-eval keeps per-run state on them.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from sift_bench.errors import SiftBenchError
from sift_bench.evaluators.base import Evaluator, EvaluatorOptions, register_evaluator

CATEGORIES = ("stem", "humanities", "social_sciences", "other")
MAX_LOCAL_SHOTS = 4  # five dev questions per subject, one of them being asked
_CHOICES = re.compile(
    r"^(?P<q>.*?)\n\(A\) ?(?P<a>.*?)\s+\(B\) ?(?P<b>.*?)\s+\(C\) ?(?P<c>.*?)\s+\(D\) ?(?P<d>.*?)\s*$", re.S
)
_ANSWER = re.compile(r"answer is \(([ABCD])\)")


class MmluOptions(EvaluatorOptions):
    shots: int = Field(0, ge=0, description="Few-shot examples per question (the paper: 5; local: at most 4).")
    limit: int | None = Field(None, ge=1, description="Questions per subject (lm-eval's --limit).")
    subjects: list[str] | None = Field(None, description="Only these subjects (e.g. ['anatomy']); None = all 57.")
    source: Literal["auto", "standard", "local"] = Field(
        "auto", description="'auto': the standard task if cais/mmlu is cached locally, else the shipped dev set."
    )
    batch_size: int = Field(8, ge=1, description="Requests per forward pass.")


# ---------------------------------------------------------------------------------------------------------
# What lm-eval ships


def lm_eval_dir() -> Path:
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or spec.origin is None:
        raise SiftBenchError("The MMLU evaluator needs lm-eval: pip install 'lm-eval>=0.4.3'.")
    return Path(spec.origin).parent


@functools.cache
def _default_yaml(subject: str) -> dict[str, Any]:
    path = lm_eval_dir() / "tasks" / "mmlu" / "default" / f"mmlu_{subject}.yaml"
    return yaml.safe_load(path.read_text())


@functools.cache
def default_template() -> dict[str, Any]:
    """lm-eval's standard MMLU prompt settings (`_default_template_yaml`)."""
    return yaml.safe_load((lm_eval_dir() / "tasks" / "mmlu" / "default" / "_default_template_yaml").read_text())


@functools.cache
def subject_categories() -> dict[str, str]:
    """subject -> category, from the `tag` (e.g. `mmlu_stem_tasks`) of lm-eval's per-subject YAMLs."""
    out = {}
    for path in sorted((lm_eval_dir() / "tasks" / "mmlu" / "default").glob("mmlu_*.yaml")):
        subject = path.stem.removeprefix("mmlu_")
        tag = _default_yaml(subject)["tag"]
        out[subject] = tag.removeprefix("mmlu_").removesuffix("_tasks")
    if len(out) != 57 or set(out.values()) != set(CATEGORIES):
        raise SiftBenchError(f"Unexpected MMLU task layout in {lm_eval_dir()}; this lm-eval version is unsupported.")
    return out


def parse_dev_question(question: str, target: str) -> dict[str, Any] | None:
    """One shipped exemplar -> {question, choices, answer}; None if it is not a clean 4-choice item."""
    m, a = _CHOICES.match(question), _ANSWER.search(target)
    if m is None or a is None:
        return None
    choices = [m[k].strip() for k in "abcd"]
    if any("(E)" in c for c in choices):  # one chemistry item has a fifth option
        return None
    return {"question": m["q"].strip(), "choices": choices, "answer": "ABCD".index(a[1])}


@functools.cache
def shipped_dev_questions() -> dict[str, tuple[dict[str, Any], ...]]:
    """subject -> its dev questions, in lm-eval's order."""
    folder = lm_eval_dir() / "tasks" / "mmlu" / "flan_cot_fewshot"
    out = {}
    for subject in subject_categories():
        data = yaml.safe_load((folder / f"mmlu_{subject}.yaml").read_text())
        docs = [parse_dev_question(s["question"], s["target"]) for s in data["fewshot_config"]["samples"]]
        out[subject] = tuple(d for d in docs if d is not None)
    return out


# ---------------------------------------------------------------------------------------------------------
# lm-eval tasks


@functools.cache
def task_manager(source: Literal["standard", "local"]) -> Any:
    """An lm-eval task index, built once per process. lm-eval's full index walks thousands of YAML files
    (~40 s here); we only index what MMLU needs: lm-eval's `mmlu/default` folder for the standard task,
    nothing for the local one (its tasks are passed as objects)."""
    from lm_eval.tasks import TaskManager

    if source == "local":
        return TaskManager(include_defaults=False)
    return TaskManager(include_path=str(lm_eval_dir() / "tasks" / "mmlu" / "default"), include_defaults=False)


def standard_available() -> bool:
    """Whether `cais/mmlu` is in the local Hugging Face cache (we never download it implicitly)."""
    try:
        from huggingface_hub import scan_cache_dir

        return any(r.repo_id == "cais/mmlu" and r.repo_type == "dataset" for r in scan_cache_dir().repos)
    except Exception:  # no cache dir at all
        return False


def local_task(subject: str, shots: int = 0) -> Any:
    """An lm-eval task over the shipped dev questions of one subject, prompted as the standard task."""
    import datasets
    from lm_eval.api.task import ConfigurableTask

    docs = list(shipped_dev_questions()[subject])
    shots = min(shots, len(docs) - 1)  # 3 subjects ship fewer than 5 clean questions (see module doc)
    base, own = default_template(), _default_yaml(subject)

    def dataset(**_: Any) -> datasets.DatasetDict:
        return datasets.DatasetDict({"dev": datasets.Dataset.from_list(docs)})

    config = {
        "task": f"mmlu_{subject}",
        "task_alias": subject,
        "custom_dataset": dataset,
        "test_split": "dev",
        "fewshot_split": "dev",  # the same split: lm-eval leaves the asked question out of its shots
        "fewshot_config": {"sampler": "first_n"},
        "num_fewshot": shots,
        "output_type": base["output_type"],
        "doc_to_text": base["doc_to_text"],
        "doc_to_choice": base["doc_to_choice"],
        "doc_to_target": base["doc_to_target"],
        "description": own["description"],
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": f"sift-bench-local-dev-{base['metadata']['version']}"},
    }
    return ConfigurableTask(config=config)


def resolve_subjects(subjects: list[str] | None) -> tuple[str, ...]:
    known = subject_categories()
    if subjects is None:
        return tuple(known)
    bad = [s for s in subjects if s not in known]
    if bad:
        from sift_bench.registry import did_you_mean

        hint = did_you_mean(bad[0], list(known))
        raise SiftBenchError(f"evaluator 'mmlu': unknown subject '{bad[0]}'.{hint} Known: {', '.join(known)}.")
    return tuple(subjects)


# ---------------------------------------------------------------------------------------------------------
# Scoring


def summarize(per_subject: dict[str, tuple[float, int]]) -> dict[str, float]:
    """Question-weighted accuracy overall and per category, from subject -> (accuracy, questions)."""
    cats = subject_categories()
    out: dict[str, float] = {}
    total_c = total_n = 0.0
    for cat in CATEGORIES:
        pairs = [v for s, v in per_subject.items() if cats[s] == cat]
        n = sum(k for _, k in pairs)
        correct = sum(acc * k for acc, k in pairs)
        if n:
            out[f"mmlu_{cat}"] = correct / n
        total_c, total_n = total_c + correct, total_n + n
    out["mmlu_acc"] = total_c / total_n if total_n else float("nan")
    out["mmlu_questions"] = float(total_n)
    return out


def evaluate_mmlu(model: Any, tokenizer: Any, opts: MmluOptions | None = None) -> dict[str, float]:
    """MMLU accuracy of an in-memory causal LM: `mmlu_acc` plus `mmlu_<category>` and the question count."""
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    opts = opts or MmluOptions()
    subjects = resolve_subjects(opts.subjects)
    source = opts.source
    if source == "auto":
        source = "standard" if standard_available() else "local"
    if source == "local" and opts.shots > MAX_LOCAL_SHOTS:
        raise SiftBenchError(
            f"evaluator 'mmlu': shots={opts.shots} but the shipped dev set has 5 questions per subject, so at "
            f"most {MAX_LOCAL_SHOTS} shots; lower `shots` or make cais/mmlu available (source: standard)."
        )
    # PEFT wraps the model; its base model already holds the LoRA layers, and HFLM wants a PreTrainedModel.
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    was_training = base.training
    base.eval()
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)  # lm-eval warns about things that do not apply here (in-memory model, ...)
    try:
        lm = HFLM(pretrained=base, tokenizer=tokenizer, batch_size=opts.batch_size, device=str(base.device))
        # Fresh task objects each call (cheap): lm-eval keeps per-run state on them, e.g. num_fewshot.
        tasks = [local_task(s, opts.shots) for s in subjects] if source == "local" else [f"mmlu_{s}" for s in subjects]
        with torch.no_grad():
            out = simple_evaluate(
                model=lm,
                tasks=tasks,
                num_fewshot=opts.shots,
                limit=opts.limit,
                log_samples=False,
                bootstrap_iters=0,
                verbosity="ERROR",
                task_manager=task_manager(source),
            )
    finally:
        base.train(was_training)
        logger.setLevel(level)
    if out is None:
        raise SiftBenchError("lm-eval returned no results for MMLU.")
    per_subject = {}
    for s in subjects:
        res = out["results"][f"mmlu_{s}"]
        n = int(out["n-samples"][f"mmlu_{s}"]["effective"])
        per_subject[s] = (float(res["acc,none"]), n)
    return summarize(per_subject)


class Mmlu(Evaluator):
    name = "mmlu"
    options = MmluOptions
    metrics = ("mmlu_acc", "mmlu_stem", "mmlu_humanities", "mmlu_social_sciences", "mmlu_other")

    def evaluate(self, model: Any, tokenizer: Any, opts: EvaluatorOptions) -> dict[str, float]:
        assert isinstance(opts, MmluOptions)
        metrics = evaluate_mmlu(model, tokenizer, opts)
        metrics.pop("mmlu_questions")  # a count, not a score: keep it out of result tables
        return metrics


register_evaluator(Mmlu())
