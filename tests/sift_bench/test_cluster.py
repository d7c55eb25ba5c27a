"""Joining a Ray cluster: bad and unreachable addresses fail in seconds with one line (fast); a head started
with plain `ray start --head` and token authentication on accepts a driver that has the token and refuses
one without (slow); trials packed two per GPU on a head that declares 2 GPUs, and trials sent to the one
node that has the resource they ask (slow).

Every driver that calls `ray.init` runs in a subprocess: a Ray session in the pytest process would outlive
the test. Every Ray process binds to 127.0.0.1 (see ray_cluster.py), and each test ends only its own."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from sift_bench.cluster import check_reachable, connect, parse_address, token_source
from sift_bench.errors import SiftBenchError
from sift_bench.schedulers import device_mismatch

sys.path.insert(0, str(Path(__file__).parent))
from ray_cluster import LocalCluster, free_port, local_cluster
from test_orchestrate import tiny_model_dir

REPO = Path(__file__).resolve().parents[2]

# Join, run one remote task, print its answer; a SiftBenchError becomes its message and exit code 2, as
# the CLI does.
JOIN = """
import sys, ray
from sift_bench.cluster import ray_session
from sift_bench.errors import SiftBenchError
try:
    with ray_session(sys.argv[1]):
        print("answer", ray.get(ray.remote(lambda: 6 * 7).remote()))
except SiftBenchError as e:
    print(e, file=sys.stderr)
    sys.exit(2)
"""

NODES = """
import json, sys, ray
from sift_bench.cluster import ray_session
with ray_session(sys.argv[1]):
    print(json.dumps([{"id": n["NodeID"], "name": n["NodeName"], "resources": n["Resources"]}
                      for n in ray.nodes() if n["Alive"]]))
