"""The sandbox's bootstrap: `python -I -S sandbox_boot.py CFG`, started by `sandbox.run_python`.

It runs inside the namespaces (as root there, if any), reads the program from stdin, prepares the file
system, sets the resource limits, drops privileges and execs the interpreter on the program. It is a
separate script, not a Popen `preexec_fn`: preexec_fn runs Python between fork and exec, which can
deadlock in a process with threads (torch, Ray). So this file imports only the standard library.

It tells the parent how far it got through the status pipe CFG["status_fd"]: "error: <what failed>"
if the set-up failed, "exec" just before the exec. The pipe is closed on exec, so the program itself
cannot write to it: an "error" line always comes from the set-up, never from a sample.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
from typing import Any

TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # made private (fresh tmpfs) in the namespace modes
SETUP_FAILED = 125  # exit code when the set-up failed (the status pipe says why)
SCRIPT = "main.py"  # the program's file, in its working dir

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_CLONE_NEWNS = 0x00020000
_PR_SET_PDEATHSIG = 1


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    if _libc().mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or source} on {target}: {os.strerror(err)}")


def _own_mount_namespace() -> None:
    """A private mount namespace for the "uid" mode, which has no `unshare` around it."""
    if _libc().unshare(_CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # our mounts must not propagate to the host


def _expose_read_only(fd: int, path: str) -> None:
    """Bind the directory open at `fd` (opened before anything covered it) onto `path`, read-only."""
    os.makedirs(path, 0o755, exist_ok=True)
    _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)
    # In a user namespace the source mount's nosuid/nodev/noexec are locked: a remount must keep them.
    locked = os.statvfs(path).f_flag & (_MS_NOSUID | _MS_NODEV | _MS_NOEXEC)  # ST_* bits equal MS_* bits
    _mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | locked)


def _prepare_fs(cfg: dict[str, Any], program: bytes, step: list[str]) -> None:
    """Make the working dir, write the program there and chdir into it; in the namespace modes under a
    private /tmp. Then cover cfg["cover"] (dirs the sandbox uid cannot search, e.g. a 0700 /root) with
    empty tmpfs mounts and expose cfg["expose"] (the interpreter's dirs) read-only at their own paths."""
    uid = cfg["uid"]
    expose: list[str] = cfg["expose"]
    cover: list[str] = cfg["cover"]
    if not cfg["private_tmp"]:
        # The working dir exists on the host; enter it before anything is covered (a cwd survives mounts).
        os.chdir(cfg["workdir"])
        if expose or cover:
            step[0] = "making a private mount namespace to expose the interpreter"
            _own_mount_namespace()
    step[0] = "opening the interpreter's directories"
    fds = [os.open(path, os.O_PATH | os.O_DIRECTORY) for path in expose]
    if cfg["private_tmp"]:
        step[0] = "mounting a private /tmp"
        tmpfs_opts = f"size={cfg['limits']['tmpfs_bytes']},mode=1777"
        for d in TMP_DIRS:
            if os.path.isdir(d):
                _mount("tmpfs", d, "tmpfs", _MS_NOSUID | _MS_NODEV, tmpfs_opts)
    for d in cover:
        step[0] = f"covering {d} (the sandbox uid cannot search it)"
        _mount("tmpfs", d, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    for fd, path in zip(fds, expose, strict=True):
        step[0] = f"exposing {path} read-only"
        _expose_read_only(fd, path)
        os.close(fd)
    if cfg["private_tmp"]:
        step[0] = "making the working dir /tmp/work"
        os.mkdir("/tmp/work", 0o700)
        if uid is not None:
            os.chown("/tmp/work", uid, uid)
        os.chdir("/tmp/work")
    step[0] = "writing the program"
    with open(SCRIPT, "wb") as f:
        f.write(program)
    os.chmod(SCRIPT, 0o444)


def _set_limits(lim: dict[str, int]) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"]))
    resource.setrlimit(resource.RLIMIT_AS, (lim["memory_bytes"], lim["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_bytes"], lim["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim["nofile"], lim["nofile"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))


def boot(cfg: dict[str, Any], step: list[str]) -> None:
    """Set up and exec; `step[0]` names what is being done, for the error report."""
    status = cfg["status_fd"]
    step[0] = "reading the program"
    program = sys.stdin.buffer.read()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    _prepare_fs(cfg, program, step)
    step[0] = "setting resource limits"
    _set_limits(cfg["limits"])
    uid = cfg["uid"]
    env = {"PATH": cfg["path"], "LANG": "C.UTF-8", "HOME": os.getcwd(), "TMPDIR": os.getcwd()}
    if uid is not None:
        step[0] = f"switching to the sandbox uid {uid}"
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)  # also clears the parent-death signal `unshare --kill-child` set, so re-arm it
        _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    exe = cfg["exe"]
    step[0] = f"starting the interpreter {exe}" + (f" as uid {uid}" if uid is not None else "")
    os.set_inheritable(status, False)  # closed on exec: the program cannot write a status line
    os.write(status, b"exec\n")
    os.execve(exe, [exe, "-I", SCRIPT, cfg["marker"]], env)


def main(argv: list[str]) -> None:
    cfg = json.loads(argv[1])
    step = ["starting"]
    try:
        boot(cfg, step)
    except BaseException as e:  # whatever failed, the parent must learn what
        os.write(cfg["status_fd"], f"error: {step[0]}: {type(e).__name__}: {e}\n".encode())
        os._exit(SETUP_FAILED)


if __name__ == "__main__":
    main(sys.argv)
