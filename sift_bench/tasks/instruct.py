"""Instruction tuning data in Alpaca format (instruction / input / output) as causal-LM tasks.

Data, first hit wins: `data_dir` or `$SIFT_BENCH_DATA` (a .json list or .jsonl file, or a folder
holding `<task>.jsonl` or `<task>.json`, the `-chat` suffix dropped; for `alpaca` also
`alpaca_data.json`), then the task's own source: the shipped stdlib set
(`sift_bench/data/stdlib_instruct.jsonl`, see `sift_bench.data.build_stdlib_instruct`) or a hub id
(`tatsu-lab/alpaca`, through `datasets`).

Each example becomes `prompt + response` where the prompt comes from a template (Stanford Alpaca's, or
the tokenizer's chat template) and the response is `output` plus the end-of-sequence token. The loss is
on response tokens only: labels are -100 on the prompt and on padding. Prompt and response are
tokenised separately, so the boundary is exact whatever the tokenizer merges.

The dev split is a fixed 5% of the examples chosen by a hash of the instruction, so it does not move
when the file is reordered or `max_train_samples` changes. Training batches are length-grouped
(`batch_order`) to waste little compute on padding.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from sift_bench.errors import SiftBenchError
from sift_bench.spec import Prediction
from sift_bench.tasks.base import Batch, Example, Forward, Task, TaskKind, register_task

STDLIB_FILE = Path(__file__).resolve().parents[1] / "data" / "stdlib_instruct.jsonl"
DEV_EVERY = 20  # 1 in 20 examples (5%) is held out as dev
IGNORE = -100  # label value the cross-entropy skips


@dataclass(frozen=True)
class PromptTemplate:
    """How an example's instruction (and input) become the prompt. `kind="chat"` uses the tokenizer's
    chat template with one user turn; `kind="text"` formats the two strings below."""

    name: str
    kind: Literal["text", "chat"] = "text"
    with_input: str = ""
    no_input: str = ""

    def prompt(self, example: Example, tokenizer: Any) -> str:
        instruction, inp = example["instruction"], example.get("input") or ""
        if self.kind == "chat":
            return self._chat(tokenizer, instruction, inp)
        template = self.with_input if inp else self.no_input
        return template.format(instruction=instruction, input=inp)

    def response(self, example: Example, tokenizer: Any) -> str:
        """The text trained on: the output and whatever closes the turn (EOS, or the chat turn end)."""
        if self.kind == "chat":
            prompt = self._chat(tokenizer, example["instruction"], example.get("input") or "")
            full = self._chat(tokenizer, example["instruction"], example.get("input") or "", example["output"])
            if not full.startswith(prompt):
                raise SiftBenchError(
                    f"template '{self.name}': the tokenizer's chat template does not render the assistant turn "
                    "after the generation prompt; use the 'alpaca' template for this model."
                )
            return full[len(prompt) :]
        return example["output"] + (tokenizer.eos_token or "")

    @staticmethod
    def _chat(tokenizer: Any, instruction: str, inp: str, output: str | None = None) -> str:
        if not getattr(tokenizer, "chat_template", None):
            raise SiftBenchError(
                "template 'chat': this tokenizer has no chat template; use an '-alpaca' task variant instead."
            )
        user = f"{instruction}\n\n{inp}" if inp else instruction
        messages = [{"role": "user", "content": user}]
        if output is None:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        messages.append({"role": "assistant", "content": output})
        return tokenizer.apply_chat_template(messages, tokenize=False)


# Stanford Alpaca's prompts (github.com/tatsu-lab/stanford_alpaca, train.py PROMPT_DICT).
ALPACA = PromptTemplate(
    name="alpaca",
    with_input=(
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    ),
    no_input=(
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response:\n"
    ),
)
CHAT = PromptTemplate(name="chat", kind="chat")
TEMPLATES: dict[str, PromptTemplate] = {t.name: t for t in (ALPACA, CHAT)}


# ---------------------------------------------------------------------------------------------------------
# Data


def read_examples(path: Path) -> list[Example]:
    """Alpaca-format rows from a .json list or a .jsonl file; every row needs instruction and output."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SiftBenchError(f"Cannot read instruction data {path}: {e}") from None
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise SiftBenchError(f"{path}: not valid JSON{'L' if path.suffix == '.jsonl' else ''} ({e}).") from None
    if not isinstance(rows, list):
        raise SiftBenchError(f"{path}: expected a list of {{instruction, input, output}} objects.")
    return [_check_row(row, path, i) for i, row in enumerate(rows)]


