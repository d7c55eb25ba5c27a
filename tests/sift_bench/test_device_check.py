"""The device check's dry run (what CI runs in place of the GPU check): the same code paths on the CPU at
tiny sizes, in a subprocess (its out-of-memory trial caps that process's address space). Checks the JSON a
GPU run would commit under benchmarks/results/ has every section, and that the OOM trial came back failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ["full", "lora", "sift_fused", "sift_hook", "floor"]
RATIOS = ["sift_fused_vs_full", "sift_fused_vs_lora", "sift_fused_vs_floor", "sift_hook_vs_full", "floor_vs_full"]


def test_device_check_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "device_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "device_check.sh"), "--dry-run", "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert json.loads(done.stdout) == report  # the same JSON on stdout
    assert report["mode"] == "dry-run" and report["device"] == "cpu" and report["ok"] is True

    assert set(report["engine"]) == {"bert-tiny", "llama-tiny-bf16"}
    for shape in report["engine"].values():
        assert shape["device"] == "cpu"
        for v in VARIANTS:
            assert shape[v]["step_seconds"] > 0, v
        assert set(RATIOS) <= set(shape["ratios"])
        assert 0 < shape["sift_fused"]["trainable"] < shape["full"]["trainable"] / 10
    assert report["engine"]["llama-tiny-bf16"]["shape"]["dtype"] == "bf16"

    assert set(report["trials"]) == {"full", "lora", "sift"}
    for method, trial in report["trials"].items():
        assert trial["status"] == "ok", (method, trial["error"])
        assert trial["device"] == "cpu" and trial["primary_metric"] == "accuracy"
        assert 0.0 <= trial["score"] <= 1.0
    assert report["trials"]["sift"]["trainable_params"] < report["trials"]["full"]["trainable_params"] / 50

    oom = report["oom"]
    assert oom["status"] == "failed" and oom["out_of_memory"] is True, oom
    assert "allocate" in oom["error"] or "out of memory" in oom["error"].lower()
