"""The sandbox works wherever Python lives: sift-bench run from a venv under /tmp (which the private /tmp
hides), and from a Python under a 0700 directory (which the fresh uid cannot search, like pyenv's under
/root), inside and outside /tmp. Each case runs `sandbox_driver.py` under that interpreter, in a
subprocess, and checks that correct programs pass and hostile ones are contained (see test_sandbox.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sift_bench.evaluators.sandbox import _libpython_dirs, detect_isolation

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("sandbox_driver.py")
ROOT = os.geteuid() == 0
# Left out of the copied standard library: big, and never imported by a sample or the driver.
SKIP = {
    "site-packages",
    "dist-packages",
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "__pycache__",
}


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # fast, and permissions stay those of the original files
    except OSError:
        shutil.copy2(src, dst)


def copy_interpreter(dest: Path) -> Path:
    """A runnable copy of this base interpreter and its standard library under `dest`; returns its python."""
    exe = os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = Path(os.__file__).parent  # os.py is the landmark Python looks for to find its prefix
    (dest / "bin").mkdir(parents=True)
    shutil.copytree(
        stdlib, dest / "lib" / version, copy_function=_link_or_copy,
        ignore=lambda d, names: [n for n in names if n in SKIP or n.startswith("config-")],
    )  # fmt: skip
    dynload = Path(sysconfig.get_config_var("DESTSHARED") or stdlib / "lib-dynload")
    if not (dest / "lib" / version / "lib-dynload").exists() and dynload.is_dir():
        shutil.copytree(dynload, dest / "lib" / version / "lib-dynload", copy_function=_link_or_copy)
    for lib_dir in _libpython_dirs():  # a shared build whose RUNPATH is relative needs its libpython
        for f in Path(lib_dir).glob("libpython*"):
            _link_or_copy(str(f), str(dest / "lib" / f.name))
    python = dest / "bin" / version
    _link_or_copy(exe, str(python))
    return python


@pytest.fixture(scope="module")
def venv_under_tmp() -> Iterator[Path]:
    home = Path(f"/tmp/sift-venv-{uuid.uuid4().hex[:8]}")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True, timeout=120)
    yield home / "bin" / "python"
    shutil.rmtree(home)


def _locked_python(parent: Path) -> Iterator[Path]:
    locked = parent / f".sandbox-test-{uuid.uuid4().hex[:8]}"
    locked.mkdir(mode=0o700)  # like /root: the sandbox uid cannot search it
    try:
        python = copy_interpreter(locked / "python")
        assert locked.stat().st_mode & 0o777 == 0o700
        yield python
    finally:
        shutil.rmtree(locked)


@pytest.fixture(scope="module")
def locked_under_tmp() -> Iterator[Path]:
    yield from _locked_python(Path("/tmp"))


@pytest.fixture(scope="module")
def locked_outside_tmp() -> Iterator[Path]:
    yield from _locked_python(REPO)


@pytest.fixture(scope="module")
def root_owned_dir() -> Iterator[Path]:
    """Outside /tmp (the private /tmp would hide it): a dir the sandbox uid must not write into."""
    target = REPO / f".sandbox-target-{uuid.uuid4().hex[:8]}"
    target.mkdir(mode=0o755)
    yield target
    shutil.rmtree(target)


def _mode_available(mode: str) -> str | None:
    """Why `mode` cannot be tested here, or None."""
    if mode == "uid" and not ROOT:
        return "the uid mode needs root"
    if mode == "userns":
        probe = ["unshare", "--user", "--map-root-user", "--net", "true"]
        if not shutil.which("unshare") or subprocess.run(probe, capture_output=True, timeout=20).returncode:
            return "unprivileged user namespaces are not available here"
    if mode == "detect":
        detect_isolation()  # raises, naming what failed, if no isolation works here
    return None


def run_driver(python: Path, mode: str, target: Path) -> dict:
    """The driver under `python`; sift_bench and psutil come from this checkout and this interpreter."""
    paths = [str(REPO), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), "OMP_NUM_THREADS": "1"}
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        cmd = [str(python), str(DRIVER), mode, str(target), str(port)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        server.settimeout(0.1)
        with pytest.raises(TimeoutError):
            server.accept()  # no sample ever reached the listener
    return json.loads(proc.stdout.splitlines()[-1])


def check_contained(out: dict, python: Path) -> None:
    assert out["executable"] == str(python)
    assert out["correct"] == "passed", out["correct_output"]
    assert out["correct_output"] == "fine"
    assert out["wrong"] == "failed: AssertionError"
    assert out["loop"] == "timed out"
    if "sentinel_alive" in out:
        assert out["sentinel_alive"] and out["kill_survivors"] == 0
    if "bomb" in out:
        assert "fork refused after" in out["bomb"] and out["bomb_survivors"] == 0, out["bomb"]
        # A clone under /tmp sits behind the sandbox's private /tmp: then the target is not even visible.
        hidden = str(REPO).startswith("/tmp/") and "FileNotFoundError" in out["write"]
        assert "PermissionError" in out["write"] or hidden, out["write"]
    if "plant" in out:
        assert "PermissionError" in out["plant"] or "Read-only file system" in out["plant"], out["plant"]
    if "connect" in out:
        assert out["connect"].startswith("failed:") and "Error" in out["connect"], out["connect"]


@pytest.mark.parametrize("mode", ["detect", "uid", "userns"])
def test_from_a_venv_under_tmp(mode: str, venv_under_tmp: Path, root_owned_dir: Path) -> None:
    if reason := _mode_available(mode):
        pytest.skip(reason)
    out = run_driver(venv_under_tmp, mode, root_owned_dir)
    check_contained(out, venv_under_tmp)
    assert out["base_prefix"] == sys.base_prefix  # the venv's base: samples run there, not in the hidden venv
    assert out["runs_on"] == os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)
    assert not list(root_owned_dir.iterdir())


@pytest.mark.parametrize("mode", ["detect", "uid", "userns"])
def test_from_a_python_under_a_0700_dir_in_tmp(mode: str, locked_under_tmp: Path, root_owned_dir: Path) -> None:
    if reason := _mode_available(mode):
        pytest.skip(reason)
    out = run_driver(locked_under_tmp, mode, root_owned_dir)
    check_contained(out, locked_under_tmp)
    assert out["runs_on"] == str(locked_under_tmp)  # the copy itself, found under its 0700 parent
    assert not list(root_owned_dir.iterdir()) and not (locked_under_tmp.parents[1] / "planted.py").exists()


@pytest.mark.parametrize("mode", ["detect", "uid"])
def test_from_a_python_under_a_0700_dir_outside_tmp(mode: str, locked_outside_tmp: Path, root_owned_dir: Path) -> None:
    if reason := _mode_available(mode):
        pytest.skip(reason)
    out = run_driver(locked_outside_tmp, mode, root_owned_dir)
    check_contained(out, locked_outside_tmp)
    assert out["runs_on"] == str(locked_outside_tmp)
    assert not list(root_owned_dir.iterdir()) and not (locked_outside_tmp.parents[1] / "planted.py").exists()
