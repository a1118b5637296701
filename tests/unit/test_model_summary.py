"""The home page's model summary: matrices grouped by kind, on tiny models."""

from __future__ import annotations

import pytest

from lowrank_lab import weight_matrices
from lowrank_lab.model_summary import kind_rows, layer_count


def test_llama_kinds_add_up(tiny_llama):
    matrices = weight_matrices(tiny_llama.model)
    rows = kind_rows(matrices, tiny_llama.n_params)
    assert [r.kind for r in rows][:3] == ["model.embed_tokens", "self_attn.q_proj", "self_attn.k_proj"]
    assert sum(r.params for r in rows) == sum(m.params for m in matrices)
    assert sum(r.model_fraction for r in rows) == pytest.approx(sum(m.params for m in matrices) / tiny_llama.n_params)
    embed = rows[0]
    assert embed.embedding and embed.tied_to == ("lm_head",) and embed.shapes == ((512, 64),)
    up = next(r for r in rows if r.kind == "mlp.up_proj")
    assert (up.matrices, up.shapes, up.params) == (2, ((160, 64),), 2 * 160 * 64)
    assert layer_count(matrices) == 2


def test_gpt2_shapes_are_out_by_in(tiny_gpt2):
    rows = kind_rows(weight_matrices(tiny_gpt2.model), tiny_gpt2.n_params)
    c_fc = next(r for r in rows if r.kind == "mlp.c_fc")
    assert c_fc.shapes == ((256, 64),)  # Conv1D stores 64×256 (in×out)
