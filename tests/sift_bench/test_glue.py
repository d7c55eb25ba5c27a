"""GLUE: metrics against hand-computed values, the TSV loader on the committed slices (and on the full files
when SIFT_BENCH_TEST_GLUE names them), the embedded copy, and the hub fallback (served from local files through
a patched `datasets.load_dataset`)."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import sift_bench.tasks.glue  # noqa: F401  (registers the tasks)
from sift_bench.errors import SiftBenchError
from sift_bench.evaluators.glue import glue_metrics
from sift_bench.tasks.base import TASKS
from sift_bench.tasks.glue import EMBEDDED, FORMATS

# ---------------------------------------------------------------------------------------------- metrics


def test_accuracy_f1_by_hand():
    preds, labels = np.array([1, 0, 1, 1]), np.array([1, 0, 0, 1])
    # tp=2 fp=1 fn=0: precision 2/3, recall 1, F1 = 2*(2/3)/(5/3) = 0.8; accuracy 3/4
    m = glue_metrics("mrpc", preds, labels)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(0.8)
    assert m["combined_score"] == pytest.approx(0.775)


def test_matthews_by_hand():
    # tp=2 tn=1 fp=1 fn=0: (2*1 - 1*0) / sqrt(3*2*2*1) = 2/sqrt(12)
    m = glue_metrics("cola", np.array([1, 0, 1, 1]), np.array([1, 0, 0, 1]))
    assert m == {"matthews_corr": pytest.approx(2 / 12**0.5)}


def test_pearson_spearman_by_hand():
    # x=[1,2,3], y=[1,2,4]: cov-sum 3, |dx|=sqrt(2), |dy|=sqrt(42)/3 -> r = 9/sqrt(84); same ranks -> rho 1
    m = glue_metrics("stsb", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert m["pearson"] == pytest.approx(9 / 84**0.5)
    assert m["spearman"] == pytest.approx(1.0)
    assert m["combined_score"] == pytest.approx((9 / 84**0.5 + 1) / 2)


def test_constant_prediction_has_zero_correlation_not_nan():
    m = glue_metrics("stsb", np.array([2.0, 2.0, 2.0]), np.array([1.0, 2.0, 4.0]))
    assert m["pearson"] == 0.0 and m["spearman"] == 0.0


def test_evaluate_names_mnli_splits_and_averages():
    task = TASKS.get("mnli")

    def loader(preds: list[int], labels: list[int]):
        logits = torch.nn.functional.one_hot(torch.tensor(preds), 3).float()
        return [{"labels": torch.tensor(labels), "logits": logits}]

    def forward(batch):
        return SimpleNamespace(logits=batch["logits"], loss=torch.tensor(0.5))

    m = task.evaluate(forward, {"dev_matched": loader([0, 1, 2, 2], [0, 1, 2, 0]),
                                "dev_mismatched": loader([0, 0], [0, 1])})  # fmt: skip
    assert m == {"accuracy_matched": 0.75, "accuracy_mismatched": 0.5, "accuracy": 0.625, "eval_loss": 0.5}


# ----------------------------------------------------------------------------------------------- loader

# (task, split, rows, label counts) of the committed slices: tests/data/glue/README.md.
SLICES = [
    ("cola", "train", 300, {0: 105, 1: 195}),
    ("cola", "dev", 300, {0: 103, 1: 197}),
    ("sst2", "train", 300, {0: 149, 1: 151}),
    ("sst2", "dev", 300, {0: 145, 1: 155}),
    ("mrpc", "train", 300, {0: 86, 1: 214}),
    ("mrpc", "dev", 300, {0: 91, 1: 209}),
    ("stsb", "train", 300, None),
    ("stsb", "dev", 300, None),
    ("qnli", "dev", 300, {0: 147, 1: 153}),
    ("rte", "train", 300, {0: 141, 1: 159}),
    ("rte", "dev", 277, {0: 146, 1: 131}),
]
# The same for the full files: shared/data/glue/README.md and the known GLUE distributions.
FULL_FILES = [
    ("cola", "train", 8551, {1: 6023, 0: 2528}),
    ("cola", "dev", 1043, {0: 322, 1: 721}),
    ("sst2", "train", 67349, {0: 29780, 1: 37569}),
    ("sst2", "dev", 872, {0: 428, 1: 444}),
    ("mrpc", "train", 3668, {1: 2474, 0: 1194}),
    ("mrpc", "dev", 408, {0: 129, 1: 279}),
    ("stsb", "train", 5749, None),
    ("stsb", "dev", 1500, None),
    ("qnli", "dev", 5463, {0: 2702, 1: 2761}),
    ("rte", "train", 2490, {0: 1249, 1: 1241}),
    ("rte", "dev", 277, {0: 146, 1: 131}),
]
# sha256 of the embedded files (sift_bench/data/glue/README.md): the official files, SST-2 train cut to 4000 rows.
EMBEDDED_SHA256 = {
    ("MRPC", "train"): "69abcedee3cf738c6ce58d772e43e1b7cdf5b4edee4aceda459c0d9f4e5599f3",
    ("MRPC", "dev"): "9e8f284788040f7c9ecde2e1b3c07237c756f926bd9ef8548ef5d34b56f69f17",
    ("RTE", "train"): "41e3a9b063433392343fad9e962cf2f58b681c78d8f71592f4186f0837246c5c",
    ("RTE", "dev"): "80230dfa1347282e7b532b06a1004a76a710087541189bf874223ddf0e3819fb",
    ("SST-2", "train"): "ff2a277b0ea2b260df5842ab0c027c2b82fdc1dffacb8da0ca3f30781eb90564",  # first 4000 rows
    ("SST-2", "dev"): "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
    # Shipped for the zero-shot STS-B forgetting measure (sift_bench.forgetting); its train split is not.
    ("STS-B", "dev"): "fe7dc0632a5033562f3cadff991f6e8d9b9b6311861660e78c3c82eb7db67f59",
}
EMBEDDED_LINES = {("SST-2", "train"): 4001}  # the header and the first 4000 rows; the rest are whole files


def check_rows(data: list[dict], name: str, rows: int, labels: dict | None) -> None:
    """Row count, non-empty text, a second sentence exactly for pair tasks, and the label counts."""
    assert len(data) == rows
    assert all(isinstance(r["text_a"], str) and r["text_a"] for r in data)
    pair = FORMATS[name].text[1] is not None
    assert all((r["text_b"] is not None) == pair for r in data)
    if labels is None:  # STS-B: similarity scores in [0, 5]
        scores = [r["label"] for r in data]
        assert min(scores) == 0.0 and max(scores) == 5.0 and all(isinstance(s, float) for s in scores)
    else:
        assert dict(Counter(r["label"] for r in data)) == labels


@pytest.mark.parametrize("name,split,rows,labels", SLICES)
def test_tsv_loader_on_every_layout(glue_dir: Path, name: str, split: str, rows: int, labels: dict | None):
    check_rows(TASKS.get(name).load(str(glue_dir), split), name, rows, labels)


def test_full_glue_files(full_glue_dir: Path, glue_dir: Path):
    """Only with SIFT_BENCH_TEST_GLUE: every full file, the slices as their first rows, the embedded copy."""
    for name, split, rows, labels in FULL_FILES:
        full = TASKS.get(name).load(str(full_glue_dir), split)
        check_rows(full, name, rows, labels)
        assert TASKS.get(name).load(str(glue_dir), split) == full[:300], f"{name}/{split}: slice is not a prefix"
    for (folder, split), digest in EMBEDDED_SHA256.items():
        full_bytes = (full_glue_dir / folder / f"{split}.tsv").read_bytes()
        lines = EMBEDDED_LINES.get((folder, split))
        if lines is not None:  # a slice: the header and the first rows of the official file, byte for byte
            full_bytes = b"".join(full_bytes.splitlines(keepends=True)[:lines])
        assert hashlib.sha256(full_bytes).hexdigest() == digest, f"{folder}/{split}.tsv differs from the embedded copy"


def test_max_samples_takes_the_first_rows(glue_dir: Path):
    rte = TASKS.get("rte")
    assert rte.load(str(glue_dir), "dev", 5) == rte.load(str(glue_dir), "dev")[:5]


def test_env_var_is_a_data_source(glue_dir: Path, monkeypatch):
    monkeypatch.setenv("SIFT_BENCH_DATA", str(glue_dir))
    assert len(TASKS.get("cola").load(None, "dev")) == 300


@pytest.mark.parametrize("folder", ["MRPC", "RTE"])
def test_embedded_copy_is_whole_and_used_without_a_data_dir(glue_dir: Path, folder: str, monkeypatch):
    monkeypatch.delenv("SIFT_BENCH_DATA", raising=False)
    name = folder.lower()
    for split in ("train", "dev"):
        embedded = (EMBEDDED / folder / f"{split}.tsv").read_bytes()
        assert hashlib.sha256(embedded).hexdigest() == EMBEDDED_SHA256[folder, split]
        rows = TASKS.get(name).load(None, split)  # no data_dir, no $SIFT_BENCH_DATA: the embedded copy
        assert rows[:300] == TASKS.get(name).load(str(glue_dir), split)  # the slices are its first rows


def test_embedded_sst2_slice_serves_only_what_it_holds(monkeypatch):
    monkeypatch.delenv("SIFT_BENCH_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub must be refused at once, not retried
    for split in ("train", "dev"):
        embedded = (EMBEDDED / "SST-2" / f"{split}.tsv").read_bytes()
        assert hashlib.sha256(embedded).hexdigest() == EMBEDDED_SHA256["SST-2", split]
    sst2 = TASKS.get("sst2")
    assert len(sst2.load(None, "dev")) == 872  # the whole dev set ships
    rows = sst2.load(None, "train", 4000)
    assert len(rows) == 4000 and Counter(r["label"] for r in rows) == {1: 2193, 0: 1807}
    # More than the slice holds (or all of it) must not silently come back as 4000 rows: it goes to the hub,
    # and the error says why the slice was passed over.
    for wanted in (None, 4001):
        with pytest.raises(SiftBenchError, match="slice holds its first 4000 rows; set max_train_samples <= 4000"):
            sst2.load(None, "train", wanted)


def _fake_hub(glue_dir: Path, calls: list):
    """load_dataset that serves the hub's column names, built from the local TSVs."""
    hub_cols = {"cola": ("sentence", None), "rte": ("sentence1", "sentence2"), "stsb": ("sentence1", "sentence2")}

    def load_dataset(path: str, name: str, split: str):
        calls.append((path, name, split))
        local = TASKS.get(name).load(str(glue_dir), split.replace("validation", "dev"))
        a, b = hub_cols[name]
        return [{a: r["text_a"], **({b: r["text_b"]} if b else {}), "label": r["label"], "idx": i}
                for i, r in enumerate(local)]  # fmt: skip

    return load_dataset


