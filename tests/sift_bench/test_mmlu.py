"""MMLU through lm-eval: the shipped dev questions, the exact prompt, category sums, a tiny-model run."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_char_tokenizer, tiny_llama
from typer.testing import CliRunner

from sift_bench.errors import SiftBenchError
from sift_bench.evaluators import EVALUATORS
from sift_bench.evaluators.mmlu import (
    MmluOptions,
    evaluate_mmlu,
    local_task,
    parse_dev_question,
    shipped_dev_questions,
    subject_categories,
    summarize,
    task_manager,
)


def test_subject_categories_are_lm_evals() -> None:
    cats = subject_categories()
    assert len(cats) == 57
    assert sorted(set(cats.values())) == ["humanities", "other", "social_sciences", "stem"]
    assert cats["abstract_algebra"] == "stem" and cats["philosophy"] == "humanities"
    assert cats["sociology"] == "social_sciences" and cats["marketing"] == "other"
    assert sum(c == "stem" for c in cats.values()) == 19


def test_shipped_dev_questions_parse_into_four_choices() -> None:
    dev = shipped_dev_questions()
    assert set(dev) == set(subject_categories())
    assert sum(len(v) for v in dev.values()) == 281
    assert all(len(d["choices"]) == 4 and d["answer"] in range(4) for v in dev.values() for d in v)
    assert {s for s, v in dev.items() if len(v) < 5} == {"college_chemistry", "formal_logic", "human_aging"}


def test_parse_dev_question_with_choices_on_separate_lines() -> None:
    q = "Which expression is equivalent to 5 x 9?\n(A) (5 x 4) x (6 x 5)\n(B) (5 x 5) + (5 x 4)\n(C) 45 (D) 54"
    got = parse_dev_question(q, "Let's think step by step. ... The answer is (B).")
    assert got == {
        "question": "Which expression is equivalent to 5 x 9?",
        "choices": ["(5 x 4) x (6 x 5)", "(5 x 5) + (5 x 4)", "45", "54"],
        "answer": 1,
    }
    assert parse_dev_question("Pick one\n(A) 1 (B) 2 (C) 3 (D) 4 (E) 5", "The answer is (E).") is None


def test_prompt_is_the_standard_mmlu_prompt() -> None:
    task = local_task("anatomy")
    doc = task.test_docs()[0]
    assert task.fewshot_context(doc, 0) == (
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
        "Which of the following is the body cavity that contains the pituitary gland?\n"
        "A. Abdominal\nB. Cranial\nC. Pleural\nD. Spinal\nAnswer:"
    )
    assert task.doc_to_choice(doc) == ["A", "B", "C", "D"] and task.doc_to_target(doc) == 1  # Cranial
    # One shot: the next dev question with its answer letter; the asked question never shows itself.
    one = task.fewshot_context(doc, 1)
    assert one.startswith(
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
        "Which of these branches of the trigeminal nerve contain somatic motor processes?\n"
    )
    assert "D. None of the above\nAnswer: D\n\nWhich of the following is the body cavity" in one
    four = task.fewshot_context(doc, 4)
    assert four.count("pituitary") == 1 and four.count("Answer:") == 5


def test_summarize_weights_by_questions() -> None:
    got = summarize({"anatomy": (0.5, 4), "astronomy": (1.0, 2), "philosophy": (0.0, 3), "sociology": (1 / 3, 3)})
    assert got["mmlu_stem"] == pytest.approx(4 / 6)
    assert got["mmlu_humanities"] == 0.0
    assert got["mmlu_social_sciences"] == pytest.approx(1 / 3)
    assert "mmlu_other" not in got
    assert got["mmlu_acc"] == pytest.approx((2 + 2 + 0 + 1) / 12)
    assert got["mmlu_questions"] == 12


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(SiftBenchError, match="at most 4 shots"):
        evaluate_mmlu(None, None, MmluOptions(shots=5, source="local"))
    with pytest.raises(SiftBenchError, match="Did you mean 'anatomy'"):
        evaluate_mmlu(None, None, MmluOptions(subjects=["anatomyy"]))
    with pytest.raises(SiftBenchError, match="evaluator 'mmlu': bad options"):
        EVALUATORS.get("mmlu").parse_options({"shot": 5})


def test_task_index_is_built_once_per_process() -> None:
    assert task_manager("local") is task_manager("local")


@pytest.mark.parametrize("shots", [0, 2])
def test_tiny_model_runs_through_lm_eval(shots: int) -> None:
    opts = MmluOptions(subjects=["anatomy", "sociology", "college_chemistry"], limit=2, shots=shots, source="local")
    got = evaluate_mmlu(tiny_llama(), tiny_char_tokenizer(), opts)
    assert got["mmlu_questions"] == 6
    assert 0.0 <= got["mmlu_acc"] <= 1.0
    assert set(got) == {"mmlu_acc", "mmlu_stem", "mmlu_social_sciences", "mmlu_questions"}
    # Category means recombine into the overall mean (2 STEM subjects, 1 social-science subject).
    assert got["mmlu_acc"] == pytest.approx((4 * got["mmlu_stem"] + 2 * got["mmlu_social_sciences"]) / 6)


def test_cli_eval_mmlu(tmp_path: Path) -> None:
    from sift_bench.cli import app

    tiny_llama().save_pretrained(tmp_path / "m")
    tiny_char_tokenizer().save_pretrained(tmp_path / "m")
    args = ["eval", "mmlu", "--model", str(tmp_path / "m"), "--subject", "anatomy", "--limit", "2", "--source", "local"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "mmlu_acc" in res.output and "questions" in res.output
    bad = CliRunner().invoke(app, [*args[:-2], "--shots", "9", "--source", "local"])
    assert bad.exit_code == 2 and "at most 4 shots" in bad.output  # bad input


def test_standard_index_covers_only_mmlu() -> None:
    names = task_manager("standard").all_tasks
    assert "mmlu" in names and "mmlu_anatomy" in names and "hellaswag" not in names


def test_peft_wrapped_model_is_scored_in_memory() -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    model.train()
    got = evaluate_mmlu(model, tiny_char_tokenizer(), MmluOptions(subjects=["virology"], limit=1, source="local"))
    assert got["mmlu_questions"] == 1 and got["mmlu_other"] in (0.0, 1.0)
    assert model.training  # the evaluator restores the mode it found
