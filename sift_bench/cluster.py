"""Connect this process (the driver) to Ray: a private local instance, or a running cluster at HOST:PORT.

Ray (2.59+) turns token authentication on for a head started with plain `ray start --head` whenever a
token exists on the head (`~/.ray/auth_token`, which any local `ray.init()` writes). A driver that calls
`ray.init(address=...)` does not look for that token by itself (only `address="auto"` does), so it is
refused. `ray_session` looks for it where Ray documents drivers keep it ($RAY_AUTH_TOKEN, the file
$RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token), never turns authentication off, and turns "cannot reach",
"refused the token" and "refused the driver" into one SiftBenchError line naming the address and the fix.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sift_bench.errors import SiftBenchError

LOCALHOST = "127.0.0.1"
# A head that is up answers a TCP connect at once; this bounds the wait for one that is not.
REACH_TIMEOUT_S = 5.0
# Ray's own switch for single-machine Ray: with it off, the node uses 127.0.0.1 and the GCS listens there
# only, instead of on every interface under the machine's outward address.
_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_TOKEN_DOCS = "https://docs.ray.io/en/latest/ray-security/token-auth.html"


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Join the cluster at `address` (or $RAY_ADDRESS), or start a private local Ray on 127.0.0.1; the
    local one ends with the block, a joined cluster keeps running. Inside an existing Ray session (a Ray Job,
    a test) it uses that one and leaves it running."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    # Ray's log lines would break the progress view; the store and the one-line summary are the record.
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": True, "logging_level": "ERROR"}
    if address:
        connect(address, **kwargs)
    else:
        _start_local(**kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def connect(address: str, **init_kwargs: Any) -> None:
    """`ray.init(address=...)` with the cluster's token, or one SiftBenchError saying what to check."""
    import ray

    if address != "auto":
        host, port = parse_address(address)
        check_reachable(address, host, port)
    token = use_cluster_token()
    try:
        with _captured_stderr() as captured:
            ray.init(address=address, **init_kwargs)
    except Exception as e:  # Ray raises ConnectionError, RuntimeError or AuthenticationError here
        detail = " ".join(str(x) for x in (e, e.__cause__, captured.text))
        raise SiftBenchError(_join_error(address, token, detail, e)) from None


def parse_address(address: str) -> tuple[str, int]:
    """HOST:PORT of a cluster's GCS, or a SiftBenchError naming the form it expects."""
    if "://" in address:
        scheme = address.split("://", 1)[0]
        hint = (
            "That is a job server (dashboard) URL: send the suite with `sift-bench submit SUITE --address "
            f"{address}`, or join with the head's GCS address, e.g. --address HEAD:6379."
            if scheme in ("http", "https")
            else "Pass the head's GCS address as HOST:PORT, e.g. --address HEAD:6379 (Ray Client ray:// is "
            "not supported: Ray Tune needs a driver that joins the cluster)."
        )
        raise SiftBenchError(f"--address {address}: {hint}")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SiftBenchError(
            f"--address {address}: expected HOST:PORT of the Ray head (`ray start --head` prints it), "
            "e.g. --address 10.0.0.5:6379."
        )
    return host.strip("[]"), int(port)


def check_reachable(address: str, host: str, port: int, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Fail in seconds on an address nothing answers on (Ray itself retries for minutes)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise SiftBenchError(
            f"Cannot reach the Ray cluster at {address} ({reason}). Check that the head node runs "
            "(`ray start --head` there prints its address), that HOST:PORT is the head's GCS port (6379 unless "
            "--port was given; the dashboard's 8265 is for `sift-bench submit`), and that no firewall blocks it."
        ) from None


def use_cluster_token() -> str | None:
    """Turn on token authentication for this driver when a token is at hand and RAY_AUTH_MODE is unset, the
    way Ray does for `address="auto"`. Returns where the token comes from (for messages), or None."""
    if auth_disabled():
        return None  # the user's explicit choice; the error message says so if the cluster wants a token
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return None
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)  # no "auth enabled" banner
    if not maybe_enable_token_auth_if_token_available(warn_if_disabled=False):
        return None
    return token_source()


def auth_disabled() -> bool:
    """RAY_AUTH_MODE=disabled: the user turned token authentication off on purpose."""
    return os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled"


def token_source() -> str:
    """Where Ray reads the token from, in its order of precedence ($RAY_AUTH_TOKEN, the file
    $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token, which `ray start --head` writes)."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "$RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return os.environ["RAY_AUTH_TOKEN_PATH"]
    return str(Path.home() / ".ray" / "auth_token")


def read_token() -> str | None:
    """The cluster's token from `token_source()`; None with RAY_AUTH_MODE=disabled or when there is none.
    A file named by RAY_AUTH_TOKEN_PATH that cannot be read is a SiftBenchError (a mistake, not "no token")."""
    if auth_disabled():
        return None
    source = token_source()
    if source == "$RAY_AUTH_TOKEN":
        return os.environ["RAY_AUTH_TOKEN"].strip()
    try:
        return Path(source).expanduser().read_text().strip() or None
    except OSError:
        if os.environ.get("RAY_AUTH_TOKEN_PATH"):
            raise SiftBenchError(
                f"RAY_AUTH_TOKEN_PATH={source} cannot be read. Fix: point it at the cluster's token file, or unset it."
            ) from None
        return None


def _join_error(address: str, token: str | None, detail: str, error: Exception) -> str:
    if "InvalidAuthToken" in detail or "Unauthenticated" in detail or type(error).__name__ == "AuthenticationError":
        if token:
            what = f"refused the token from {token}"
        elif os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
            what = "wants a token, and RAY_AUTH_MODE=disabled is set here (unset it)"
        else:
            what = "wants a token, and this machine has none"
        return (
            f"The Ray cluster at {address} {what}. Fix: on the head node run `ray get-auth-token` and put its "
            "output in ~/.ray/auth_token on this machine (or in $RAY_AUTH_TOKEN, or in a file named by "
            f"$RAY_AUTH_TOKEN_PATH), then rerun. See {_TOKEN_DOCS}"
        )
    import ray

    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"Could not join the Ray cluster at {address}: {first}. Check that HOST:PORT is the head's GCS address, "
        f"that the head is healthy (`ray status` on it), and that it runs the same Ray ({ray.__version__}) "
        "and Python versions as this machine."
    )


def _start_local(**init_kwargs: Any) -> None:
    """A private single-machine Ray on 127.0.0.1: no dashboard (nothing to secure), gone when the run ends."""
    import ray
    from ray._private import ray_constants

    # Ray maps 127.0.0.1 to the machine's outward address unless its single-machine switch is off. The
    # switch is read once at import, so the already imported constant is set too; both are restored after.
    saved_env, saved_flag = os.environ.get(_CLUSTER_SWITCH), ray_constants.ENABLE_RAY_CLUSTER
    if saved_env is None:
        os.environ[_CLUSTER_SWITCH] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(include_dashboard=False, **init_kwargs)
    finally:
        if saved_env is None:
            os.environ.pop(_CLUSTER_SWITCH, None)
            ray_constants.ENABLE_RAY_CLUSTER = saved_flag


class _Captured:
    text = ""


@contextmanager
def _captured_stderr() -> Iterator[_Captured]:
    """Send file descriptor 2 to a file for the block: while it retries, Ray's C++ client prints a warning
    a second; the text (in `.text` once the block ends) decides which error message fits."""
    captured = _Captured()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode(errors="replace")
