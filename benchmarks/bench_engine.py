"""Per-step cost of SIFT against full fine-tuning, PEFT LoRA and the frozen floor. Prints JSON.

    python benchmarks/bench_engine.py                 # BERT-base and a small Llama, CPU (and CUDA if present)
    python benchmarks/bench_engine.py --quick         # small shapes, seconds

Variants (same model, same batch; the task head is frozen everywhere so only the method differs):
  full         every parameter trains (AdamW)
  lora         PEFT LoRA on the attention projections, rank chosen to match SIFT's trainable count
  sift_fused   SIFT at 1% of the attention projections, fused sampled weight gradient
  sift_hook    the same, paper's hook path (dense gradient gathered and freed per weight)
  floor        all weights frozen, the input gradient still back-propagated through every layer:
               no sparse method can do less work than this

Step times are medians over interleaved repetitions (A B C D E A B C ...), so slow drifts in machine load
hit every variant alike; ratios are taken within this one run. Memory: bytes of gradients and optimizer
state are counted exactly from the tensors; peak memory is CUDA max-allocated of that variant built alone
(the others freed) and run two steps, or on CPU the peak RSS of a fresh subprocess doing the same.
Shapes with dtype bf16 (llama-1b) build their weights in bf16 directly on the device.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sift

VARIANTS = ["full", "lora", "sift_fused", "sift_hook", "floor"]


@dataclass
class Shape:
    name: str
    family: str  # bert | llama
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    batch: int
    seq: int
    kv_heads: int = 0  # grouped-query attention (llama); 0: one key/value head per query head
    dtype: str = "fp32"  # fp32 | bf16: the weights' dtype


SHAPES = {
    "bert-base": Shape("bert-base", "bert", 768, 12, 12, 3072, 30522, 8, 128),
    "llama-small": Shape("llama-small", "llama", 512, 8, 8, 1376, 8192, 4, 256),
    "bert-tiny": Shape("bert-tiny", "bert", 128, 2, 4, 512, 1000, 4, 64),
    "llama-tiny": Shape("llama-tiny", "llama", 128, 2, 4, 344, 1000, 2, 64),
    # Llama-3.2-1B's shape (1.24 B parameters), random weights, bf16: the device check's large model.
    "llama-1b": Shape("llama-1b", "llama", 2048, 16, 32, 8192, 128256, 4, 512, kv_heads=8, dtype="bf16"),
    "llama-tiny-bf16": Shape("llama-tiny-bf16", "llama", 128, 2, 4, 344, 1000, 2, 64, kv_heads=2, dtype="bf16"),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TARGETS = {
    "bert": ["query", "key", "value", "attention.output.dense"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
}
SPARSITY = 0.01


def build_model(shape: Shape, device: str = "cpu") -> torch.nn.Module:
    """Random weights, made on `device` (a 1 B model initialised on the CPU first would take a minute)."""
    torch.manual_seed(0)
    with torch.device(device):
        if shape.family == "bert":
            from transformers import BertConfig, BertModel

            cfg = BertConfig(
                vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                num_attention_heads=shape.heads, intermediate_size=shape.intermediate,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            )  # fmt: skip
            model = BertModel(cfg, add_pooling_layer=False)
        else:
            from transformers import LlamaConfig, LlamaModel

            cfg = LlamaConfig(
                vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads or shape.heads,
                intermediate_size=shape.intermediate, max_position_embeddings=max(2048, shape.seq),
            )  # fmt: skip
            model = LlamaModel(cfg)
    return model.to(DTYPES[shape.dtype])


def loss_of(model: torch.nn.Module, embeds: torch.Tensor) -> torch.Tensor:
    # A fixed scalar objective on the last hidden state: every variant runs the same forward and backward.
    return model(inputs_embeds=embeds).last_hidden_state.float().pow(2).mean()


class Setup:
    """One variant: a model, what trains, and its optimizer."""

    def __init__(self, variant: str, shape: Shape, device: str) -> None:
        self.variant = variant
        model = build_model(shape, device)
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, shape.vocab, (shape.batch, shape.seq), generator=g).to(device)
        with torch.no_grad():
            self.embeds = model.get_input_embeddings()(ids)
        targets = TARGETS[shape.family]
        self.weight_shapes = {tuple(m.weight.shape) for m in sift.find_target_modules(model, targets).values()}
        self.engine = None
        if variant == "full":
            model.requires_grad_(True)
            params = list(model.parameters())
        elif variant == "lora":
            from peft import LoraConfig, get_peft_model

            model.requires_grad_(False)
            model = get_peft_model(
                model, LoraConfig(r=lora_rank(model, targets), lora_alpha=16, target_modules=targets)
            )
            params = [p for p in model.parameters() if p.requires_grad]
        elif variant.startswith("sift"):
            impl = variant.removeprefix("sift_")
            self.engine = sift.SiftEngine(model, sift.SiftConfig(SPARSITY, targets, implementation=impl))
            self.engine.select([self.embeds], loss_of)
            params = self.engine.parameters()
        else:  # floor
            model.requires_grad_(False)
            params = []
        self.model = model
        self.params = params
        self.opt = torch.optim.AdamW(params, lr=1e-5) if params else None
        if self.engine is not None:
            self.engine.attach(self.opt)
        self.trainable = sum(p.numel() for p in params)

    def step(self) -> None:
        embeds = self.embeds.detach().requires_grad_(self.variant == "floor")
        loss_of(self.model, embeds).backward()
        if self.opt is not None:
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)

    def grad_and_state_bytes(self) -> int:
        """Gradients (measured right after backward) plus optimizer state, counted from the tensors."""
        embeds = self.embeds.detach().requires_grad_(self.variant == "floor")
        loss_of(self.model, embeds).backward()
        grads = sum(p.grad.numel() * p.grad.element_size() for p in self.params if p.grad is not None)
        if self.opt is not None:
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            state = sum(
                t.numel() * t.element_size()
                for s in self.opt.state.values()
                for t in s.values()
                if torch.is_tensor(t) and t.dim() > 0
            )
        else:
            state = 0
        values = sum(p.numel() * p.element_size() for p in self.params) if self.engine else 0
        indices = sum(i.numel() * i.element_size() for i in self.engine.indices().values()) if self.engine else 0
        return grads + state + values + indices


def lora_rank(model: torch.nn.Module, targets: list[str]) -> int:
    """The LoRA rank whose trainable count is closest to SIFT's at SPARSITY."""
    mods = sift.find_target_modules(model, targets)
    sparse = sum(sift.num_selected(m.weight.numel(), SPARSITY) for m in mods.values())
    per_rank = sum(m.in_features + m.out_features for m in mods.values())
    return max(1, round(sparse / per_rank))


