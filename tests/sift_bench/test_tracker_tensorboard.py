"""TensorBoard (the `tensorboard` extra): event files read back with TensorBoard's own EventAccumulator hold
the Parquet values (as float32 scalars, TensorBoard's type), the params as HParams, the tags and errors as
text; re-exporting rewrites each trial's folder in place; live logging gives the same folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util
from tracked_results import ERROR, expected_tags, final_metrics, make_results, parquet_view

from sift_bench.trackers import LiveTracking, export
from sift_bench.trackers.records import load_records, param_text


def read_back(folder: Path) -> dict[str, Any]:
    """One trial folder as TensorBoard reads it: scalars, hparams, text."""
    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    text = {t.split("/")[0]: tensor_util.make_ndarray(acc.Tensors(t)[0].tensor_proto).item().decode()
            for t in acc.Tags()["tensors"] if t.endswith("/text_summary")}  # fmt: skip
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content)
    hparams = {k: v.string_value if v.HasField("string_value") else v.number_value if v.HasField("number_value")
               else v.bool_value for k, v in start.session_start_info.hparams.items()}  # fmt: skip
    table = dict(line.strip("| ").split(" | ") for line in text["tags"].splitlines()[2:])
    return {"scalars": scalars, "hparams": hparams, "tags": table, "text": text}


def f32(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """TensorBoard's scalars are float32: the Parquet value rounded so, exactly."""
    return [(step, float(np.float32(v))) for step, v in points]


def assert_folders_hold(results: Path, logdir: Path) -> None:
    rows, curves = parquet_view(results)
    suite = logdir / "tracked"
    assert sorted(p.name for p in suite.iterdir()) == sorted(rows)  # a folder per trial, nothing else
    records = {r.trial_id: r for r in load_records(results)}
    for tid, row in rows.items():
        assert len(list((suite / tid).iterdir())) == 1  # one event file: rewritten, not appended to
        got = read_back(suite / tid)
        want = {k: f32(v) for k, v in curves[tid].items()}  # held-out metrics included
        want |= {k: f32([(row["best_epoch"], v)]) for k, v in final_metrics(row).items()}
        assert got["scalars"] == want
        assert got["tags"] == {k: v for k, v in records[tid].tags.items() if k != "error"}
        assert {k: got["tags"][k] for k in expected_tags(row)} == expected_tags(row)
        for key, value in records[tid].params.items():
            want = value if isinstance(value, str | int | float) and not isinstance(value, bool) else param_text(value)
            assert got["hparams"][key] == (float(value) if isinstance(value, bool) else want), key
        assert got["hparams"]["train.learning_rate"] == row["train.learning_rate"]
        assert got["hparams"]["status"] == row["status"]
        if row["status"] != "ok":
            assert ERROR in got["text"]["error"]


def test_export_reads_back_and_reexport_rewrites(tmp_path: Path) -> None:
    results = make_results(tmp_path / "tracked")
    logdir = tmp_path / "tb"
    assert export(results, "tensorboard", str(logdir)) == 4
    assert_folders_hold(results, logdir)
    make_results(results, fail=False)  # the failed trial reruns and passes: its folder now says so
    export(results, "tensorboard", str(logdir))
    assert_folders_hold(results, logdir)


def test_live_tracking_writes_the_same_folders(tmp_path: Path) -> None:
    logdir = tmp_path / "tb"
    warnings: list[str] = []
    results = make_results(tmp_path / "tracked", on_recorded=LiveTracking(f"tensorboard={logdir}", warnings.append))
    assert warnings == []
    assert_folders_hold(results, logdir)
