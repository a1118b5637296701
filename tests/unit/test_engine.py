"""The block-sequential engine on tiny models: parity, what the refit minimises, folder = memory, bf16."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lowrank_lab import CalibrationSettings, LowRankLinear, RankPlan, allocate, compress, load_compressed
from lowrank_lab.compress.blocks import block_layout, linear_call_groups
from lowrank_lab.compress.calibration import calibration_blocks
from lowrank_lab.compress.decompositions import linear_matrices
from lowrank_lab.compress.engine import EngineSettings
from lowrank_lab.compress.pipeline import CompressionJob
from lowrank_lab.compress.refit import PairStats, anchored_decomposition, refit_b
from lowrank_lab.compress.stream import run_folder_job
from lowrank_lab.compress.writer import ShardWriter
from lowrank_lab.errors import CheckpointError, DataError, SettingsError
from lowrank_lab.models import ModelSpec, load_model
from tests.unit.export_support import logits

CAL = CalibrationSettings(samples=4, seq_len=64)
VARIANTS = {
    "default": EngineSettings(),
    "residual": EngineSettings(residual=True),
    "dense inputs": EngineSettings(sequential=False),
    "one pass per block": EngineSettings(within_block=False),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
def test_full_rank_through_the_engine_gives_the_dense_logits(request, model, variant):
    loaded = request.getfixturevalue(model)
    plan = RankPlan({m.name: m.full_rank for m in linear_matrices(loaded)})
    c = compress(loaded, plan, "whitened", CAL, dense_past_break_even=False, engine=VARIANTS[variant])
    assert sum(isinstance(m, LowRankLinear) for m in c.model.modules()) == len(plan)
    assert torch.allclose(logits(c.model), logits(loaded.model), atol=2e-4, rtol=1e-4)


def test_blocks_and_their_call_order_are_found(tiny_llama, tiny_gpt2):
    assert (block_layout(tiny_llama.model).prefix, block_layout(tiny_llama.model).count) == ("model.layers", 2)
    assert block_layout(tiny_gpt2.model).prefix == "transformer.h"
    block = tiny_llama.model.model.layers[0]
    hidden = torch.randn(2, 8, 64)
    position = tiny_llama.model.model.rotary_emb(hidden, torch.arange(8)[None])
    groups = linear_call_groups(block, hidden, {"position_embeddings": position, "attention_mask": None})
    assert groups == [
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        ["self_attn.o_proj"],
        ["mlp.gate_proj", "mlp.up_proj"],
        ["mlp.down_proj"],
    ]


def _inputs(loaded, model, name):
    """A layer's inputs over the calibration blocks in ``model``, (tokens, in) float64."""
    xs = []
    handle = model.get_submodule(name).register_forward_pre_hook(
        lambda m, a: xs.append(a[0].reshape(-1, a[0].shape[-1]))
    )
    try:
        with torch.no_grad():
            model(input_ids=calibration_blocks(loaded, CAL))
    finally:
        handle.remove()
    return xs[0].double()