class WeightSizedAllocations(TorchDispatchMode):
    def __init__(self, shapes: set[tuple[int, ...]]) -> None:
        super().__init__()
        self.shapes, self.count = shapes, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided and tuple(t.shape) in self.shapes:
                self.count += 1
        return out


def weight_sized_in_backward(setup: Setup) -> int:
    shapes = setup.weight_shapes | {s[::-1] for s in setup.weight_shapes}
    embeds = setup.embeds.detach().requires_grad_(setup.variant == "floor")
    loss = loss_of(setup.model, embeds)
    with WeightSizedAllocations(shapes) as rec:
        loss.backward()
    if setup.opt is not None:
        setup.opt.zero_grad(set_to_none=True)
    return rec.count


def peak_rss_subprocess(shape: str, variant: str) -> int:
    """Peak RSS (bytes) of a fresh process that builds the variant and runs two steps.

    Read from VmHWM, which belongs to the new process image; getrusage's ru_maxrss would carry over this
    (large) parent's high-water mark across fork and exec.
    """
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r});"
        f"import bench_engine as b; s=b.Setup({variant!r}, b.SHAPES[{shape!r}], 'cpu'); s.step(); s.step();"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) * 1024  # kB


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_shape(shape: Shape, device: str, reps: int, rss: bool) -> dict[str, object]:
    setups = {v: Setup(v, shape, device) for v in VARIANTS}
    for s in setups.values():  # warm-up
        s.step()
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(reps):
        for v, s in setups.items():
            sync(device)
            t0 = time.perf_counter()
            s.step()
            sync(device)
            times[v].append(time.perf_counter() - t0)
    med = {v: statistics.median(t) for v, t in times.items()}
    result: dict[str, object] = {"shape": shape.__dict__, "device": device, "reps": reps}
    engine = setups["sift_fused"].engine
    k = engine.num_trainable()
    idx_bytes = sum(i.numel() * i.element_size() for i in engine.indices().values())
    theory = k * (4 + 4 + 8) + idx_bytes  # values + grads + 2 AdamW moments + indices
    for v, s in setups.items():
        row = {
            "step_seconds": round(med[v], 4),
            "trainable": s.trainable,
            "grad_plus_optimizer_bytes": s.grad_and_state_bytes(),
            "weight_sized_tensors_in_backward": weight_sized_in_backward(s),
        }
        if device == "cpu" and rss:
            row["peak_rss_bytes"] = peak_rss_subprocess(shape.name, v)
        result[v] = row
    f = setups["sift_fused"]
    result["ratios"] = {
        "sift_fused_vs_full": round(med["sift_fused"] / med["full"], 3),
        "sift_fused_vs_lora": round(med["sift_fused"] / med["lora"], 3),
        "sift_fused_vs_floor": round(med["sift_fused"] / med["floor"], 3),
        "sift_hook_vs_full": round(med["sift_hook"] / med["full"], 3),
        "lora_vs_full": round(med["lora"] / med["full"], 3),
        "floor_vs_full": round(med["floor"] / med["full"], 3),
        "sift_state_vs_theory": round(f.grad_and_state_bytes() / theory, 3),
    }
    result["sift_theory_bytes"] = theory
    if device == "cuda":
        del setups, f, engine  # every variant's peak is measured alone, as the CPU's fresh-process RSS is
        for v in VARIANTS:
            result[v]["peak_memory_bytes"] = cuda_peak(shape, v)  # type: ignore[index]
    return result