"""

RUN = """
import sys
from sift_bench.driver import run_suite
from sift_bench.suite import load_suite
summary = run_suite(load_suite(sys.argv[1]), sys.argv[2], address=sys.argv[3])
print("ok", summary.ok, "failed", summary.failed)
"""


def python(
    code: str, *args: str, env: dict[str, str], cwd: Path = REPO, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Fast: addresses, reachability, where the token comes from.


def test_unreachable_address_fails_in_seconds_with_one_line() -> None:
    address = f"127.0.0.1:{free_port()}"  # free a moment ago: nothing listens
    t0 = time.perf_counter()
    with pytest.raises(SiftBenchError) as err:
        connect(address)  # fails before ray.init: nothing to shut down
    assert time.perf_counter() - t0 < 10
    message = str(err.value)
    assert message.startswith(f"Cannot reach the Ray cluster at {address} (")
    assert "ray start --head" in message and "\n" not in message


def test_check_reachable_accepts_a_listening_port() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        check_reachable(f"127.0.0.1:{port}", "127.0.0.1", port)  # no error


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("http://127.0.0.1:8265", "sift-bench submit SUITE --address http://127.0.0.1:8265"),
        ("ray://127.0.0.1:10001", "Ray Client ray:// is not supported"),
        ("127.0.0.1", "expected HOST:PORT"),
        ("head:port", "expected HOST:PORT"),
        ("head:70000", "expected HOST:PORT"),
    ],
)
def test_bad_addresses_name_the_form_expected(address: str, expected: str) -> None:
    with pytest.raises(SiftBenchError, match=f"--address {address}: .*{expected}".replace("?", r"\?")):
        parse_address(address)


def test_parse_address() -> None:
    assert parse_address("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert parse_address("[::1]:6379") == ("::1", 6379)


def test_token_source_follows_rays_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert token_source() == str(tmp_path / ".ray" / "auth_token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/some/file")
    assert token_source() == "/some/file"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "abc")
    assert token_source() == "$RAY_AUTH_TOKEN"


def test_a_trial_runs_only_on_the_gpus_ray_assigned() -> None:
    assert device_mismatch([], None) is None and device_mismatch([], "0,1") is None  # a CPU trial: no check
    assert device_mismatch(["1"], "1") is None and device_mismatch(["0", "2"], "0,2") is None
    message = device_mismatch(["1"], "0,1")
    assert message and "GPU id(s) 1" in message and "CUDA_VISIBLE_DEVICES is '0,1'" in message
    assert "CUDA_VISIBLE_DEVICES is unset" in (device_mismatch(["0"], None) or "")


# ---------------------------------------------------------------------------------------------------------
# Slow: real heads on this machine.


@pytest.mark.slow
def test_join_a_plain_head_with_token_authentication(tmp_path: Path) -> None:
    with local_cluster(num_cpus=1) as cluster:
        joined = python(JOIN, cluster.address, env=cluster.env)
        assert joined.returncode == 0, joined.stdout + joined.stderr
        assert "answer 42" in joined.stdout

        # The same machine without the token (no $RAY_AUTH_TOKEN*, an empty home): refused, one clear line.
        home = tmp_path / "home"
        home.mkdir()
        env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_TOKEN_PATH"} | {"HOME": str(home)}
        refused = python(JOIN, cluster.address, env=env)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "Traceback" not in refused.stderr
        assert f"The Ray cluster at {cluster.address} wants a token, and this machine has none." in refused.stderr
        assert "ray get-auth-token" in refused.stderr


def _suite(root: Path, name: str, resources: dict[str, Any], seeds: list[int]) -> Path:
    data = {
        "name": name,
        "schema_version": 1,
        "models": [str(tiny_model_dir(root))],
        "tasks": ["mrpc"],  # the embedded copy: no data folder needed
        "methods": {"classifier_only": {}, "full": {}},
        "seeds": seeds,
        "train": {"epochs": 1, "batch_size": 8, "max_seq_len": 32, "max_train_samples": 16,
                  "max_eval_samples": 16, "learning_rate": 1e-3, "precision": "fp32"},
        "resources": resources,
    }  # fmt: skip
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run(cluster: LocalCluster, suite: Path, out: Path) -> list[dict[str, Any]]:
    from sift_bench.results import read_trials

    ran = python(RUN, str(suite), str(out), cluster.address, env=cluster.env, cwd=suite.parent, timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    rows = read_trials(out)
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    return rows


def _span(row: dict[str, Any]) -> tuple[datetime, datetime]:
    # A lower bound of the time the trial held its GPU: from its start, for as long as it trained and evaluated.
    start = datetime.fromisoformat(row["started_at"])
    return start, start + timedelta(seconds=row["train_seconds"] + row["eval_seconds"])


def _most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


@pytest.mark.slow
def test_trials_pack_two_per_gpu_on_a_pool(tmp_path: Path) -> None:
    suite = _suite(tmp_path, "pool", {"cpu": 1, "gpu": 0.5}, seeds=[0, 1])
    with local_cluster(num_cpus=4, num_gpus=2) as cluster:
        rows = _run(cluster, suite, tmp_path / "results")
    assert len(rows) == 4
    # Each trial got one of the two GPU ids Ray declared, as a string, and `gpu_ids` is what the trial saw
    # in CUDA_VISIBLE_DEVICES (Ray sets it to exactly the assigned ids).
    for row in rows:
        assert isinstance(row["gpu_ids"], list) and len(row["gpu_ids"]) == 1, row["gpu_ids"]
        assert row["gpu_ids"][0] in ("0", "1")
        assert isinstance(row["node"], str) and row["node"]
    by_gpu = Counter(row["gpu_ids"][0] for row in rows)
    assert set(by_gpu) == {"0", "1"}, by_gpu
    for gpu in by_gpu:
        assert _most_at_once([_span(r) for r in rows if r["gpu_ids"] == [gpu]]) <= 2


@pytest.mark.slow
def test_trials_run_on_the_node_that_has_their_resource(tmp_path: Path) -> None:
    # Only the worker has GPUs (and a `worker_only` marker), so trials that ask a GPU can run nowhere else.
    suite = _suite(tmp_path, "two-nodes", {"cpu": 1, "gpu": 0.5}, seeds=[0])
    out = tmp_path / "results"
    with local_cluster(num_cpus=1, loopback=False) as cluster:
        cluster.add_worker(num_cpus=2, num_gpus=1, resources={"worker_only": 4})
        listed = python(NODES, cluster.address, env=cluster.env)
        assert listed.returncode == 0, listed.stdout + listed.stderr
        nodes = json.loads(listed.stdout.strip().splitlines()[-1])
        assert len(nodes) == 2, nodes
        worker = next(n for n in nodes if "worker_only" in n["resources"])
        assert worker["name"] == "worker-1"
        rows = _run(cluster, suite, out)
    assert len(rows) == 2
    for row in rows:
        assert row["node"] in (worker["id"], worker["name"]), (row["node"], worker)  # Ray's node id or name
        assert row["gpu_ids"] == ["0"]
    # The driver alone wrote the results: the tables it owns and nothing a trial left behind.
    written = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert written <= {"trials.parquet", "evals.parquet", "predictions.parquet", "manifest.json"}, written
    assert {"trials.parquet", "evals.parquet", "manifest.json"} <= written
    assert not list(suite.parent.glob("*.parquet")), "a trial wrote beside the suite"