@pytest.mark.parametrize("rank", [4, 16, 40])
def test_the_refit_never_increases_a_layers_output_error_on_its_calibration_inputs(tiny_llama, rank):
    """Block 0 compressed hard shifts what block 1 sees; its down_proj is refit to the dense outputs."""
    name = "model.layers.1.mlp.down_proj"
    first = RankPlan({m.name: 6 for m in linear_matrices(tiny_llama) if m.layer == 0})
    shifted_model = compress(tiny_llama, first, "whitened", CAL).model
    x = _inputs(tiny_llama, tiny_llama.model, name)  # dense stream (tokens, in)
    xs = _inputs(tiny_llama, shifted_model, name)  # shifted stream
    assert (x - xs).norm() > 0.05 * x.norm()
    w = tiny_llama.model.get_submodule(name).weight.detach().double()  # (out, in)
    target = x @ w.T  # the dense layer's outputs on its dense inputs

    def error(b, a):
        return float((xs @ (b @ a).T - target).square().sum())

    truncated = PairStats(xs.shape[1], cross=False)
    truncated.add(xs.float())
    plain = anchored_decomposition(w, truncated, 0.0).factors(rank)  # whitened truncation on the shifted inputs
    stats = PairStats(xs.shape[1], cross=True)
    stats.add(xs.float(), x.float())
    for ridge in (0.0, 1e-2, 1e-1):
        refit = anchored_decomposition(w, stats, ridge).factors(rank)
        assert error(*refit) <= error(*plain) * (1 + 1e-6)
    # The closed form is the best rank-r weight: refitting B for its own A changes nothing,
    # and refitting B for the plain truncation's A cannot beat it.
    best = anchored_decomposition(w, stats, 0.0).factors(rank)
    assert error(refit_b(w, best[1], stats, 0.0), best[1]) == pytest.approx(error(*best), rel=1e-6)
    assert error(*best) <= error(refit_b(w, plain[1], stats, 0.0), plain[1]) * (1 + 1e-6)
    # And the engine uses it: compressing the whole model ends with that layer nearer the dense outputs.
    both = RankPlan({**first.as_dict(), name: rank})
    engine = compress(tiny_llama, both, "whitened", CAL, engine=EngineSettings(ridge=0.0)).model
    dense_inputs = compress(tiny_llama, both, "whitened", CAL, engine=EngineSettings(sequential=False)).model

    def layer_error(model):
        layer = model.get_submodule(name).double()
        with torch.no_grad():
            return float((layer(xs) - target).square().sum())

    assert layer_error(engine) <= layer_error(dense_inputs)


def _save(loaded, folder, dtype=torch.float32, shard="20KB"):
    model = loaded.copy().to(dtype)
    model.save_pretrained(folder, max_shard_size=shard)
    loaded.tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2", "untied"])