def _check_row(row: Any, path: Path | str, i: int) -> Example:
    if (
        not isinstance(row, dict)
        or not isinstance(row.get("instruction"), str)
        or not isinstance(row.get("output"), str)
    ):
        raise SiftBenchError(
            f"{path}: row {i} needs string fields 'instruction' and 'output' ('input' optional); got {row!r:.120}."
        )
    return {"instruction": row["instruction"], "input": row.get("input") or "", "output": row["output"]}


def is_dev(example: Example) -> bool:
    digest = hashlib.sha256((example["instruction"] + "\0" + example["input"]).encode()).digest()
    return int.from_bytes(digest[:4], "big") % DEV_EVERY == 0


def tokenize_example(
    example: Example, tokenizer: Any, template: PromptTemplate, max_seq_len: int
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one example; labels are IGNORE on the prompt.

    When too long, the prompt is cut from the left (its end, e.g. '### Response:', is what the response
    follows) and the response from the right, keeping at least half the window for the response."""
    prompt = tokenizer(template.prompt(example, tokenizer), add_special_tokens=True)["input_ids"]
    response = tokenizer(template.response(example, tokenizer), add_special_tokens=False)["input_ids"]
    if len(prompt) + len(response) > max_seq_len:
        keep_response = min(len(response), max(max_seq_len // 2, max_seq_len - len(prompt)))
        response = response[:keep_response]
        prompt = prompt[len(prompt) - (max_seq_len - keep_response) :]
    return prompt + response, [IGNORE] * len(prompt) + response


def length_grouped_order(lengths: list[int], batch_size: int, seed: int) -> list[int]:
    """Indices such that consecutive runs of `batch_size` have similar lengths, batches in random order.

    Shuffle, cut into mega-chunks of 50 batches, sort each chunk by length, then shuffle the batches: the
    usual "group by length" sampler (as in transformers' LengthGroupedSampler), deterministic in `seed`."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = 50 * batch_size
    grouped: list[int] = []
    for start in range(0, len(order), chunk):
        grouped += sorted(order[start : start + chunk], key=lambda i: -lengths[i])
    batches = [grouped[i : i + batch_size] for i in range(0, len(grouped), batch_size)]
    rng.shuffle(batches)
    return [i for b in batches for i in b]


# ---------------------------------------------------------------------------------------------------------
# The task


class InstructTask(Task):
    """An instruction data set trained with the causal-LM loss on responses; scored by dev loss.

    Benchmarks (MMLU, HumanEval) are evaluators that run after training; see `sift_bench.evaluators`."""

    kind: TaskKind = "causal_lm"
    primary_metric: str = "eval_loss"

    def __init__(self, name: str, source: str | Path, template: PromptTemplate = ALPACA) -> None:
        self.name = name  # instances differ only in data and template
        self.source = source
        self.template = template

    # -- data -----------------------------------------------------------------------------------------
    def candidates(self, data_dir: str | None) -> list[Path]:
        roots = [Path(d).expanduser() for d in (data_dir, os.environ.get("SIFT_BENCH_DATA")) if d]
        out = []
        for root in roots:
            if root.is_file():
                out.append(root)
                continue
            base = self.name.removesuffix("-chat")
            out += [root / f"{base}.jsonl", root / f"{base}.json"]
            if base == "alpaca":
                out.append(root / "alpaca_data.json")  # the file name Stanford Alpaca ships
        return out

    def all_examples(self, data_dir: str | None) -> list[Example]:
        tried = self.candidates(data_dir)
        path = next((p for p in tried if p.is_file()), None)
        if path is not None:
            return read_examples(path)
        if isinstance(self.source, Path):
            return read_examples(self.source)
        return self._from_hub(tried)

    def _from_hub(self, tried: list[Path]) -> list[Example]:
        try:
            import datasets

            ds = datasets.load_dataset(str(self.source), split="train")
        except Exception as e:  # network, unknown id: both mean "no data"
            paths = "\n  ".join(str(p) for p in tried) or "(none: no data_dir and no SIFT_BENCH_DATA)"
            raise SiftBenchError(
                f"No data for instruction task '{self.name}'. Tried these files:\n  {paths}\n"
                f"and the Hugging Face hub ({self.source}): {type(e).__name__}: {e}\n"
                f"Fix: set the suite's data_dir (or --data-dir) to an Alpaca-format .json/.jsonl file, "
                f"or allow hub access."
            ) from None
        return [_check_row(row, str(self.source), i) for i, row in enumerate(ds)]

    def load(self, data_dir: str | None, split: str, max_samples: int | None = None) -> list[Example]:
        if split not in ("train", *self.eval_splits):
            raise SiftBenchError(f"instruction task '{self.name}' has no split '{split}'; use train or dev.")
        want_dev = split == "dev"
        rows = [ex for ex in self.all_examples(data_dir) if is_dev(ex) == want_dev]
        return rows[:max_samples] if max_samples else rows

    def batch_order(self, examples: list[Example], tokenizer: Any, batch_size: int, seed: int) -> list[int]:
        """Length-grouped training order (see `length_grouped_order`); lengths in characters, a cheap
        proxy for tokens that needs no tokenisation pass."""
        lengths = [len(self.template.prompt(ex, tokenizer)) + len(ex["output"]) for ex in examples]
        return length_grouped_order(lengths, batch_size, seed)

    # -- tensors --------------------------------------------------------------------------------------
    def collate(self, tokenizer: Any, max_seq_len: int) -> Callable[[list[Example]], Batch]:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad_id is None:
            raise SiftBenchError("The tokenizer has neither a pad nor an eos token; instruction batches need one.")

        def collate(examples: list[Example]) -> Batch:
            pairs = [tokenize_example(ex, tokenizer, self.template, max_seq_len) for ex in examples]
            width = max(len(ids) for ids, _ in pairs)
            input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)  # (B, T)
            labels = torch.full((len(pairs), width), IGNORE, dtype=torch.long)  # (B, T)
            attention = torch.zeros((len(pairs), width), dtype=torch.long)  # (B, T)
            for row, (ids, labs) in enumerate(pairs):  # right padding: positions stay 0..len-1
                input_ids[row, : len(ids)] = torch.tensor(ids)
                labels[row, : len(labs)] = torch.tensor(labs)
                attention[row, : len(ids)] = 1
            return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}

        return collate

    # -- scores ---------------------------------------------------------------------------------------
    def evaluate(
        self, forward: Forward, loaders: dict[str, Iterable[Batch]], predictions: list[Prediction] | None = None
    ) -> dict[str, float]:
        """Token-weighted mean loss over the response tokens of every eval split (no per-example predictions:
        a loss is not a prediction, so `predictions` stays as given)."""
        loss_sum, tokens = 0.0, 0
        for loader in loaders.values():
            for batch in loader:
                out = forward(batch)
                n = int((batch["labels"][:, 1:] != IGNORE).sum())  # HF shifts labels by one
                loss_sum, tokens = loss_sum + float(out.loss) * n, tokens + n
        return {"eval_loss": loss_sum / max(tokens, 1)}


# The shipped stdlib set, with Alpaca's prompt or the model's chat template; Stanford Alpaca from the hub.
# Your own file with the chat template is one more line: register_task(InstructTask(name, path, CHAT)).
register_task(InstructTask("stdlib-instruct", STDLIB_FILE, ALPACA))
register_task(InstructTask("stdlib-instruct-chat", STDLIB_FILE, CHAT))
register_task(InstructTask("alpaca", "tatsu-lab/alpaca", ALPACA))
register_task(InstructTask("alpaca-chat", "tatsu-lab/alpaca", CHAT))
