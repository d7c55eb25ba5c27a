"""Real Ray nodes for tests: a head (`ray start --head`) and optional worker nodes on this machine, with
token authentication on as Ray's defaults give it, and a cleanup that ends exactly the processes they
started (never `ray stop`: it would stop every Ray on a shared machine).

Each cluster gets a private temp dir (short: Ray's socket paths must stay under 107 bytes) and its own
token file. The token is named by RAY_AUTH_TOKEN_PATH, which plain `ray start --head` reads like
~/.ray/auth_token, so the user's own token is never read or written. `cluster.env` is the environment a
driver needs (the token path, the temp dir); pass it to the subprocess that joins.

Addresses: with `loopback=True` (one node) Ray's single-machine switch is off, so every process uses
127.0.0.1 and the GCS listens there only. Ray cannot join a second node in that mode; with
`loopback=False` Ray maps the 127.0.0.1 it is given to this machine's own interface address, which
still keeps all traffic on this machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalCluster:
    """A head on 127.0.0.1:`port` and the worker nodes added to it, all marked by `tmp`."""

    tmp: Path
    port: int
    env: dict[str, str]
    loopback: bool
    workers: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def token_path(self) -> Path:
        return self.tmp / "auth_token"

    def start_head(self, num_cpus: int = 2, num_gpus: int = 0, resources: dict[str, float] | None = None) -> None:
        self._start(["--head", "--port", str(self.port), "--node-ip-address", "127.0.0.1", "--node-name", "head",
                     "--include-dashboard", "false", "--ray-client-server-port", str(free_port())],
                    num_cpus, num_gpus, resources)  # fmt: skip

    def add_worker(self, num_cpus: int = 1, num_gpus: int = 0, resources: dict[str, float] | None = None) -> None:
        """A second raylet on this machine joined to the head; `resources` tell it apart (e.g. {"worker_only": 4})."""
        if self.loopback:
            raise ValueError("Ray joins no second node in loopback mode: make the cluster with loopback=False")
        # `ray start --address` does not pick up the token by itself (only the head and ray.init do). Names
        # tell the nodes apart: on one machine they share an IP address.
        self.workers += 1
        name = f"worker-{self.workers}"
        self._start(["--address", self.address, "--node-name", name], num_cpus, num_gpus, resources,
                    {"RAY_AUTH_MODE": "token"})  # fmt: skip

    def _start(
        self,
        role: list[str],
        num_cpus: int,
        num_gpus: int,
        resources: dict[str, float] | None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        cmd = ["ray", "start", *role, "--num-cpus", str(num_cpus), "--num-gpus", str(num_gpus),
               "--temp-dir", str(self.tmp), "--disable-usage-stats",
               # Fixed defaults (52365, ...) would clash between two nodes on one machine.
               "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
               "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port())]  # fmt: skip
        if resources:
            cmd += ["--resources", json.dumps(resources)]
        env = {**self.env, **(extra_env or {})}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{done.stdout}\n{done.stderr}")

    def stop(self) -> None:
        kill_ray_processes(self.tmp)


@contextmanager
def local_cluster(
    num_cpus: int = 2,
    num_gpus: int = 0,
    resources: dict[str, float] | None = None,
    loopback: bool = True,
    token: bool = True,
) -> Iterator[LocalCluster]:
    """A running head (plain `ray start --head` with the given resources); stopped, with its temp dir gone,
    when the block ends. `token=False`: no token anywhere this cluster looks (authentication stays off)."""
    tmp = Path(tempfile.mkdtemp(prefix="sbc", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    env.update({"RAY_TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"})
    if token:
        (tmp / "auth_token").write_text(secrets.token_hex(32))
        env["RAY_AUTH_TOKEN_PATH"] = str(tmp / "auth_token")
    else:
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        env["HOME"] = str(tmp)  # hides ~/.ray/auth_token from this cluster
    if loopback:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    cluster = LocalCluster(tmp=tmp, port=free_port(), env=env, loopback=loopback)
    try:
        cluster.start_head(num_cpus, num_gpus, resources)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def kill_ray_processes(tmp: Path) -> None:
    """End the Ray processes of one cluster (and only those): the ones naming `tmp` on their command line,
    started with RAY_TMPDIR=tmp, or holding files under `tmp` open (Ray's agents rewrite argv and environ
    with setproctitle, but keep their logs there open)."""
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            mine = any(str(tmp) in part for part in proc.info["cmdline"] or [])
            mine = mine or proc.environ().get("RAY_TMPDIR") == str(tmp)
            mine = mine or any(f.path.startswith(str(tmp)) for f in proc.open_files())
            if mine and proc.pid != os.getpid():
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