@pytest.mark.parametrize(("name", "split"), [("cola", "dev"), ("stsb", "train")])
def test_hub_fallback_when_no_local_file(glue_dir: Path, tmp_path: Path, monkeypatch, name: str, split: str):
    import datasets

    monkeypatch.delenv("SIFT_BENCH_DATA", raising=False)
    calls: list = []
    monkeypatch.setattr(datasets, "load_dataset", _fake_hub(glue_dir, calls))
    rows = TASKS.get(name).load(str(tmp_path), split, 10)  # empty folder, not embedded: goes to the hub
    assert calls == [("nyu-mll/glue", name, split.replace("dev", "validation"))]
    assert rows == TASKS.get(name).load(str(glue_dir), split, 10)


def test_embedded_stsb_dev_is_used_without_a_data_dir(glue_dir: Path, monkeypatch):
    monkeypatch.delenv("SIFT_BENCH_DATA", raising=False)
    digest = hashlib.sha256((EMBEDDED / "STS-B" / "dev.tsv").read_bytes()).hexdigest()
    assert digest == EMBEDDED_SHA256["STS-B", "dev"]
    rows = TASKS.get("stsb").load(None, "dev")
    assert len(rows) == 1500 and rows[:300] == TASKS.get("stsb").load(str(glue_dir), "dev")


