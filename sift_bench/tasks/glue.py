"""The GLUE tasks: data from a local TSV folder, the embedded copies, or the Hugging Face hub.

Where data comes from, first hit wins:
  1. `data_dir` (the suite's `data_dir`, or `--data-dir`), then `$SIFT_BENCH_DATA`: the classic layout
     `<dir>/<TASK>/{train,dev}.tsv` (also `<dir>/glue/<TASK>/...`), as `download_glue_data.py` writes it;
  2. the copy of MRPC and RTE and the SST-2 slice (first 4000 training rows, whole dev) shipped in
     `sift_bench/data/glue/`, so the quickstart needs no setup; the slice serves only the requests it holds
     whole (max_samples <= 4000), so a run that wants all of SST-2's training set goes on to the hub;
  3. the hub, `datasets.load_dataset("nyu-mll/glue", <task>)`.
Labels are the hub's ids (e.g. RTE: entailment=0, not_entailment=1), whichever source is used.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sift_bench.errors import SiftBenchError
from sift_bench.evaluators.glue import glue_metrics
from sift_bench.spec import Prediction
from sift_bench.tasks.base import Batch, Example, Forward, Task, TaskKind, register_task

EMBEDDED = Path(__file__).resolve().parents[1] / "data" / "glue"
# Embedded files that are slices of their split: (task, split) -> rows shipped.
EMBEDDED_SLICES: dict[tuple[str, str], int] = {("sst2", "train"): 4000}
HUB_ID = "nyu-mll/glue"
NLI3 = {"entailment": 0, "neutral": 1, "contradiction": 2}
NLI2 = {"entailment": 0, "not_entailment": 1}


@dataclass(frozen=True)
class GlueFormat:
    """How one task's TSVs and hub rows look."""

    folder: str  # directory in the classic layout
    text: tuple[str, str | None]  # TSV columns of the first and second sentence
    label: str  # TSV label column
    hub_text: tuple[str, str | None]
    header: tuple[str, ...] | None = None  # for files without a header line (CoLA)
    label_map: dict[str, int] | None = None  # string labels -> hub ids


FORMATS: dict[str, GlueFormat] = {
    "cola": GlueFormat("CoLA", ("sentence", None), "label", ("sentence", None),
                       header=("source", "label", "original_label", "sentence")),
    "sst2": GlueFormat("SST-2", ("sentence", None), "label", ("sentence", None)),
    "mrpc": GlueFormat("MRPC", ("#1 String", "#2 String"), "Quality", ("sentence1", "sentence2")),
    "stsb": GlueFormat("STS-B", ("sentence1", "sentence2"), "score", ("sentence1", "sentence2")),
    "qqp": GlueFormat("QQP", ("question1", "question2"), "is_duplicate", ("question1", "question2")),
    "qnli": GlueFormat("QNLI", ("question", "sentence"), "label", ("question", "sentence"), label_map=NLI2),
    "rte": GlueFormat("RTE", ("sentence1", "sentence2"), "label", ("sentence1", "sentence2"), label_map=NLI2),
    "mnli": GlueFormat("MNLI", ("sentence1", "sentence2"), "gold_label", ("premise", "hypothesis"), label_map=NLI3),
}  # fmt: skip


