"""Each method trains a few steps on a tiny BERT and changes exactly the parameters it should."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_bert, tiny_llama

from sift_bench.errors import SiftBenchError
from sift_bench.methods import METHODS, PrepareContext, Prepared
from sift_bench.methods.base import default_targets
from sift_bench.models import head_names

HEAD = ["classifier.weight", "classifier.bias"]
ATTN = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense")


def batches(n: int = 3, seed: int = 1, labels: bool = True) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, 128, (4, 12), generator=gen)  # (B, T)
        b = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        b["labels"] = torch.randint(0, 2, (4,), generator=gen) if labels else ids.clone()
        out.append(b)
    return out


def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss


def prepare(
    name: str, model: torch.nn.Module, value: float | None, head: list[str], lm: bool = False, **opts
) -> Prepared:
    method = METHODS.get(name)
    data = batches(labels=not lm)
    ctx = PrepareContext(head=head, loss_fn=loss_fn, selection_batches=lambda: iter(data), seed=0)
    return method.prepare(model, method.parse_options(opts), value, ctx)


def train(prepared: Prepared, steps: int = 3, lm: bool = False) -> None:
    opt = torch.optim.AdamW(prepared.params, lr=1e-2)
    prepared.attach(opt)
    prepared.model.train()
    for b in batches(steps, seed=2, labels=not lm):
        loss_fn(prepared.model, b).backward()
        opt.step()
        opt.zero_grad()
        prepared.after_step()


def changed(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    now = {n.replace(".base_layer", ""): p for n, p in model.named_parameters()}  # PEFT wraps targets
    return {n for n, old in before.items() if not torch.equal(now[n].detach(), old)}


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_registry_lists_the_six_methods_and_their_knobs():
    assert METHODS.names() == ["adapter", "classifier_only", "full", "lora", "random", "sift"]
    knobs = {n: METHODS.get(n).knob for n in METHODS}
    assert knobs == {"adapter": "bottleneck", "classifier_only": None, "full": None, "lora": "rank",
                     "random": "sparsity", "sift": "sparsity"}  # fmt: skip


def test_unknown_option_is_an_error_naming_the_field():
    with pytest.raises(SiftBenchError, match=r"method 'lora'.*rnak"):
        METHODS.get("lora").parse_options({"rnak": 4})
    with pytest.raises(SiftBenchError, match="kind"):
        METHODS.get("adapter").parse_options({"kind": "parallel"})


def test_head_is_everything_outside_the_base_model():
    assert head_names(tiny_bert(), "classification") == HEAD
    assert head_names(tiny_llama(), "causal_lm") == []


def test_full_trains_everything():
    model = tiny_bert()
    before = snapshot(model)
    p = prepare("full", model, None, HEAD)
    total = sum(t.numel() for t in model.parameters())
    assert (p.trainable_params, p.head_params) == (total - 66, 66)  # head: 32*2 + 2
    train(p)
    diff = changed(model, before)
    assert set(HEAD) <= diff
    assert all(f"bert.encoder.layer.{i}.{m}.weight" in diff for i in range(2) for m in ATTN)
    assert "bert.embeddings.token_type_embeddings.weight" in diff  # row 0 is used


def test_classifier_only_trains_only_the_head():
    model = tiny_bert()
    before = snapshot(model)
    p = prepare("classifier_only", model, None, HEAD)
    assert (p.trainable_params, p.head_params) == (0, 66)
    train(p)
    assert changed(model, before) == set(HEAD)


def test_lora_trains_factors_and_head_only():
    model = tiny_bert()
    before = snapshot(model)
    p = prepare("lora", model, 2, HEAD, dropout=0.0)
    assert p.trainable_params == 4 * 2 * (32 + 32)  # q, v in 2 layers; A (r,in) + B (out,r)
    train(p)
    base = p.model.get_base_model()
    now = {n.replace(".base_layer", ""): t for n, t in base.named_parameters() if "lora_" not in n}
    diff = {n for n, old in before.items() if not torch.equal(now[n].detach(), old)}
    assert diff == set(HEAD)
    lora_b = [t for n, t in base.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 4 and all(t.abs().sum() > 0 for t in lora_b)  # B starts at 0 and moved


@pytest.mark.parametrize("kind,n_adapters", [("houlsby", 4), ("pfeiffer", 2)])
def test_adapter_starts_identical_and_trains_only_adapters_and_head(kind: str, n_adapters: int):
    model = tiny_bert().eval()
    x = batches(1)[0]
    logits_before = model(**x).logits
    before = snapshot(model)
    p = prepare("adapter", model, 3, HEAD, kind=kind)
    torch.testing.assert_close(model(**x).logits, logits_before)  # zero-init up-projection
    assert p.trainable_params == n_adapters * (2 * 32 * 3 + 3 + 32)
    train(p)
    now = dict(model.named_parameters())
    adapters = {n for n in now if ".adapter." in n}
    assert len(adapters) == 4 * n_adapters
    assert all(not torch.equal(now[n], 0 * now[n]) for n in adapters if ".up." in n)
    assert changed(model, before) == set(HEAD)
    if kind == "pfeiffer":
        assert not any("attention" in n for n in adapters)


@pytest.mark.parametrize("name", ["sift", "random"])
def test_sparse_methods_change_only_selected_entries(name: str):
    model = tiny_bert()
    before = snapshot(model)
    p = prepare(name, model, 0.05, HEAD)
    engine = p.state
    expected_k = 8 * int(0.05 * 32 * 32)  # engine rule: floor(sparsity * numel) per weight
    assert p.trainable_params == expected_k == engine.num_trainable()
    assert METHODS.get(name).count(model, METHODS.get(name).parse_options({}), 0.05) == expected_k
    train(p)
    diff = changed(model, before)
    targets = {f"bert.encoder.layer.{i}.{m}.weight" for i in range(2) for m in ATTN}
    assert diff == targets | set(HEAD)
    now = dict(model.named_parameters())
    for w, idx in engine.indices().items():
        moved = (now[w].detach() != before[w]).reshape(-1).nonzero().squeeze(1)
        assert set(moved.tolist()) <= set(idx.long().tolist())  # nothing outside the selection
        assert len(moved) > 0.9 * len(idx)


def test_sift_and_random_pick_different_entries():
    picks = {}
    for name in ("sift", "random"):
        picks[name] = prepare(name, tiny_bert(), 0.05, HEAD).state.indices()
    w = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(picks["sift"][w], picks["random"][w])


def test_bad_target_module_is_a_clear_error():
    with pytest.raises(SiftBenchError, match=r"target_modules.*quer"):
        prepare("sift", tiny_bert(), 0.05, HEAD, target_modules=["quer"])


@pytest.mark.parametrize("name,value", [("sift", 0.05), ("lora", 2), ("adapter", 2), ("full", None)])
def test_methods_run_on_a_causal_llama(name: str, value: float | None):
    assert default_targets(tiny_llama()) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    model = tiny_llama()
    before = snapshot(model)
    p = prepare(name, model, value, [], lm=True)
    assert p.head_params == 0 and p.trainable_params > 0
    train(p, steps=2, lm=True)
    diff = changed(model, before)
    assert bool(diff) == (name in ("sift", "full"))  # lora/adapter leave the base weights untouched


def test_classifier_only_needs_a_head():
    with pytest.raises(SiftBenchError, match="no separate head"):
        prepare("classifier_only", tiny_llama(), None, [])


def test_sift_reselection_takes_the_next_training_batches():
    model = tiny_bert()
    g = torch.Generator().manual_seed(0)
    batches = [
        {"input_ids": torch.randint(0, 128, (4, 10), generator=g), "labels": torch.randint(0, 2, (4,), generator=g)}
        for _ in range(3)
    ]
    used: list[int] = []

    def loss_fn(m, batch):
        used.append(next(i for i, b in enumerate(batches) if b is batch))
        return m(**batch).loss

    head = [n for n, _ in model.named_parameters() if n.startswith("classifier")]
    ctx = PrepareContext(head=head, loss_fn=loss_fn, selection_batches=lambda: iter(batches), seed=0)
    method = METHODS.get("sift")
    prepared = method.prepare(model, method.parse_options({"reselect_every": 1}), 0.05, ctx)
    opt = torch.optim.AdamW(prepared.params, lr=1e-2)
    prepared.attach(opt)
    assert used == [0]  # the first selection
    for _ in range(3):
        loss_fn(model, batches[0]).backward()
        opt.step()
        opt.zero_grad()
        prepared.after_step()  # re-selects every step, each time on the stream's next batch
    assert used == [0, 0, 1, 0, 2, 0, 0]  # training always on batch 0; selections on 1, 2, then 0 again
