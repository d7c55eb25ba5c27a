"""Send a whole suite run to a Ray cluster as a Ray Job, and follow it: `sift-bench submit/status/logs`.

The job runs `python -m sift_bench run SUITE` on the cluster with the working dir uploaded, so the
driver, its schedulers and the results store all live there. Built on Ray's public
`ray.job_submission.JobSubmissionClient`.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sift_bench.cluster import read_token
from sift_bench.errors import SiftBenchError

FINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")


def auth_headers() -> dict[str, str]:
    """The cluster's token (`sift_bench.cluster.read_token`) as a bearer header; none without a token. A
    cluster without authentication ignores it."""
    token = read_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def job_client(address: str) -> Any:
    """A JobSubmissionClient for the job server at `address` (http://HEAD:8265), or one clear error."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except SiftBenchError:
        raise
    except Exception as e:  # connection refused, bad URL, no dashboard on the head, refused token
        raise SiftBenchError(
            f"Cannot reach the Ray job server at {address}: {e}. Start the head with `ray start --head` "
            "(dashboard on port 8265) and pass its address, e.g. --address http://HEAD:8265."
        ) from None


def submit_suite(
    suite_path: str | Path,
    address: str,
    *,
    results_dir: str | None = None,
    working_dir: str | Path = ".",
    max_failures: int = 1,
    extra_args: list[str] | None = None,
) -> str:
    """Submit `sift-bench run SUITE` as a Ray Job with `working_dir` uploaded; return the job id."""
    from sift_bench.suite import load_suite

    load_suite(suite_path)  # a bad suite fails here, not on the cluster
    wd = Path(working_dir).resolve()
    suite_abs = Path(suite_path).resolve()
    try:
        rel = suite_abs.relative_to(wd)
    except ValueError:
        raise SiftBenchError(
            f"The suite {suite_path} is outside the working dir {wd} that is uploaded to the cluster; "
            "pass --working-dir pointing at a folder that contains it."
        ) from None
    # `python -m sift_bench` runs the uploaded copy of the package when the working dir holds one.
    args = ["python", "-m", "sift_bench", "run", rel.as_posix(), "--max-failures", str(max_failures)]
    if results_dir:
        args += ["--results", results_dir]
    args += extra_args or []
    runtime_env = {"working_dir": str(wd), "excludes": [".git", "results/", "*.parquet", "__pycache__"]}
    client = job_client(address)
    try:
        return client.submit_job(entrypoint=shlex.join(args), runtime_env=runtime_env)
    except Exception as e:
        raise SiftBenchError(f"Ray refused the job: {e}") from None


def job_status(address: str, job_id: str) -> dict[str, Any]:
    """The job's status, message, entrypoint and times."""
    client = job_client(address)
    try:
        info = client.get_job_info(job_id)
    except Exception as e:
        raise SiftBenchError(f"No job '{job_id}' on {address}: {e}") from None
    return {
        "job_id": job_id,
        "status": str(getattr(info.status, "value", info.status)),
        "message": info.message,
        "entrypoint": info.entrypoint,
        "start_time": info.start_time,
        "end_time": info.end_time,
    }


def job_logs(address: str, job_id: str, follow: bool = False, write: Callable[[str], None] = print) -> None:
    """Pass the job's logs (the driver's output) to `write`; `follow`: until the job ends."""
    client = job_client(address)
    try:
        if not follow:
            write(client.get_job_logs(job_id))
            return
        import asyncio

        async def tail() -> None:
            async for chunk in client.tail_job_logs(job_id):
                write(chunk)

        asyncio.run(tail())
    except Exception as e:
        raise SiftBenchError(f"Cannot read the logs of job '{job_id}' on {address}: {e}") from None


def wait_for_job(address: str, job_id: str, timeout_s: float = 600, poll_s: float = 2.0) -> str:
    """Block until the job ends; return its final status (SUCCEEDED, FAILED, STOPPED)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = job_status(address, job_id)["status"]
        if status in FINAL_STATES:
            return status
        if time.monotonic() > deadline:
            raise SiftBenchError(f"Job {job_id} still {status} after {timeout_s:.0f} s.")
        time.sleep(poll_s)
