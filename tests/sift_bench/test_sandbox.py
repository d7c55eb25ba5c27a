"""The sandbox contains what it claims: each hostile program below runs for real, in a subprocess.

Hostile programs only run when the machine gives real isolation (a PID namespace or a dropped uid):
under "rlimits" alone, `os.kill(-1, ...)` from a sample would kill every process the test user owns.
Each containment test asserts the program failed AND that the harm did not happen (no survivor
process, no file, no connection), and skips, naming the missing isolation, where the OS cannot give it.
"""

from __future__ import annotations

import builtins
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sift_bench.errors import SiftBenchError
from sift_bench.evaluators import sandbox
from sift_bench.evaluators.sandbox import Isolation, SandboxLimits, detect_isolation, run_python

REPO = Path(__file__).resolve().parents[2]
FAST = SandboxLimits(timeout_s=3.0)


@pytest.fixture(scope="module")
def iso() -> Isolation:
    return detect_isolation()


@pytest.fixture
def isolated(iso: Isolation) -> Isolation:
    if not (iso.pid_namespace or iso.uid_drop):
        pytest.skip(f"sandbox mode {iso.mode!r} has neither a PID namespace nor a uid drop; not running hostile code")
    return iso


def survivors(marker: str) -> list[int]:
    """Processes still carrying this run's marker in their argv (every sandboxed process has it)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if marker in (p.info["cmdline"] or []):
                found.append(p.pid)
        except psutil.Error:
            continue
    return found


def _namespaces_work() -> bool:
    if not shutil.which("unshare"):
        return False
    cmd = ["unshare", "--net", "--pid", "--mount", "--fork", "--kill-child", "--mount-proc", "true"]
    return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0


def test_detects_strongest_mode(iso: Isolation) -> None:
    assert iso.mode in sandbox.MODES
    if os.geteuid() == 0 and _namespaces_work():
        assert iso == Isolation("namespaces+uid", True, True, True, True)


def test_ok_wrong_and_early_exit() -> None:
    ok = run_python("x = 2 + 2\nassert x == 4\nprint('hello')", FAST)
    assert ok.passed and ok.result == "passed" and "hello" in ok.output
    wrong = run_python("assert 2 + 2 == 5", FAST)
    assert not wrong.passed and wrong.result == "failed: AssertionError"
    # An exit(0) before the tests run must not count as a pass.
    early = run_python("import sys\nsys.exit(0)\nassert False", FAST)
    assert early.status == "failed" and "before its last line" in early.result


def test_environment_and_workdir_are_clean(iso: Isolation, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_TEST_SECRET", "hunter2")
    src = (
        "import os, sys\n"
        "assert set(os.environ) <= {'PATH', 'LANG', 'HOME', 'TMPDIR', 'LC_CTYPE'}, sorted(os.environ)\n"
        "assert os.listdir('.') == ['main.py'], os.listdir('.')\n"
        "assert sys.flags.isolated == 1\n"
    )
    if iso.uid_drop:
        src += "assert os.getuid() != 0 and os.getgid() != 0 and os.getgroups() == []\n"
    if iso.private_tmp:  # empty but for the working dir (and the interpreter, were it under /tmp)
        exposed = {Path(d).parts[2] for d in sandbox._mount_plan(iso.mode)[0] if Path(d).parts[1] == "tmp"}
        src += f"assert set(os.listdir('/tmp')) == {{'work', *{sorted(exposed)!r}}}, os.listdir('/tmp')\n"
    res = run_python(src, FAST)
    assert res.passed, res.output


def test_infinite_loop_times_out_and_is_killed() -> None:
    res = run_python("while True:\n    pass", SandboxLimits(timeout_s=2.0))
    assert res.status == "timed out" and not res.passed
    assert 2.0 <= res.duration_s < 4.0
    assert survivors(res.marker) == []


def test_fork_bomb_is_contained(isolated: Isolation) -> None:
    # Bounded on purpose: if containment failed this makes 2000 sleeping processes, not a dead machine.
    bomb = (
        "import os, time\n"
        "n = 0\n"
        "for _ in range(2000):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as e:\n"
        "        raise SystemExit(f'fork refused after {n}: {e}')\n"
        "    if pid == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    n += 1\n"
    )
    before = len(psutil.pids())
    res = run_python(bomb, FAST)
    assert not res.passed
    if isolated.uid_drop:  # RLIMIT_NPROC applies to the dropped uid
        assert "fork refused after" in res.result, res.output
        assert int(res.result.split("after ")[1].split(":")[0]) < FAST.nproc
    assert survivors(res.marker) == []
    assert len(psutil.pids()) < before + 50  # other jobs may start processes meanwhile; the bomb makes 2000


def test_escaped_grandchild_is_killed(isolated: Isolation) -> None:
    # setsid() leaves the process group; the PID namespace (or the uid sweep) must still get it.
    src = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(30)\n"
        "    os._exit(0)\n"
        "time.sleep(0.3)\n"
    )
    res = run_python(src, FAST)
    assert survivors(res.marker) == []


def test_kill_everything_hits_nothing_outside(isolated: Isolation) -> None:
    sentinel = subprocess.Popen(["sleep", "30"])
    try:
        res = run_python("import os, signal\nos.kill(-1, signal.SIGKILL)\nimport time\ntime.sleep(0.2)", FAST)
        time.sleep(0.2)
        assert sentinel.poll() is None, "a sandboxed kill(-1) reached a process outside the sandbox"
        assert survivors(res.marker) == []
    finally:
        sentinel.kill()
        sentinel.wait()


def test_huge_allocation_fails_fast() -> None:
    res = run_python("x = bytearray(10 * 1024**3)", FAST)
    assert res.result == "failed: MemoryError"
    assert res.duration_s < 2.5


def test_filling_the_disk_stops_at_the_file_size_limit() -> None:
    src = "with open('big.bin', 'wb') as f:\n    for _ in range(1024):\n        f.write(b'0' * 2**20)\n"
    res = run_python(src, FAST)
    assert not res.passed and "File too large" in res.result
    assert res.duration_s < 2.5


def test_cannot_write_into_a_root_owned_dir(isolated: Isolation) -> None:
    if not isolated.uid_drop:
        pytest.skip("no uid drop: the sandbox runs as the test user, who owns any dir the test can create")
    # Outside /tmp on purpose (the private /tmp would hide it): this checks the dropped uid, not the mount.
    target_dir = Path(REPO / f".sandbox-test-{uuid.uuid4().hex}")
    target_dir.mkdir(mode=0o755)
    target = target_dir / "pwned.txt"
    try:
        assert target_dir.stat().st_uid == 0 and target_dir.stat().st_mode & 0o777 == 0o755
        res = run_python(f"open({str(target)!r}, 'w').write('x')", FAST)
        # A clone under /tmp sits behind the sandbox's private /tmp: then the dir is not even visible.
        hidden = str(target).startswith("/tmp/") and "FileNotFoundError" in res.result
        assert not res.passed and ("PermissionError" in res.result or hidden), res.result
        assert not target.exists()
    finally:
        shutil.rmtree(target_dir)


def test_host_tmp_is_not_reachable(iso: Isolation) -> None:
    if not iso.private_tmp:
        pytest.skip(f"sandbox mode {iso.mode!r} has no private /tmp: world-writable dirs stay writable")
    target_dir = Path(f"/tmp/sandbox-test-{uuid.uuid4().hex}")
    target_dir.mkdir()
    target_dir.chmod(0o1777)  # writable by anyone on the host
    target = target_dir / "pwned.txt"
    try:
        res = run_python(f"open({str(target)!r}, 'w').write('x')", FAST)
        assert not res.passed and "FileNotFoundError" in res.result
        assert not target.exists()
    finally:
        shutil.rmtree(target_dir)


def test_no_network_to_a_local_listener(iso: Isolation) -> None:
    if not iso.network:
        pytest.skip(f"sandbox mode {iso.mode!r} has no network namespace: loopback stays reachable")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        src = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\ns.sendall(b'pwned')\n"
        res = run_python(src, FAST)
        # The connect fails with an OSError of some kind (refused, unreachable, timed out), not any error.
        error = res.result.removeprefix("failed: ").split(":")[0]
        assert not res.passed and issubclass(getattr(builtins, error, type(None)), OSError), res.result
        server.settimeout(0.3)
        with pytest.raises(TimeoutError):
            server.accept()  # the connection never arrived


def test_rlimits_mode_runs_benign_programs() -> None:
    # The weakest mode still times out and cleans up (benign programs only: see the module docstring).
    weak = Isolation.for_mode("rlimits")
    assert run_python("assert sum(range(5)) == 10", FAST, weak).passed
    loop = run_python("while True:\n    pass", SandboxLimits(timeout_s=1.0), weak)
    assert loop.status == "timed out" and survivors(loop.marker) == []


def test_weak_mode_needs_an_explicit_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)
    monkeypatch.delenv(sandbox.WEAK_OK_ENV, raising=False)
    with pytest.raises(SiftBenchError, match=sandbox.WEAK_OK_ENV) as err:
        sandbox.detect_isolation.__wrapped__()
    assert "`unshare` is not on PATH" in str(err.value) and "needs root" in str(err.value)
    assert "apt-get install util-linux" in str(err.value)
    monkeypatch.setenv(sandbox.WEAK_OK_ENV, "1")
    assert sandbox.detect_isolation.__wrapped__().mode == "rlimits"


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxLimits(timeout_s=0)
    assert SandboxLimits(timeout_s=2.5).cpu_s == 4


def test_userns_mode_when_available() -> None:
    # The mode a non-root user gets; benign programs plus a (harmless) connection attempt.
    probe = ["unshare", "--user", "--map-root-user", "--net", "true"]
    if not shutil.which("unshare") or subprocess.run(probe, capture_output=True, timeout=20).returncode != 0:
        pytest.skip("unprivileged user namespaces are not available here")
    userns = Isolation.for_mode("userns")
    res = run_python("import os\nassert os.listdir('/tmp') == ['work'] and os.getcwd() == '/tmp/work'", FAST, userns)
    assert res.passed, res.output
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        res = run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)", FAST, userns)
        assert not res.passed
        server.settimeout(0.3)
        with pytest.raises(TimeoutError):
            server.accept()


@pytest.fixture
def fresh_plans() -> Iterator[None]:
    """The interpreter and mount plans are cached per process; tests that fake them start and end clean."""
    plan = sandbox._mount_plan  # the real one, even if a test replaced it meanwhile
    plan.cache_clear()
    yield
    plan.cache_clear()


def test_no_isolation_message_names_what_failed(monkeypatch: pytest.MonkeyPatch, fresh_plans: None) -> None:
    # A real failure of every mode: the interpreter is gone. The message quotes each mode's own error.
    monkeypatch.setattr(sandbox, "base_interpreter", lambda: sandbox.Interpreter("/nonexistent/python3", ()))
    monkeypatch.delenv(sandbox.WEAK_OK_ENV, raising=False)
    with pytest.raises(SiftBenchError) as err:
        sandbox.detect_isolation.__wrapped__()
    msg = str(err.value)
    assert "No such file or directory" in msg and "/nonexistent/python3" in msg, msg
    tried = ["namespaces+uid", "uid"] if os.geteuid() == 0 else ["userns"]
    assert all(f"- {mode}: " in msg for mode in tried), msg
    assert "apt-get install util-linux" not in msg or not shutil.which("unshare"), msg  # unshare is not the problem


def test_setup_failure_is_an_error_not_a_failed_sample(
    iso: Isolation, monkeypatch: pytest.MonkeyPatch, fresh_plans: None
) -> None:
    # A set-up step inside the sandbox fails: run_python says which, instead of scoring the sample as failed.
    monkeypatch.setattr(sandbox, "_mount_plan", lambda mode: (["/nonexistent-sift-dir"], []))
    with pytest.raises(sandbox.SandboxUnavailable, match=r"/nonexistent-sift-dir|FileNotFoundError") as err:
        run_python("print('never runs')", FAST, iso)
    assert str(err.value).startswith(f"{iso.mode}: ")


def test_runs_the_base_interpreter() -> None:
    interp = sandbox.base_interpreter()
    assert interp.exe == os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)
    assert any(sandbox._under(os.path.realpath(sys.base_prefix), d) for d in interp.dirs)
    res = run_python("import sys\nprint(sys.executable, sys.prefix == sys.base_prefix)", FAST)
    assert res.passed and res.output == f"{interp.exe} True", res.output
