"""What measuring forgetting costs the quickstart: the same suite with `forgetting: off` and with the default.

    python benchmarks/bench_forgetting_cost.py --out benchmarks/results/bench_forgetting_cost.json   # ~10 min

Runs `sift-bench run suites/quickstart.yaml` (local Ray, as the README's main job) twice into fresh folders:
first with `forgetting: off`, then as shipped (`forgetting: auto`) with an empty forgetting cache, so the
measured cost includes the one "before" measurement a fresh machine makes. Prints one JSON object: both wall
times (the whole command), their ratio, and the forgetting values the second run recorded. The second run's
console output is saved beside --out (`.log`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]


def run(suite: Path, results: Path, cache: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "sift_bench", "run", str(suite), "--results", str(results)],
        check=True, capture_output=True, text=True, env={**os.environ, "SIFT_BENCH_CACHE": str(cache)},
    )  # fmt: skip
    return time.perf_counter() - t0, out.stdout


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default=str(REPO / "suites" / "quickstart.yaml"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-forgetting-") as d:
        tmp = Path(d)
        data = yaml.safe_load(Path(args.suite).read_text())
        off = tmp / "off.yaml"
        off.write_text(yaml.safe_dump({**data, "forgetting": "off"}, sort_keys=False))
        wall_off, _ = run(off, tmp / "off", tmp / "cache_off")
        wall_on, log = run(Path(args.suite), tmp / "on", tmp / "cache_on")
        rows = pq.read_table(tmp / "on" / "trials.parquet").to_pylist()
    report = {
        "suite": args.suite,
        "wall_seconds_off": wall_off,
        "wall_seconds_on": wall_on,
        "ratio": wall_on / wall_off,
        "trials": [
            {"method": r["method"], "budget": r["budget"], "accuracy": r["metric.accuracy"],
             "forgetting_measure": r["forgetting_measure"], "forgetting_before": r["forgetting_before"],
             "forgetting_after": r["forgetting_after"], "forgetting": r["forgetting"], "best_epoch": r["best_epoch"]}
            for r in rows
        ],
    }  # fmt: skip
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
        Path(args.out).with_suffix(".log").write_text(log)
    print(text)
    return report


if __name__ == "__main__":
    main()