def read_tsv(path: Path, fmt: GlueFormat) -> list[dict[str, str]]:
    """Rows of a GLUE TSV as dicts. No quoting (GLUE text has bare quotes); utf-8-sig drops MRPC's BOM;
    a row shorter than the header (a few in QQP) is skipped, as the classic processors do."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = list(fmt.header) if fmt.header else next(reader)
        return [dict(zip(header, row, strict=False)) for row in reader if len(row) >= len(header)]


class GlueTask(Task):
    """One GLUE task; the instances registered below differ in their attributes only."""

    def __init__(
        self, name: str, kind: TaskKind, num_labels: int, primary: str, splits: tuple[str, ...] = ("dev",)
    ) -> None:
        self.name, self.kind, self.num_labels, self.primary_metric = name, kind, num_labels, primary
        self.eval_splits, self.fmt = splits, FORMATS[name]

    # -- data -----------------------------------------------------------------------------------------
    def local_candidates(self, data_dir: str | None, split: str) -> list[Path]:
        roots = [Path(d).expanduser() for d in (data_dir, os.environ.get("SIFT_BENCH_DATA")) if d]
        paths = [
            p
            for r in roots
            for p in (r / self.fmt.folder / f"{split}.tsv", r / "glue" / self.fmt.folder / f"{split}.tsv")
        ]
        return [*paths, EMBEDDED / self.fmt.folder / f"{split}.tsv"]

    def load(self, data_dir: str | None, split: str, max_samples: int | None = None) -> list[Example]:
        if split != "train" and split not in self.eval_splits:
            raise SiftBenchError(f"GLUE task '{self.name}' has no split '{split}'; use train or {self.eval_splits}.")
        tried = self.local_candidates(data_dir, split)
        slice_note = ""
        shipped = EMBEDDED_SLICES.get((self.name, split))
        if shipped is not None and (max_samples is None or max_samples > shipped):
            tried = tried[:-1]  # the embedded slice cannot serve this request whole
            slice_note = (
                f"(The embedded {self.fmt.folder} {split} slice holds its first {shipped} rows; set "
                f"max_{'train' if split == 'train' else 'eval'}_samples <= {shipped} to use it.)\n"
            )
        path = next((p for p in tried if p.is_file()), None)
        if path is not None:
            rows = [self._from_tsv(r, path) for r in read_tsv(path, self.fmt)]
        else:
            rows = self._from_hub(split, tried, slice_note)
        return rows[:max_samples] if max_samples else rows

    def _from_tsv(self, row: dict[str, str], path: Path) -> Example:
        a, b = self.fmt.text
        raw = row[self.fmt.label]
        try:
            label: float | int = (
                float(raw) if self.kind == "regression"
                else self.fmt.label_map[raw] if self.fmt.label_map else int(raw)
            )  # fmt: skip
        except (KeyError, ValueError):
            raise SiftBenchError(f"{path}: unexpected label {raw!r} for GLUE task '{self.name}'.") from None
        return {"text_a": row[a], "text_b": row[b] if b else None, "label": label}

    def _from_hub(self, split: str, tried: list[Path], note: str = "") -> list[Example]:
        hub_split = split.replace("dev", "validation")
        try:
            import datasets

            ds = datasets.load_dataset(HUB_ID, self.name, split=hub_split)
        except Exception as e:  # network, missing package, unknown config: all mean "no data"
            paths = "\n  ".join(str(p) for p in tried)
            raise SiftBenchError(
                f"No data for GLUE task '{self.name}' split '{split}'. Tried these files:\n  {paths}\n"
                f"and the Hugging Face hub ({HUB_ID}): {type(e).__name__}: {e}\n{note}"
                f"Fix: pass --data-dir (or the suite's data_dir, or set SIFT_BENCH_DATA) to a folder holding "
                f"{self.fmt.folder}/{split}.tsv in the classic GLUE layout, or allow hub access."
            ) from None
        a, b = self.fmt.hub_text
        cast = float if self.kind == "regression" else int
        return [{"text_a": r[a], "text_b": r[b] if b else None, "label": cast(r["label"])} for r in ds]

    # -- tensors --------------------------------------------------------------------------------------
    def collate(self, tokenizer: Any, max_seq_len: int) -> Callable[[list[Example]], Batch]:
        dtype = torch.float32 if self.kind == "regression" else torch.long

        def collate(examples: list[Example]) -> Batch:
            a = [e["text_a"] for e in examples]
            b = [e["text_b"] for e in examples] if self.fmt.text[1] else None
            batch = tokenizer(a, b, truncation=True, max_length=max_seq_len, padding=True, return_tensors="pt")
            batch = dict(batch)
            batch["labels"] = torch.tensor([e["label"] for e in examples], dtype=dtype)  # (B,)
            return batch

        return collate

    def eval_order(self, examples: list[Example], tokenizer: Any) -> list[int]:
        """Shortest first (untruncated token count; a stable sort, so ties keep file order)."""
        a = [e["text_a"] for e in examples]
        b = [e["text_b"] for e in examples] if self.fmt.text[1] else None
        lengths = [len(ids) for ids in tokenizer(a, b)["input_ids"]]
        return sorted(range(len(examples)), key=lengths.__getitem__)

    # -- scores ---------------------------------------------------------------------------------------
    def evaluate(
        self, forward: Forward, loaders: dict[str, Iterable[Batch]], predictions: list[Prediction] | None = None
    ) -> dict[str, float]:
        metrics: dict[str, float] = {}
        loss_sum, count = 0.0, 0
        for split, loader in loaders.items():
            preds, labels = [], []
            for batch in loader:
                out = forward(batch)
                logits = out.logits.float().cpu()  # (B, num_labels)
                n = len(batch["labels"])
                loss_sum, count = loss_sum + float(out.loss) * n, count + n
                preds.append(logits[:, 0] if self.kind == "regression" else logits.argmax(-1))
                labels.append(batch["labels"].cpu())
            pred_arr, label_arr = torch.cat(preds).numpy(), torch.cat(labels).numpy()
            scores = glue_metrics(self.name, pred_arr, label_arr)
            if predictions is not None:
                predictions += [
                    Prediction(split=split, example=i, prediction=_text(p), label=_text(y))
                    for i, (p, y) in enumerate(zip(pred_arr.tolist(), label_arr.tolist(), strict=True))
                ]
            suffix = split.removeprefix("dev")  # "", "_matched", "_mismatched"
            metrics |= {f"{k}{suffix}": v for k, v in scores.items()}
        if len(loaders) > 1:  # MNLI: also the mean accuracy, as GLUE's single MNLI-m/mm summary
            metrics["accuracy"] = float(np.mean([v for k, v in metrics.items() if k.startswith("accuracy_")]))
        metrics["eval_loss"] = loss_sum / max(count, 1)
        return metrics


def _text(value: float | int) -> str:
    """A class id as its digits; a regression value with 7 significant digits (enough for Pearson, small)."""
    return str(value) if isinstance(value, int) else format(value, ".7g")


# Primary metric (picks the best epoch): the one the paper's Table 2 reports for the task.
register_task(GlueTask("cola", "classification", 2, "matthews_corr"))
register_task(GlueTask("sst2", "classification", 2, "accuracy"))
register_task(GlueTask("mrpc", "classification", 2, "accuracy"))
register_task(GlueTask("qqp", "classification", 2, "accuracy"))
register_task(GlueTask("stsb", "regression", 1, "pearson"))
register_task(GlueTask("qnli", "classification", 2, "accuracy"))
register_task(GlueTask("rte", "classification", 2, "accuracy"))
register_task(GlueTask("mnli", "classification", 3, "accuracy_matched", ("dev_matched", "dev_mismatched")))
