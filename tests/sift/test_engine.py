"""The engine's contract: sparse training == dense training with a masked gradient, and nothing else moves."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

import sift
from tests.conftest import tiny_bert, tiny_llama

BERT_TARGETS = ["query", "key", "value", "attention.output.dense"]
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def bert_batches(n: int, seed: int = 1, batch: int = 4, seq: int = 12) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(0, 128, (batch, seq), generator=g),
            "labels": torch.randint(0, 2, (batch,), generator=g),
        }
        for _ in range(n)
    ]


def llama_batches(n: int, seed: int = 1, batch: int = 2, seq: int = 16) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 128, (batch, seq), generator=g)
        out.append({"input_ids": ids, "labels": ids})
    return out


def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss


def train_sparse(model, cfg, batches, steps, lr=1e-3, accum=1):
    engine = sift.SiftEngine(model, cfg)
    engine.select(batches, loss_fn)
    opt = torch.optim.AdamW(engine.parameters(), lr=lr, weight_decay=0.0)
    engine.attach(opt)
    for step in range(steps):
        for micro in range(accum):
            (loss_fn(model, batches[(step * accum + micro) % len(batches)]) / accum).backward()
        opt.step()
        opt.zero_grad()
    return engine


def train_masked_dense(model, indices, batches, steps, lr=1e-3, accum=1):
    """The reference: every targeted weight trains densely, its gradient masked to the selected entries."""
    params = dict(model.named_parameters())
    model.requires_grad_(False)
    weights = {n: params[n] for n in indices}
    masks = {}
    for n, w in weights.items():
        w.requires_grad_(True)
        m = torch.zeros(w.numel(), dtype=torch.bool)
        m[indices[n].long()] = True
        masks[n] = m.view_as(w)
    opt = torch.optim.AdamW(list(weights.values()), lr=lr, weight_decay=0.0)
    for step in range(steps):
        for micro in range(accum):
            (loss_fn(model, batches[(step * accum + micro) % len(batches)]) / accum).backward()
        for n, w in weights.items():
            w.grad.mul_(masks[n])
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("implementation", ["fused", "hook"])
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_sparse_training_equals_masked_dense_training(implementation, family):
    make, targets, data = (
        (tiny_bert, BERT_TARGETS, bert_batches) if family == "bert" else (tiny_llama, LLAMA_TARGETS, llama_batches)
    )
    batches = data(3)
    model = make()
    reference = copy.deepcopy(model)
    cfg = sift.SiftConfig(sparsity=0.05, target_modules=targets, implementation=implementation)
    engine = train_sparse(model, cfg, batches, steps=5, accum=2)
    train_masked_dense(reference, engine.indices(), batches, steps=5, accum=2)
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=f"{name} differs from masked dense training")
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), make().parameters(), strict=True))


@pytest.mark.parametrize("implementation", ["fused", "hook"])
def test_only_selected_entries_and_no_untargeted_parameter_change(implementation):
    model = tiny_bert()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = sift.SiftConfig(sparsity=0.02, target_modules=BERT_TARGETS, implementation=implementation)
    engine = train_sparse(model, cfg, bert_batches(2), steps=3, lr=1e-2)
    idx = engine.indices()
    for name, p in model.named_parameters():
        if name in idx:
            changed = (p.detach() != before[name]).reshape(-1).nonzero().flatten()
            assert set(changed.tolist()) <= set(idx[name].tolist())
            assert changed.numel() > 0, f"{name}: no selected entry moved"
        else:
            assert torch.equal(p, before[name]), f"untargeted {name} changed"


def test_gradient_selection_is_top_of_accumulated_gradient():
    model = tiny_bert()
    batches = bert_batches(3)
    reference = copy.deepcopy(model)
    cfg = sift.SiftConfig(sparsity=0.03, target_modules=["query", "value"], selection_batches=2)
    engine = sift.SiftEngine(model, cfg)
    engine.select(iter(batches), loss_fn)  # an iterator: only its first two batches may be consumed
    for b in batches[:2]:
        loss_fn(reference, b).backward()
    params = dict(reference.named_parameters())
    for name, idx in engine.indices().items():
        score = params[name].grad.reshape(-1).abs()
        k = sift.num_selected(score.numel(), 0.03)
        assert idx.numel() == k
        assert torch.equal(idx.long(), torch.topk(score, k).indices.sort().values)
        assert torch.all(idx[1:] > idx[:-1]), "indices must be sorted"
    assert all(p.grad is None for p in model.parameters()), "select() must leave no gradients behind"
    assert not any(p.requires_grad for p in model.parameters())


def test_random_selection_is_reproducible_and_differs_from_gradient():
    def indices(selection: str, seed: int) -> dict[str, torch.Tensor]:
        model = tiny_bert()
        engine = sift.SiftEngine(model, sift.SiftConfig(0.05, ["query"], selection=selection, seed=seed))
        engine.select(bert_batches(1), loss_fn)
        return engine.indices()

    a, b, c, g = indices("random", 0), indices("random", 0), indices("random", 1), indices("gradient", 0)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)
    assert any(not torch.equal(a[n], g[n]) for n in a)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_delta_round_trips_exactly_and_scales_with_entries(tmp_path, dtype):
    sizes = {}
    for sparsity in (0.01, 0.1):
        model = tiny_llama().to(dtype)
        pretrained = copy.deepcopy(model)
        engine = train_sparse(model, sift.SiftConfig(sparsity, LLAMA_TARGETS), llama_batches(2), steps=3, lr=1e-2)
        path = sift.save_delta(engine, tmp_path / f"delta_{sparsity}.safetensors")
        sift.apply_delta(pretrained, path)
        for (name, p), (_, q) in zip(model.named_parameters(), pretrained.named_parameters(), strict=True):
            assert torch.equal(p, q), f"{name} differs after apply_delta"
        tensor_bytes = sum(t.numel() * t.element_size() for t in load_file(path).values())
        per_entry = 4 + (4 if dtype == torch.bfloat16 else 8)  # int32 index + fp32/fp64 increment
        assert tensor_bytes == per_entry * engine.num_trainable()
        assert path.stat().st_size - tensor_bytes < 4096  # the rest is a small JSON header
        sizes[sparsity] = path.stat().st_size
    assert sizes[0.1] > sizes[0.01]


def test_apply_delta_rejects_the_wrong_model(tmp_path):
    model = tiny_llama()
    engine = train_sparse(model, sift.SiftConfig(0.05, ["q_proj"]), llama_batches(1), steps=1)
    path = sift.save_delta(engine, tmp_path / "d.safetensors")
    with pytest.raises(ValueError, match="is not in BertForSequenceClassification"):
        sift.apply_delta(tiny_bert(), path)


class _RecordShapes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                self.shapes.append(tuple(t.shape))
        return out


def test_fused_path_never_builds_a_dense_weight_gradient():
    model = tiny_llama()
    engine = sift.SiftEngine(model, sift.SiftConfig(0.05, LLAMA_TARGETS, implementation="fused"))
    engine.select(llama_batches(1), loss_fn)
    # 3 x 7 = 21 tokens: no activation shape can coincide with a (32, 32) or (16, 32) weight.
    loss = loss_fn(model, llama_batches(1, seed=5, batch=3, seq=7)[0])
    # The graph's leaves that receive gradients are the sparse values only, never a targeted weight.
    leaves, stack, seen = set(), [loss.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):
            leaves.add(id(node.variable))
        stack.extend(n for n, _ in node.next_functions)
    assert leaves == {id(v) for v in engine.parameters()}
    weight_shapes = {tuple(t.weight.shape) for t in engine.targets().values()}
    weight_shapes |= {s[::-1] for s in weight_shapes}
    with _RecordShapes() as rec:
        loss.backward()
    assert not weight_shapes & set(rec.shapes), "a weight-sized tensor was created during backward"
    assert all(t.weight.grad is None for t in engine.targets().values())
    assert all(v.grad is not None and v.grad.dtype == torch.float32 for v in engine.parameters())


def test_fused_works_with_bf16_autocast_and_gradient_checkpointing():
    batches = bert_batches(2)
    grads = {}
    for checkpointing in (False, True):
        model = tiny_bert()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        engine = sift.SiftEngine(model, sift.SiftConfig(0.05, BERT_TARGETS, implementation="fused"))
        engine.select(batches, loss_fn)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(model, batches[1])
        loss.backward()
        grads[checkpointing] = [v.grad.clone() for v in engine.parameters()]
    for a, b in zip(grads[False], grads[True], strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b)


def test_gpt2_conv1d_fused_equals_hook():
    from transformers import GPT2Config, GPT2LMHeadModel

    batches = llama_batches(2)
    results = []
    for implementation in ("fused", "hook"):
        torch.manual_seed(0)
        cfg = GPT2Config(
            vocab_size=128, n_positions=32, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0
        )
        model = GPT2LMHeadModel(cfg)
        train_sparse(
            model, sift.SiftConfig(0.05, ["c_attn", "c_proj"], implementation=implementation), batches, steps=3
        )
        results.append(model)
    for p, q in zip(results[0].parameters(), results[1].parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)


def test_resume_from_state_dict_continues_exactly():
    batches = bert_batches(4)
    cfg = sift.SiftConfig(0.05, BERT_TARGETS)
    straight = tiny_bert()
    train_sparse(straight, cfg, batches, steps=4)

    first = tiny_bert()
    engine = train_sparse(first, cfg, batches, steps=2)
    opt_state = engine._optimizers[0].state_dict()
    resumed = tiny_bert()  # fresh pre-trained weights: load_state_dict must put the values back
    engine2 = sift.SiftEngine(resumed, cfg)
    engine2.load_state_dict(engine.state_dict())
    opt = torch.optim.AdamW(engine2.parameters(), lr=1e-3, weight_decay=0.0)
    opt.load_state_dict(opt_state)
    engine2.attach(opt)
    for step in range(2, 4):
        loss_fn(resumed, batches[step % len(batches)]).backward()
        opt.step()
        opt.zero_grad()
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)


def test_reselection_keeps_state_of_staying_entries_and_resets_new_ones(tmp_path):
    batches = bert_batches(4)
    model = tiny_bert()
    pretrained = copy.deepcopy(model)
    engine = sift.SiftEngine(model, sift.SiftConfig(0.05, ["query", "value"], reselect_every=2))
    engine.select(batches, loss_fn)
    opt = torch.optim.AdamW(engine.parameters(), lr=1e-2)
    engine.attach(opt)
    for step in range(2):
        loss_fn(model, batches[step]).backward()
        opt.step()
        opt.zero_grad()
    assert engine.reselection_due
    old = {n: i.clone() for n, i in engine.indices().items()}
    old_m = {t.name: opt.state[t.values]["exp_avg"].clone() for t in engine.targets().values()}
    engine.reselect(batches[2:], loss_fn)
    for t in engine.targets().values():
        new, prev = t.index.long(), old[t.name].long()
        stay = torch.isin(new, prev)
        assert 0 < stay.sum() < new.numel(), "the test needs both staying and entering entries"
        m = opt.state[t.values]["exp_avg"]
        assert torch.all(m[~stay] == 0)
        torch.testing.assert_close(m[stay], old_m[t.name][torch.searchsorted(prev, new[stay])])
    loss_fn(model, batches[3]).backward()
    opt.step()
    path = sift.save_delta(engine, tmp_path / "d.safetensors")
    sift.apply_delta(pretrained, path)
    for p, q in zip(model.parameters(), pretrained.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sparsity": 0.0, "target_modules": ["query"]}, r"sparsity must be in \(0, 1\]"),
        ({"sparsity": 1.5, "target_modules": ["query"]}, r"sparsity must be in \(0, 1\]"),
        ({"sparsity": 0.1, "target_modules": []}, "target_modules is empty"),
        ({"sparsity": 0.1, "target_modules": ["query"], "selection": "magnitude"}, "selection must be"),
    ],
)
def test_bad_config_is_a_clear_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sift.SiftConfig(**kwargs)


def test_targets_that_match_nothing_name_what_exists():
    with pytest.raises(ValueError, match=r"\['q_proj'\] match no nn.Linear-like module.*'query'"):
        sift.SiftEngine(tiny_bert(), sift.SiftConfig(0.1, ["query", "q_proj"]))
    with pytest.raises(ValueError, match=r"match no nn\.Linear-like module"):
        sift.SiftEngine(tiny_bert(), sift.SiftConfig(0.1, r".*\.nothing"))
