"""Model resolution fails fast and clearly: aliases, local folders, the hub cache, HF_HUB_OFFLINE, and a hub
that is unreachable, says "no such model", or never answers. Every hub here is on loopback (127.0.0.1)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import tiny_bert
from typer.testing import CliRunner

from sift_bench.errors import SiftBenchError
from sift_bench.models import PROBE_SECONDS, load_model, resolve_model

UNKNOWN = "sift-bench-tests/no-such-model"
DEADLINE = 5.0  # seconds: issue #12's bound for an unknown model id without network
CLOSED_PORT = "http://127.0.0.1:9"  # the discard port on loopback: nothing listens, connections are refused


@pytest.fixture(autouse=True)
def online(monkeypatch) -> None:
    """Start every test online, whatever the outer environment says; tests opt into offline or endpoints."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)


def timed_error(call, *args, **kwargs) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(SiftBenchError) as e:
        call(*args, **kwargs)
    return str(e.value), time.monotonic() - started


# ----------------------------------------------------------------------------------------------- aliases


def test_aliases_are_case_insensitive_and_local():
    lower, mixed = resolve_model("minilm-l6"), resolve_model(" MiniLM-L6 ")
    assert (mixed.id, mixed.path, mixed.kind, mixed.needs_hub) == (lower.id, lower.path, "alias", False)
    assert mixed.name == " MiniLM-L6 " and Path(mixed.path, "config.json").is_file()


def test_near_miss_gets_did_you_mean_without_network(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", CLOSED_PORT)
    msg, _ = timed_error(resolve_model, "minilm-l7")
    assert "Unknown model 'minilm-l7'. Did you mean 'minilm-l6'?" in msg
    msg, _ = timed_error(resolve_model, "SmolLM-135m", "causal_lm")
    assert "Did you mean 'smollm2-135m'?" in msg


def test_causal_lm_jobs_are_pointed_at_a_causal_lm():
    # An encoder alias asked to be a causal LM: the fix names the causal-LM alias, never an encoder.
    msg, _ = timed_error(resolve_model, "minilm-l6", "causal_lm")
    assert "not a causal LM" in msg and "smollm2-135m" in msg and msg.count("minilm") == 1
    msg, _ = timed_error(resolve_model, "minilm-l7", "causal_lm")  # close to an encoder alias only
    assert "Did you mean" not in msg and "use the alias smollm2-135m" in msg


def test_eval_mmlu_on_an_encoder_suggests_a_causal_lm():
    from sift_bench.cli import app

    res = CliRunner().invoke(app, ["eval", "mmlu", "--model", "minilm-l6", "--limit", "1"])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "not a causal LM" in res.output and "smollm2-135m" in res.output


# ------------------------------------------------------------------------------------------ local folders


def test_local_folder_and_its_mistakes(tmp_path: Path):
    tiny_bert().save_pretrained(tmp_path / "bert")
    ref = resolve_model(str(tmp_path / "bert"))
    assert (ref.kind, ref.needs_hub, ref.path) == ("local", False, str(tmp_path / "bert"))
    msg, _ = timed_error(resolve_model, str(tmp_path / "bert"), "causal_lm")  # its config says BertFor...
    assert "is a BertForSequenceClassification, not a causal LM" in msg
    msg, _ = timed_error(resolve_model, str(tmp_path / "missing"))
    assert f"no folder {tmp_path / 'missing'}" in msg
    msg, _ = timed_error(resolve_model, str(tmp_path))
    assert "has no config.json" in msg and "save_pretrained" in msg


# -------------------------------------------------------------------------------------- hub cache, offline


def fake_hub_cache(root: Path, repo_id: str, architecture: str, weights: bool = True) -> None:
    """The layout huggingface_hub writes: models--owner--name/{refs/main, snapshots/<commit>/...}."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (snapshot / "config.json").write_text(json.dumps({"architectures": [architecture]}))
    if weights:
        (snapshot / "model.safetensors").write_bytes(b"weights")


def test_cached_hub_model_needs_no_hub_even_offline(tmp_path: Path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    fake_hub_cache(tmp_path, "owner/tiny-llama", "LlamaForCausalLM")
    fake_hub_cache(tmp_path, "owner/tiny-bert", "BertModel")
    fake_hub_cache(tmp_path, "owner/config-only", "LlamaForCausalLM", weights=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = resolve_model("owner/tiny-llama", "causal_lm")
    assert (ref.kind, ref.needs_hub, ref.path) == ("hub-cache", False, "owner/tiny-llama")
    msg, _ = timed_error(resolve_model, "owner/tiny-bert", "causal_lm")
    assert "is a BertModel, not a causal LM" in msg
    msg, _ = timed_error(resolve_model, "owner/config-only")  # no weights cached: would need a download
    assert "not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in msg


def test_unknown_id_offline_fails_fast_and_says_how_to_get_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", CLOSED_PORT)  # were the network touched, the message would say so
    msg, seconds = timed_error(load_model, UNKNOWN, "classification")
    assert seconds < DEADLINE
    assert f"Model '{UNKNOWN}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in msg
    assert f"hf download {UNKNOWN}" in msg and "127.0.0.1" not in msg
    msg, _ = timed_error(resolve_model, UNKNOWN, probe=False)  # offline wins over "do not probe"
    assert "HF_HUB_OFFLINE is set" in msg


# ------------------------------------------------------------------------------------------ the hub probe


def test_unknown_id_with_the_hub_unreachable_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", CLOSED_PORT)
    msg, seconds = timed_error(load_model, UNKNOWN, "causal_lm")
    assert seconds < DEADLINE
    assert f"Cannot load model '{UNKNOWN}'" in msg and "hub (http://127.0.0.1:9) is unreachable" in msg
    assert "HF_HUB_OFFLINE=1" in msg and "smollm2-135m" in msg


def test_without_probe_an_uncached_id_needs_the_hub(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", CLOSED_PORT)  # not asked: no error although the hub is unreachable
    ref = resolve_model(UNKNOWN, probe=False)
    assert (ref.kind, ref.needs_hub, ref.path) == ("hub", True, UNKNOWN)


class FakeHub(BaseHTTPRequestHandler):
    """/api/models/<owner>/<name>: 200 for owner/exists, the hub's 404 for anything else."""

    def do_GET(self) -> None:
        found = self.path.split("?")[0] == "/api/models/owner/exists"
        body = json.dumps({"id": "owner/exists"} if found else {"error": "Repository not found"}).encode()
        self.send_response(200 if found else 404)
        if not found:
            self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass


@pytest.fixture
def fake_hub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_probe_tells_a_known_model_from_an_unknown_one(fake_hub: str, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", fake_hub)
    ref = resolve_model("owner/exists")
    assert (ref.kind, ref.needs_hub) == ("hub", True)
    msg, seconds = timed_error(resolve_model, "owner/missing")
    assert seconds < DEADLINE and "Unknown model 'owner/missing': the hub" in msg and "no such model" in msg


def test_a_hub_that_never_answers_is_given_up_on(monkeypatch):
    # Accepts connections (the kernel's backlog) but never replies: the probe's deadline ends it.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        msg, seconds = timed_error(resolve_model, UNKNOWN)
    assert PROBE_SECONDS * 0.9 < seconds < DEADLINE
    assert "is unreachable" in msg
