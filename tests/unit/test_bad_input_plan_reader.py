"""The plan reader given bad input: RankPlan, RankPlan.from_json, validate against a model, the upload reader.

Every bad plan is an InvalidRankPlan whose message names the entry and says what a plan holds;
a name the model has but cannot factorize (a norm, a head tied to the embedding) is named as such.
"""

from __future__ import annotations

import re

import pytest

from lowrank_lab import InvalidRankPlan, compute_spectra
from lowrank_lab.matrices import weight_matrices
from lowrank_lab.plan import RankPlan, read_plan

FROM_JSON = [
    ("not JSON", "{oops", "is not valid JSON"),
    ("not UTF-8", b"\xff\xfe{}", "is not valid JSON"),
    ("nested 50,000 deep", "[" * 50_000 + "]" * 50_000, "nests too deeply"),
    ("a rank of 5000 digits", '{"a": ' + "9" * 5000 + "}", "thousands of digits"),
    ("a list", "[1, 2]", "a rank plan is a JSON object"),
    ("a string", '"plan"', "a rank plan is a JSON object"),
    ("null", "null", "a rank plan is a JSON object"),
    ("ranks that are a list", '{"ranks": [1, 2]}', "a rank plan is a JSON object"),
    ("another format", '{"format": "something.else", "ranks": {"a": 1}}', "not a lowrank_lab rank plan"),
    ("a string rank", '{"m.q": "8"}', "the rank of 'm.q' must be a positive integer, got '8'"),
    ("a float rank", '{"m.q": 8.5}', "got 8.5"),
    ("rank true", '{"m.q": true}', "got True"),
    ("rank 0", '{"m.q": 0}', "got 0"),
    ("a negative rank", '{"m.q": -3}', "got -3"),
    ("a null rank", '{"m.q": null}', "got None"),
    ("an empty name", '{"": 4}', "module names must be non-empty strings"),
]


@pytest.mark.parametrize(("text", "fragment"), [c[1:] for c in FROM_JSON], ids=[c[0] for c in FROM_JSON])
def test_from_json_refuses(text, fragment):
    with pytest.raises(InvalidRankPlan, match=re.escape(fragment)):
        RankPlan.from_json(text)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (None, "built from a mapping of module name → rank, got NoneType"),
        (5, "got int"),
        ("q_proj", "got str"),
        ([("a", 1, 2)], "(module name, rank) pairs"),
        ([1, 2], "(module name, rank) pairs"),
        ({3: 4}, "module names must be non-empty strings, got 3"),
    ],
)
def test_the_constructor_refuses(value, fragment):
    with pytest.raises(InvalidRankPlan, match=re.escape(fragment)):
        RankPlan(value)


def test_from_json_refuses_what_is_not_text():
    with pytest.raises(InvalidRankPlan, match="read from JSON text or bytes, got NoneType"):
        RankPlan.from_json(None)


AGAINST_MODEL = [
    ("a tied head", {"lm_head": 8}, "lm_head, which shares its weight with model.embed_tokens (tied)"),
    ("a norm", {"model.norm": 8}, "model.norm is a LlamaRMSNorm (a weight of shape [64]), not a Linear layer"),
    ("a layer norm", {"model.layers.0.input_layernorm": 2}, "is a LlamaRMSNorm"),
    ("a whole block", {"model.layers.0": 4}, "model.layers.0 is a LlamaDecoderLayer (no weight)"),
    ("a missing module", {"model.layers.7.mlp.up_proj": 4}, "does not have: model.layers.7.mlp.up_proj"),
    (
        "a rank past full rank",
        {"model.layers.0.self_attn.k_proj": 33},
        "rank 33 for model.layers.0.self_attn.k_proj is above its full rank 32",
    ),
]


@pytest.mark.parametrize(("ranks", "fragment"), [c[1:] for c in AGAINST_MODEL], ids=[c[0] for c in AGAINST_MODEL])
def test_validate_against_the_model_names_what_the_entry_is(tiny_llama, ranks, fragment):
    with pytest.raises(
        InvalidRankPlan, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")
    ):
        RankPlan(ranks).validate(weight_matrices(tiny_llama.model), model=tiny_llama.model)


def test_the_upload_reader_refuses_and_accepts(tiny_llama):
    spectra = compute_spectra(tiny_llama.model, cache=False)
    with pytest.raises(InvalidRankPlan, match="nests too deeply"):
        read_plan("[" * 50_000 + "]" * 50_000, spectra)
    with pytest.raises(InvalidRankPlan, match="thousands of digits"):
        read_plan('{"a": ' + "7" * 5000 + "}", spectra)
    plan = RankPlan({"model.layers.0.mlp.up_proj": 8})
    assert read_plan(plan.to_json(model="tiny-llama"), spectra) == plan
