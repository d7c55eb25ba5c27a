"""Run one trial in a fresh Python process, so that the memory and time it records are its own.

A process that has run a trial keeps most of that trial's memory: the C allocator holds freed pages, and a
reset of the resident-memory high-water mark (VmHWM) only lowers it to the current resident size, which
still holds them. In a process that runs trial after trial, every trial after the first would record what an
earlier one left behind (measured in docs/benchmarks.md#true-costs). A fresh process per trial records
exactly what that trial needs alone, on CPU and on CUDA, and nothing it allocated can reach the next one.

    result = run_isolated(spec)          # python -m sift_bench.isolation RESULT_JSON  < spec JSON

The cost is the new interpreter's start and imports, once per trial (measured in docs/benchmarks.md). The
child reads its spec on stdin and writes its TrialResult as JSON to the path it is given; its output goes
to a log whose tail becomes the error of a child that dies without a result (killed, out of memory).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sift_bench.spec import TrialResult, TrialSpec

LOG_TAIL_LINES = 20


def failed_result(spec: TrialSpec, error: str) -> TrialResult:
    """A result for a trial whose process died before it could report (killed, out of memory, a bug)."""
    return TrialResult(trial_id=spec.trial_id, spec=spec, status="failed", error=error)


def run_isolated(spec: TrialSpec, python: str | None = None) -> TrialResult:
    """Run `spec` in a new process of `python` (default: this interpreter) and return its result.

    Never raises for a trial's failure: a child that dies without a result becomes a failed result that says
    how it died and quotes the end of its output."""
    with tempfile.TemporaryDirectory(prefix="sift-trial-") as tmp:
        out, log = Path(tmp) / "result.json", Path(tmp) / "output.log"
        with log.open("wb") as sink:
            # The child inherits the environment: CUDA_VISIBLE_DEVICES (Ray's GPU ids), HF_HUB_OFFLINE, cwd.
            proc = subprocess.run(
                [python or sys.executable, "-m", "sift_bench.isolation", str(out)],
                input=spec.model_dump_json().encode(),
                stdout=sink,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if proc.returncode == 0 and out.is_file():
            return TrialResult.model_validate_json(out.read_text())
        return failed_result(spec, died_message(proc.returncode, log))


def died_message(returncode: int, log: Path) -> str:
    """Why a trial's process ended without a result, with the last lines it printed."""
    if returncode < 0:
        name = signal.Signals(-returncode).name
        how = f"was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        how = f"exited with code {returncode} without writing a result"
    lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:] if log.is_file() else []
    tail = "\n".join(lines) if lines else "(it printed nothing)"
    return f"the trial's process {how}; its last output:\n{tail}"


def _exit_with_parent() -> None:
    """End this child if the process that started it dies (a killed Ray worker must not leave an orphan
    training on its CPUs); a daemon thread polls, since prctl(PDEATHSIG) is not portable."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m sift_bench.isolation RESULT_JSON < SPEC_JSON", file=sys.stderr)
        return 2
    _exit_with_parent()
    from sift_bench.trial import run_trial

    spec = TrialSpec.model_validate_json(sys.stdin.read())
    result = run_trial(spec, progress=False)
    target = Path(argv[0])
    tmp = target.with_suffix(".tmp")
    tmp.write_text(result.model_dump_json())
    tmp.replace(target)  # the parent sees a whole result or none
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
