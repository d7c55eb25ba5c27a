"""Run by test_sandbox_locations.py under another interpreter (a venv under /tmp, a Python under a 0700
directory): runs correct and hostile programs through the sandbox and prints one JSON object.

argv: MODE ("detect" or a mode name), TARGET (a root-owned 0755 dir outside /tmp that a sample tries to
write into), PORT (a loopback listener a sample tries to reach).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import psutil

from sift_bench.evaluators.sandbox import (
    Isolation,
    SandboxLimits,
    _mount_plan,  # the test checks the plan's effect
    base_interpreter,
    detect_isolation,
    run_python,
)

FAST = SandboxLimits(timeout_s=5.0)
BOMB = (  # bounded: a containment failure makes 300 sleeping processes, not a dead machine
    "import os, time\n"
    "for n in range(300):\n"
    "    try:\n"
    "        pid = os.fork()\n"
    "    except OSError as e:\n"
    "        raise SystemExit(f'fork refused after {n}: {e}')\n"
    "    if pid == 0:\n"
    "        time.sleep(30)\n"
    "        os._exit(0)\n"
)


def survivors(marker: str) -> int:
    n = 0
    for p in psutil.process_iter(["cmdline"]):
        try:
            n += marker in (p.info["cmdline"] or [])
        except psutil.Error:
            continue
    return n


def main(mode: str, target: str, port: int) -> dict[str, Any]:
    iso = detect_isolation() if mode == "detect" else Isolation.for_mode(mode)  # type: ignore[arg-type]
    out: dict[str, Any] = {"mode": iso.mode, "executable": sys.executable, "runs_on": base_interpreter().exe}
    out["base_prefix"] = sys.base_prefix
    ok = run_python("import json, math\nassert json.loads('[6]') == [math.gcd(12, 18)]\nprint('fine')", FAST, iso)
    out["correct"], out["correct_output"] = ok.result, ok.output
    out["wrong"] = run_python("assert 1 + 1 == 3", FAST, iso).result
    out["loop"] = run_python("while True:\n    pass", SandboxLimits(timeout_s=1.0), iso).result
    if not (iso.pid_namespace or iso.uid_drop):
        return out  # never hostile code without real isolation
    sentinel = subprocess.Popen(["sleep", "30"])
    try:
        kill = run_python("import os, signal, time\nos.kill(-1, signal.SIGKILL)\ntime.sleep(0.2)", FAST, iso)
        out["sentinel_alive"] = sentinel.poll() is None
        out["kill_survivors"] = survivors(kill.marker)
    finally:
        sentinel.kill()
        sentinel.wait()
    if iso.uid_drop:
        out["write"] = run_python(f"open({target + '/pwned.txt'!r}, 'w').write('x')", FAST, iso).result
        bomb = run_python(BOMB, FAST, iso)
        out["bomb"], out["bomb_survivors"] = bomb.result, survivors(bomb.marker)
    prefix = base_interpreter().dirs[0]
    if iso.uid_drop or prefix in _mount_plan(iso.mode)[0]:  # else (userns, not exposed) the write would work
        # Exposed read-only (and not owned by the sandbox uid): a sample cannot plant code in the interpreter.
        out["plant"] = run_python(f"open({prefix + '/planted.py'!r}, 'w')", FAST, iso).result
    if iso.network:
        out["connect"] = run_python(
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), 1)", FAST, iso
        ).result
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
