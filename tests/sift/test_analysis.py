"""The paper's analyses on tiny random-init models: shapes, invariants, weights restored, exact memory."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from sift import SiftConfig, SiftEngine
from sift.analysis import (
    MemorySetup,
    MethodSpec,
    filter_normalized_direction,
    interpolation_landscape,
    loss_landscape,
    measured_activation_bytes,
    measured_state_bytes,
    predict_memory,
    quasi_sparsity,
    selection_stability,
    table1_comparison,
)

SEQ, BATCH = 16, 4


def _bert_batches(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(0, 128, (BATCH, SEQ), generator=gen),
            "attention_mask": torch.ones(BATCH, SEQ, dtype=torch.long),
            "labels": torch.randint(0, 2, (BATCH,), generator=gen),
        }
        for _ in range(n)
    ]


def _lm_batches(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 128, (BATCH, SEQ), generator=gen)
        out.append({"input_ids": ids, "labels": ids})
    return out


def loss_fn(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    return model(**batch).loss


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _assert_same(model: nn.Module, snap: dict[str, torch.Tensor]) -> None:
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), snap[n]), f"{n} changed"


# ------------------------------------------------------------------------------------------ quasi-sparsity
def test_quasi_sparsity_shares_monotone_and_reach_one(bert_factory) -> None:
    model = bert_factory()
    fractions = (0.01, 0.1, 0.5, 1.0)
    table = quasi_sparsity(model, _bert_batches(2), loss_fn, ["query", "value"], fractions=fractions, num_batches=2)
    n_weights = 4  # query and value in 2 layers
    assert len(table) == 2 * 2 * (n_weights + 2) * len(fractions)  # batches x modes x (weights + 2 pools)
    assert set(table["scope"]) == {"weight", "overall", "global"}
    for _, group in table.groupby(["batch", "mode", "scope", "weight"]):
        shares = group.sort_values("fraction")["share"].to_numpy()
        assert (shares[1:] >= shares[:-1]).all()  # more entries never hold less
        assert shares[-1] == pytest.approx(1.0, abs=1e-12)
        assert shares[0] > 0.01  # top 1% of a gradient holds more than 1% of its norm
    first = table[table.batch == 0].set_index(["mode", "scope", "weight", "fraction"])["share"]
    assert first.xs("batch").equals(first.xs("accumulated"))  # after one batch both modes agree


def test_quasi_sparsity_matches_a_direct_computation(bert_factory) -> None:
    model = bert_factory()
    batch = _bert_batches(1)[0]
    table = quasi_sparsity(model, [batch], loss_fn, ["query"], fractions=(0.01,), num_batches=1)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert all(p.grad is None for p in model.parameters())  # the analysis leaves no .grad behind
    loss_fn(model, batch).backward()
    sq = model.get_parameter(name).grad.reshape(-1).double() ** 2  # (1024,)
    expected = float(sq.topk(10).values.sum() / sq.sum())  # floor(1% of 1024) = 10 entries
    row = table[(table["mode"] == "batch") & (table["weight"] == name)].iloc[0]
    assert row["k"] == 10
    assert row["share"] == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------------------------------ stability
def test_selection_stability_invariants_and_restores_weights(bert_factory) -> None:
    model = bert_factory()
    snap = _snapshot(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    table = selection_stability(
        model, _bert_batches(4), loss_fn, ["query", "value"], fractions=(0.05, 1.0), steps=4, lr=1e-2
    )
    _assert_same(model, snap)
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    assert sorted(table["step"].unique()) == [0, 1, 2, 3]
    step0 = table[table.step == 0]
    assert (step0["jaccard_first"] == 1.0).all() and (step0["jaccard_prev"] == 1.0).all()  # a batch with itself
    assert (step0["share_first"] == step0["share_own"]).all()
    assert (table["share_first"] <= table["share_own"] + 1e-12).all()  # own top-k is the best k entries
    assert table["jaccard_first"].between(0, 1).all()
    full = table[table.fraction == 1.0]
    assert (full["jaccard_first"] == 1.0).all() and full["share_first"].tolist() == pytest.approx([1.0] * len(full))
    later = table[(table.step > 0) & (table.fraction == 0.05) & (table.scope == "overall")]
    assert (later["jaccard_first"] < 1.0).all()  # other batches (and trained weights) move the selection
    assert table.groupby("step")["loss"].first().nunique() == 4


# ------------------------------------------------------------------------------------------ landscape
def test_landscape_centre_is_the_model_loss_and_weights_are_restored(bert_factory) -> None:
    model = bert_factory()
    model.train()
    batches = _bert_batches(2)
    snap = _snapshot(model)
    table = loss_landscape(model, batches, loss_fn, dims=1, span=1.0, points=5, num_batches=2)
    _assert_same(model, snap)
    assert model.training
    assert list(table.columns) == ["alpha", "loss"]
    assert table["alpha"].tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    model.eval()
    with torch.no_grad():
        direct = sum(float(loss_fn(model, b)) for b in batches) / 2
    assert table.set_index("alpha").loc[0.0, "loss"] == direct
    assert table["loss"].nunique() == 5  # the loss does move along the direction


def test_landscape_2d_grid(llama_factory) -> None:
    model = llama_factory()
    snap = _snapshot(model)
    table = loss_landscape(model, _lm_batches(1), loss_fn, dims=2, span=0.5, points=3, num_batches=1)
    _assert_same(model, snap)
    assert list(table.columns) == ["alpha", "beta", "loss"] and len(table) == 9
    with torch.no_grad():
        direct = float(loss_fn(model.eval(), _lm_batches(1)[0]))
    assert table.set_index(["alpha", "beta"]).loc[(0.0, 0.0), "loss"] == direct


def test_interpolation_landscape_runs_from_random_init_to_pretrained(bert_factory) -> None:
    model, start = bert_factory(seed=0).eval(), bert_factory(seed=1).eval()
    batches = _bert_batches(1)
    snap = _snapshot(model)
    table = interpolation_landscape(model, start, batches, loss_fn, dims=1, points=5, num_batches=1)
    _assert_same(model, snap)
    assert table["alpha"].tolist() == [-0.5, 0.0, 0.5, 1.0, 1.5]
    with torch.no_grad():
        own, other = float(loss_fn(model, batches[0])), float(loss_fn(start, batches[0]))
    by_alpha = table.set_index("alpha")["loss"]
    assert by_alpha[1.0] == pytest.approx(own, abs=1e-5)  # alpha = 1: the (pre-trained) model itself
    assert by_alpha[0.0] == pytest.approx(other, abs=1e-5)  # alpha = 0: the random init


def test_filter_normalization(bert_factory) -> None:
    model = bert_factory()
    params = dict(model.named_parameters())
    d = filter_normalized_direction(params, torch.Generator().manual_seed(0))
    w = params["bert.encoder.layer.0.attention.self.query.weight"]
    dq = d["bert.encoder.layer.0.attention.self.query.weight"]
    torch.testing.assert_close(dq.norm(dim=1), w.detach().norm(dim=1), rtol=1e-5, atol=1e-6)
    assert not d["bert.encoder.layer.0.attention.self.query.bias"].any()  # 1-D: zero direction
    with pytest.raises(ValueError, match="odd"):
        loss_landscape(model, _bert_batches(1), loss_fn, points=4)


# ------------------------------------------------------------------------------------------ memory
def _fp32_setup() -> MemorySetup:
    return MemorySetup(param_bytes=4, moment_bytes=4, lora_bytes=4, seq_len=SEQ, batch_size=BATCH)


def _one_step(model: nn.Module, params: list[torch.Tensor], batch: dict[str, Any]) -> torch.optim.Optimizer:
    opt = torch.optim.AdamW(params, lr=1e-3)
    loss_fn(model, batch).backward()
    opt.step()
    return opt


def _check_exact(pred, measured: dict[str, int]) -> None:
    assert measured == {"params": pred.params, "grads": pred.grads, "optimizer": pred.optimizer}


def test_memory_model_exact_full(llama_factory) -> None:
    model = llama_factory()
    pred = predict_memory(model, MethodSpec(kind="full"), _fp32_setup())
    opt = _one_step(model, list(model.parameters()), _lm_batches(1)[0])
    _check_exact(pred, measured_state_bytes(model, opt))
    assert pred.optimizer == 2 * pred.params + 4 * len(list(model.parameters()))  # 2 moments + step counters


def test_memory_model_exact_lora(llama_factory) -> None:
    from peft import LoraConfig, get_peft_model

    base = llama_factory()
    pred = predict_memory(base, MethodSpec(kind="lora", lora_rank=4), _fp32_setup())
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert pred.trainable == sum(p.numel() for p in trainable)
    opt = _one_step(model, trainable, _lm_batches(1)[0])
    _check_exact(pred, measured_state_bytes(model, opt))


@pytest.mark.parametrize("implementation", ["fused", "hook"])
def test_memory_model_exact_sift(llama_factory, implementation: str) -> None:
    model = llama_factory()
    targets = ["q_proj", "v_proj", "down_proj"]
    pred = predict_memory(model, MethodSpec(kind="sift", sparsity=0.05, targets=targets), _fp32_setup())
    batch = _lm_batches(1)[0]
    engine = SiftEngine(model, SiftConfig(sparsity=0.05, target_modules=targets, implementation=implementation))
    engine.select([batch], loss_fn)
    opt = torch.optim.AdamW(engine.parameters(), lr=1e-3)
    engine.attach(opt)
    loss_fn(model, batch).backward()
    opt.step()
    assert pred.trainable == engine.num_trainable()
    extra = [*engine.parameters(), *engine.indices().values()]
    _check_exact(pred, measured_state_bytes(model, opt, extra))


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("factory", ["bert", "llama"])
def test_activation_formula_is_close_to_saved_tensors(factory: str, attn: str, bert_factory, llama_factory) -> None:
    model = bert_factory() if factory == "bert" else llama_factory()
    model.set_attn_implementation(attn)
    batch = _bert_batches(1)[0] if factory == "bert" else _lm_batches(1)[0]
    pred = predict_memory(model, MethodSpec(kind="full"), _fp32_setup())
    measured = measured_activation_bytes(model, loss_fn, batch)
    assert 0.85 < measured / pred.activations < 1.15, (measured, pred.activations)


def test_table1_prediction_is_close_to_the_paper() -> None:
    table = table1_comparison(sparsity=0.05)
    paper = table[table.source == "paper"].reset_index(drop=True)
    ours = table[(table.source == "predicted") & table.method.isin(["full", "sift"])].reset_index(drop=True)
    for col in ["params", "grads", "optimizer", "activations", "total"]:
        assert ours[col].to_numpy() == pytest.approx(paper[col].to_numpy(), rel=0.01), col


def test_cli_analyze_memory_writes_table_and_figure(tmp_path) -> None:
    import pandas as pd
    from typer.testing import CliRunner

    from sift_bench.cli import app

    result = CliRunner().invoke(app, ["analyze", "memory", "--sparsity", "0.05", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(tmp_path / "memory_table1.parquet")
    assert set(table["source"]) == {"paper", "predicted"} and len(table) == 12
    assert (tmp_path / "memory_table1.html").stat().st_size > 100_000  # plotly.js embedded: opens offline
    assert "111.03" in result.output  # the paper's full fine-tuning total is printed next to ours
