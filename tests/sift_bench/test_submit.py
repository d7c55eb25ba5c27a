"""A real Ray cluster on this machine (`ray start --head` on 127.0.0.1, non-default ports), a suite sent
to it with `sift-bench submit`, followed with `status` / `logs`, and its tables checked. The cluster is
always stopped afterwards: every process started from this test's private Ray temp dir is ended (by pid,
not `ray stop`, which would also stop other Ray instances on a shared machine)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sift_bench.expand import expand
from sift_bench.jobs import job_status, wait_for_job
from sift_bench.results import read_trials
from sift_bench.suite import load_suite

sys.path.insert(0, str(Path(__file__).parent))
from test_orchestrate import kill_ray_processes, tiny_suite

# Non-default ports so a developer's own cluster (6379 / 8265) is never touched.
GCS_PORT, DASHBOARD_PORT = 6391, 8291


@pytest.mark.slow
def test_submit_to_a_real_head_node(tmp_path: Path) -> None:
    ray_tmp = Path(tempfile.mkdtemp(prefix="sbh", dir="/tmp"))  # short: socket paths
    # RAY_TMPDIR marks every process of this cluster, so the cleanup ends exactly those.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_TMPDIR": str(ray_tmp)}
    address = f"http://127.0.0.1:{DASHBOARD_PORT}"
    head = [
        "ray", "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(GCS_PORT),
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(DASHBOARD_PORT), "--include-dashboard", "true",
        "--dashboard-agent-listen-port", "52391", "--min-worker-port", "11300", "--max-worker-port", "11500",
        "--num-cpus", "2", "--temp-dir", str(ray_tmp), "--disable-usage-stats",
    ]  # fmt: skip
    try:
        started = subprocess.run(head, env=env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, started.stdout + started.stderr

        work = tmp_path / "work"
        work.mkdir()
        suite_path = tiny_suite(work, "remote", {"classifier_only": {}, "full": {}}, seeds=[0])
        out = tmp_path / "remote-results"  # absolute: the job writes on the (same-machine) head node
        sub = subprocess.run(
            [sys.executable, "-m", "sift_bench", "submit", suite_path.name, "--address", address,
             "--working-dir", str(work), "--results", str(out)],
            cwd=work, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert sub.returncode == 0, sub.stdout + sub.stderr
        job_id = sub.stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"raysubmit_\w+", job_id), sub.stdout

        final = wait_for_job(address, job_id, timeout_s=420)
        logs = subprocess.run(
            [sys.executable, "-m", "sift_bench", "logs", job_id, "--address", address],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert final == "SUCCEEDED", logs.stdout + logs.stderr
        assert "Suite remote: 2 trials" in logs.stdout and "2 ok, 0 failed" in logs.stdout
        status = subprocess.run(
            [sys.executable, "-m", "sift_bench", "status", job_id, "--address", address],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "status: SUCCEEDED" in status.stdout
        assert job_status(address, job_id)["entrypoint"].startswith("python -m sift_bench run remote.yaml")

        rows = read_trials(out)
        assert sorted(r["trial_id"] for r in rows) == sorted(s.trial_id for s in expand(load_suite(suite_path)))
        assert all(r["status"] == "ok" for r in rows) and (out / "evals.parquet").exists()
        assert (out / "manifest.json").exists()
    finally:
        kill_ray_processes(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_submit_errors_before_contacting_anything(tmp_path: Path) -> None:
    from sift_bench.errors import SiftBenchError
    from sift_bench.jobs import submit_suite

    suite_path = tmp_path / "s.yaml"
    suite_path.write_text("name: s\nschema_version: 1\nmodels: [m]\ntasks: [mrpc]\nmethods: [full]\n")
    elsewhere = tmp_path / "wd"
    elsewhere.mkdir()
    with pytest.raises(SiftBenchError, match="outside the working dir"):
        submit_suite(suite_path, "http://127.0.0.1:1", working_dir=elsewhere)
    with pytest.raises(SiftBenchError, match=r"Cannot reach the Ray job server at http://127\.0\.0\.1:1"):
        submit_suite(suite_path, "http://127.0.0.1:1", working_dir=tmp_path)
    suite_path.write_text("name: s\nschema_version: 1\nmodels: [m]\ntasks: [mrpc]\nmethods: [loar]\n")
    with pytest.raises(SiftBenchError, match="Did you mean 'lora'"):  # a bad suite never leaves the machine
        submit_suite(suite_path, "http://127.0.0.1:1", working_dir=tmp_path)
