"""The uniform weight-matrix view: names, kinds, layers, orientation, ties, embeddings."""

from __future__ import annotations

import torch
from torch import nn

from lowrank_lab import weight_matrices
from lowrank_lab.matrices import split_name


def test_llama_names_kinds_layers_and_ties(tiny_llama):
    matrices = weight_matrices(tiny_llama.model)
    by_name = {m.name: m for m in matrices}
    names_in_model = {n for n, _ in tiny_llama.model.named_modules()}
    assert set(by_name) <= names_in_model  # exactly as named_modules() gives them
    q = by_name["model.layers.1.self_attn.q_proj"]
    assert (q.layer, q.kind, q.module_type, q.shape) == (1, "self_attn.q_proj", "Linear", (64, 64))
    k = by_name["model.layers.0.self_attn.k_proj"]
    assert k.shape == (32, 64)  # 2 kv heads × 16
    # lm_head is tied to the embedding: listed once, under the embedding, and marked
    assert "lm_head" not in by_name
    emb = by_name["model.embed_tokens"]
    assert emb.is_embedding and emb.tied_to == ("lm_head",) and emb.layer is None
    assert len(matrices) == 1 + 2 * 7  # embedding + 7 linears per layer


def test_gpt2_conv1d_is_viewed_out_by_in(tiny_gpt2):
    by_name = {m.name: m for m in weight_matrices(tiny_gpt2.model)}
    c_attn = by_name["transformer.h.0.attn.c_attn"]
    module = tiny_gpt2.model.transformer.h[0].attn.c_attn
    assert c_attn.module_type == "Conv1D"
    assert tuple(module.weight.shape) == (64, 192)  # Conv1D stores in×out
    assert c_attn.shape == (192, 64)
    assert torch.equal(c_attn.matrix(), module.weight.t())
    # the out×in view acts like a Linear weight: y = x Wᵀ + b
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert torch.allclose(module(x), x @ c_attn.matrix().t() + module.bias, atol=1e-6)
    assert by_name["transformer.wpe"].is_embedding
    assert by_name["transformer.wte"].tied_to == ("lm_head",)


def test_bert_kinds(tiny_bert):
    kinds = {m.kind for m in weight_matrices(tiny_bert.model) if m.layer is not None}
    assert kinds == {
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    }


def test_untied_head_is_listed_separately():
    model = nn.ModuleDict({"emb": nn.Embedding(10, 4), "head": nn.Linear(4, 10, bias=False)})
    names = [m.name for m in weight_matrices(model)]
    assert names == ["emb", "head"]


def test_embeddings_can_be_left_out(tiny_llama):
    matrices = weight_matrices(tiny_llama.model, include_embeddings=False)
    assert matrices and not any(m.is_embedding for m in matrices)


def test_matrix_is_a_view_not_a_copy(tiny_llama):
    m = weight_matrices(tiny_llama.model)[1]
    assert m.matrix().data_ptr() == m.weight.data_ptr()


def test_split_name():
    assert split_name("model.layers.12.mlp.down_proj") == (12, "mlp.down_proj")
    assert split_name("encoder.layer.0.attention.self.query") == (0, "attention.self.query")
    assert split_name("lm_head") == (None, "lm_head")