def test_no_data_anywhere_is_a_clear_error(tmp_path: Path, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setenv("SIFT_BENCH_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(SiftBenchError) as e:
        TASKS.get("qqp").load(str(tmp_path), "train")
    msg = str(e.value)
    assert "'qqp'" in msg and str(tmp_path / "QQP" / "train.tsv") in msg and str(tmp_path / "env") in msg
    assert "hub unreachable" in msg and "--data-dir" in msg


def test_unknown_split_and_task():
    with pytest.raises(SiftBenchError, match="no split 'test'"):
        TASKS.get("rte").load(None, "test")
    with pytest.raises(SiftBenchError, match="Did you mean 'mrpc'"):
        TASKS.get("mrcp")


def test_collate_tokenizes_pairs_and_labels(glue_dir: Path):
    from transformers import AutoTokenizer

    from sift_bench.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("minilm-l6").path, local_files_only=True)
    rows = TASKS.get("mrpc").load(str(glue_dir), "dev", 3)
    batch = TASKS.get("mrpc").collate(tok, 16)(rows)
    assert batch["input_ids"].shape[0] == 3 and batch["input_ids"].shape[1] <= 16
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [r["label"] for r in rows]
    assert (batch["token_type_ids"] == 1).any()  # the second sentence is there
    stsb = TASKS.get("stsb").collate(tok, 16)(TASKS.get("stsb").load(str(glue_dir), "dev", 2))
    assert stsb["labels"].dtype == torch.float32


def test_mnli_and_qqp_tsv_layouts(tmp_path: Path):
    """MNLI and QQP are not in the GLUE copy: check their classic layouts on small files written here."""
    mnli = tmp_path / "MNLI"
    mnli.mkdir()
    cols = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
            "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "label2", "label3",
            "label4", "label5", "gold_label"]  # fmt: skip
    rows = [[str(i), "1", "1n", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)", f"premise {i}", f"hyp {i}",
             g, g, g, g, g, g] for i, g in enumerate(["neutral", "contradiction", "entailment"])]  # fmt: skip
    (mnli / "dev_mismatched.tsv").write_text("\n".join("\t".join(r) for r in [cols, *rows]) + "\n")
    got = TASKS.get("mnli").load(str(tmp_path), "dev_mismatched")
    assert [r["label"] for r in got] == [1, 2, 0] and got[0]["text_b"] == "hyp 0"

    qqp = tmp_path / "QQP"
    qqp.mkdir()
    lines = ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", "0\t1\t2\tWhy?\tHow?\t0",
             "1\t3\t4\tbroken row", "2\t5\t6\tWho?\tWhom?\t1"]  # fmt: skip
    (qqp / "train.tsv").write_text("\n".join(lines) + "\n")
    got = TASKS.get("qqp").load(str(tmp_path), "train")
    assert [(r["text_a"], r["label"]) for r in got] == [("Why?", 0), ("Who?", 1)]  # short row skipped


def test_mnli_hub_split_names(tmp_path: Path, monkeypatch):
    import datasets

    calls: list = []

    def load_dataset(path: str, name: str, split: str):
        calls.append(split)
        return [{"premise": "p", "hypothesis": "h", "label": 2, "idx": 0}]

    monkeypatch.delenv("SIFT_BENCH_DATA", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    rows = TASKS.get("mnli").load(str(tmp_path), "dev_matched")
    assert calls == ["validation_matched"] and rows == [{"text_a": "p", "text_b": "h", "label": 2}]