def test_a_block_at_a_time_run_from_a_folder_equals_the_in_memory_run(request, model, tiny_llama, tmp_path):
    # The walk frees the embeddings and the head while the blocks run and reads them back for
    # the tail: a tied head comes back tied, an untied one is factorized on the shifted stream.
    loaded = _untied(tiny_llama) if model == "untied" else request.getfixturevalue(model)
    folder = _save(loaded, tmp_path / "src")
    assert (folder / "model.safetensors.index.json").exists()  # the source is sharded
    plan = RankPlan({m.name: max(1, m.full_rank // 3) for m in linear_matrices(loaded)})
    assert (model == "untied") == ("lm_head" in dict(plan.ranks))
    job = CompressionJob(plan=plan, calibration=CAL, evaluation=None)
    result = run_folder_job(folder, job, tmp_path / "out", "float32", overwrite=False)
    streamed = load_compressed(result.out).model
    in_memory = compress(loaded, plan, "whitened", CAL).model
    assert torch.equal(logits(streamed), logits(in_memory))


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the process's memory maps (Linux)")
def test_a_folder_s_shards_are_not_left_mapped_after_their_tensors_are_read(tiny_llama, tmp_path):
    from lowrank_lab.compress.sources import FolderSource

    folder = _save(tiny_llama, tmp_path / "src")
    source = FolderSource(folder)
    state = tiny_llama.model.state_dict()
    for name in sorted(source.names()):  # each read, compared and dropped, as the engine copies and drops it
        tensor = source.tensor(name)
        assert name not in state or torch.equal(tensor, state[name])
        del tensor
    # A shard left mapped keeps every page read through it in this process's resident memory.
    assert str(folder) not in Path("/proc/self/maps").read_text()


def test_a_bf16_folder_is_read_in_bf16_and_written_in_the_asked_dtype(tiny_llama, tmp_path):
    folder = _save(tiny_llama, tmp_path / "src", torch.bfloat16)
    plan = RankPlan({m.name: 8 for m in linear_matrices(tiny_llama)})
    job = CompressionJob(plan=plan, calibration=CAL, evaluation=None)
    result = run_folder_job(folder, job, tmp_path / "out", "bf16", overwrite=False)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["lowrank"]["dtype"] == "bfloat16"
    streamed = load_compressed(result.out).model
    assert next(streamed.parameters()).dtype == torch.bfloat16
    bf16 = load_model(ModelSpec("tiny-llama", dtype="bfloat16"))  # the same weights, held in bf16
    in_memory = compress(bf16, plan, "whitened", CAL).model
    # The same stored tensors (logits differ only because a bf16 model's rotary frequencies
    # are bf16 too, while a loaded checkpoint computes them in float32).
    ours, theirs = streamed.state_dict(), in_memory.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_the_shard_writer_splits_and_indexes(tmp_path):
    writer = ShardWriter(tmp_path, torch.float16, shard_bytes=1000)
    tensors = {f"t{i}": torch.randn(300) for i in range(5)}  # 600 bytes each in float16
    for name, t in tensors.items():
        writer.add({name: t})
    files = writer.close()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(files) == 3 and set(index["weight_map"]) == set(tensors)
    assert all(f.stat().st_size < 2000 for f in files)
    again = ShardWriter(tmp_path, torch.float16)
    again.add({"a": torch.ones(1)})
    with pytest.raises(CheckpointError, match="written twice"):
        again.add({"a": torch.ones(1)})
    with pytest.raises(CheckpointError, match="2 GiB"):
        ShardWriter(tmp_path, torch.float16, shard_bytes=3 * 2**30)


def _untied(loaded):
    """The same model with its output head untied from the embeddings (so it can be planned)."""
    import dataclasses

    model = loaded.copy()
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone(), requires_grad=False)
    return dataclasses.replace(loaded, model=model)


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2", "untied"])
@pytest.mark.parametrize("method", ["whitened", "pca", "svd"])
def test_several_plans_in_one_walk_equal_one_walk_each(request, model, method, tiny_llama):
    from lowrank_lab.compress.apply import compress_plans
    from lowrank_lab.plan import plan_keep_params

    loaded = _untied(tiny_llama) if model == "untied" else request.getfixturevalue(model)
    matrices = linear_matrices(loaded)
    plans = [plan_keep_params(matrices, 0.5), RankPlan({m.name: max(1, m.full_rank // 4) for m in matrices[::2]})]
    if model == "untied":
        plans[1] = RankPlan({**plans[1].as_dict(), "lm_head": 16})
    engine = EngineSettings(sequential=False, anchored=False)
    together = compress_plans(loaded, plans, method, CAL, engine=engine)
    for plan, shared in zip(plans, together):
        alone = compress(loaded, plan, method, CAL, engine=engine)
        assert shared.plan == alone.plan and shared.params == alone.params
        assert torch.allclose(logits(shared.model), logits(alone.model), atol=1e-6, rtol=1e-6)
    assert not torch.allclose(logits(together[0].model), logits(together[1].model), atol=1e-3)
    with pytest.raises(SettingsError, match="sequential=False"):
        compress_plans(loaded, plans, method, CAL)


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2", "untied"])
def test_plans_scored_in_the_walk_equal_their_compressed_models_loss(request, model, tiny_llama):
    from lowrank_lab.compress.apply import compress_plans, score_plans
    from lowrank_lab.loss import block_batches, mean_next_token_loss
    from lowrank_lab.plan import plan_keep_params

    loaded = _untied(tiny_llama) if model == "untied" else request.getfixturevalue(model)
    matrices = linear_matrices(loaded)
    plans = [plan_keep_params(matrices, 0.5), RankPlan({m.name: max(1, m.full_rank // 4) for m in matrices[::2]})]
    if model == "untied":
        plans[1] = RankPlan({**plans[1].as_dict(), "lm_head": 16})
    plans.append(RankPlan())  # the dense model scores as itself
    engine = EngineSettings(sequential=False, anchored=False)
    blocks = calibration_blocks(loaded, CAL)[:3]  # an odd count: a last batch of one row
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    scores = score_plans(loaded, plans, blocks, "whitened", CAL, engine=engine)
    models = [c.model for c in compress_plans(loaded, plans, "whitened", CAL, engine=engine)]
    for score, m in zip(scores, models):
        assert score == pytest.approx(mean_next_token_loss(m, block_batches(blocks, 2)), rel=1e-5)
    assert scores[2] == pytest.approx(mean_next_token_loss(loaded.model, block_batches(blocks, 2)), rel=1e-5)
    assert abs(scores[0] - scores[1]) > 1e-4  # two plans, two losses
    assert all(torch.equal(v, before[k]) for k, v in loaded.model.state_dict().items())  # the shared model untouched
    with pytest.raises(DataError, match="integer ids of shape"):
        score_plans(loaded, plans[:1], blocks.float(), "whitened", CAL, engine=engine)


def test_the_sums_and_the_whitening_are_exact_and_leave_g_as_it_was():
    from lowrank_lab.compress.refit import whitening

    torch.manual_seed(3)
    shifted, dense = torch.randn(2, 1500, 70), torch.randn(2, 1500, 70)  # 3000 tokens: three chunks
    stats = PairStats(70, cross=True)
    stats.add(shifted, dense)
    xs, xd = shifted.reshape(-1, 70).double(), dense.reshape(-1, 70).double()
    assert torch.allclose(stats.g, xs.T @ xs, rtol=1e-6, atol=1e-6 * float(stats.g.abs().max()))
    assert torch.allclose(stats.c, xd.T @ xs, rtol=1e-6, atol=1e-6 * float(stats.c.abs().max()))
    before = stats.g.clone()
    s, lam = whitening(stats.g, 0.1)
    assert torch.equal(stats.g, before)  # the Cholesky factor is a new matrix
    assert torch.equal(s, s.tril()) and lam == pytest.approx(0.1 * float(before.diagonal().mean()))
    assert torch.allclose(s @ s.T, before + lam * torch.eye(70, dtype=torch.float64), rtol=1e-10, atol=1e-8)


def test_the_shard_writer_streams_tensors_that_safetensors_reads_back(tmp_path):
    from safetensors import safe_open

    tensors = {
        "w": torch.randn(7, 5),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "mask": torch.tensor([True, False, True]),
        "t": torch.randn(4, 3).t(),  # not contiguous
    }
    writer = ShardWriter(tmp_path, torch.bfloat16, shard_bytes=60)
    for name, t in tensors.items():
        writer.add({name: t})
    files = writer.close()
    assert len(files) > 1 and not list(tmp_path.glob(".shard-*"))  # no data file is left behind
    read = {}
    for f in files:
        with safe_open(str(f), "pt") as handle:
            assert handle.metadata()["format"] == "pt"
            read.update({k: handle.get_tensor(k) for k in handle.keys()})
    assert read.keys() == tensors.keys()
    for name, t in tensors.items():
        want = t.to(torch.bfloat16) if t.is_floating_point() else t
        assert read[name].dtype == want.dtype and torch.equal(read[name], want), name


@pytest.mark.parametrize("method", ["whitened", "pca"])
def test_a_plan_that_factorizes_nothing_gives_the_dense_model_without_calibrating(tiny_llama, method):
    """Every rank at or past break-even (here a budget of 100%): the blocks are copied, no stream is needed."""
    plan = allocate(tiny_llama, 1.0, "uniform")
    compressed = compress(tiny_llama, plan, method, CalibrationSettings(samples=4, seq_len=32))
    assert len(compressed.plan) == 0
    ids = torch.arange(32).reshape(1, 32) % 300
    assert torch.equal(logits(compressed.model, ids), logits(tiny_llama.model, ids))