def cuda_peak(shape: Shape, variant: str) -> int:
    """torch.cuda.max_memory_allocated of building the variant alone and running two steps (bytes)."""
    import gc

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    setup = Setup(variant, shape, "cuda")
    setup.step()
    setup.step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del setup
    gc.collect()
    torch.cuda.empty_cache()
    return peak


def bench_kernels(device: str, tokens: int = 1024, dim: int = 768, reps: int = 10) -> dict[str, float]:
    """Ways to get a weight gradient at k = 1% entries, on one BERT-base projection (milliseconds)."""
    g = torch.Generator().manual_seed(0)
    go, x = torch.randn(tokens, dim, generator=g).to(device), torch.randn(tokens, dim, generator=g).to(device)
    k = int(SPARSITY * dim * dim)
    idx = torch.randperm(dim * dim, generator=g)[:k].sort().values.to(device)
    rows, cols = idx // dim, idx % dim

    def dense_then_gather() -> torch.Tensor:
        return (go.t() @ x).reshape(-1)[idx]

    def gather_and_reduce() -> torch.Tensor:
        out = torch.empty(k, device=device)
        got, xt = go.t().contiguous(), x.t().contiguous()
        for s in range(0, k, 4096):
            out[s : s + 4096] = torch.linalg.vecdot(got[rows[s : s + 4096]], xt[cols[s : s + 4096]])
        return out

    def sddmm() -> torch.Tensor:
        return sift.sampled_weight_grad(go, x, idx)

    ref = dense_then_gather()
    res = {}
    for name, fn in [
        ("dense_then_gather", dense_then_gather),
        ("gather_and_reduce", gather_and_reduce),
        ("sddmm", sddmm),
    ]:
        torch.testing.assert_close(fn(), ref, rtol=1e-4, atol=1e-3)
        sync(device)
        t = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            sync(device)
            t.append(time.perf_counter() - t0)
        res[name + "_ms"] = round(1e3 * statistics.median(t), 3)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny shapes, for a smoke run")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-rss", action="store_true", help="skip the per-variant peak-RSS subprocesses")
    ap.add_argument("--shapes", default=None, help=f"comma-separated subset of {sorted(SHAPES)}")
    args = ap.parse_args()
    names = ["bert-tiny", "llama-tiny"] if args.quick else ["bert-base", "llama-small"]
    if args.shapes:
        names = args.shapes.split(",")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out: dict[str, object] = {"torch": torch.__version__, "threads": torch.get_num_threads(), "sparsity": SPARSITY}
    for device in devices:
        out[f"kernels_{device}"] = bench_kernels(device)
        for name in names:
            out[f"{name}_{device}"] = bench_shape(SHAPES[name], device, args.reps, rss=not args.no_rss)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
