"""Rank controls (kind ranks + overrides + presets) to a plan and back, on tiny models."""

from __future__ import annotations

import pytest

from lowrank_lab import InvalidRankPlan, RankPlan, compute_spectra
from lowrank_lab.plan import (
    PRESETS,
    RankControls,
    controls_from_plan,
    factorizes,
    linear_kinds,
    plan_from_controls,
    plan_keep_energy,
    read_plan,
)


@pytest.fixture(scope="module")
def llama_spectra(tiny_llama):
    return compute_spectra(tiny_llama.model, cache=False)


@pytest.fixture(scope="module")
def gpt2_spectra(tiny_gpt2):
    return compute_spectra(tiny_gpt2.model, cache=False)


def test_linear_kinds_cover_every_linear_matrix_once(llama_spectra):
    kinds = linear_kinds(llama_spectra)
    names = [n for k in kinds for n in k.names]
    assert sorted(names) == sorted(sp.name for sp in llama_spectra if not sp.is_embedding)
    assert [k.kind for k in kinds][:2] == ["self_attn.q_proj", "self_attn.k_proj"]
    q = kinds[0]
    assert (q.full_rank, q.break_even) == (64, 32)  # 64×64: r·128 ≥ 4096 from r = 32


def test_kind_rank_applies_to_every_layer_and_overrides_win(llama_spectra):
    controls = RankControls({"self_attn.q_proj": 8, "mlp.up_proj": 16}, {"model.layers.1.self_attn.q_proj": 4})
    plan = plan_from_controls(llama_spectra, controls).as_dict()
    assert plan == {
        "model.layers.0.self_attn.q_proj": 8,
        "model.layers.1.self_attn.q_proj": 4,
        "model.layers.0.mlp.up_proj": 16,
        "model.layers.1.mlp.up_proj": 16,
    }


@pytest.mark.parametrize("rank", [32, 63, 64, 1000])
def test_ranks_at_or_past_break_even_keep_dense(llama_spectra, rank):
    plan = plan_from_controls(llama_spectra, RankControls({"self_attn.q_proj": rank}))
    assert len(plan) == 0


def test_kind_rank_leaves_embeddings_alone_but_an_override_reaches_them(llama_spectra):
    kinds = {sp.kind for sp in llama_spectra}
    plan = plan_from_controls(llama_spectra, RankControls({k: 2 for k in kinds}))
    assert "model.embed_tokens" not in plan.as_dict()
    plan = plan_from_controls(llama_spectra, RankControls({}, {"model.embed_tokens": 8}))
    assert plan.as_dict() == {"model.embed_tokens": 8}


def test_with_methods_return_new_controls():
    c = RankControls({"a": 4})
    assert c.with_kind_rank("a", 5).kind_rank("a") == 5 and c.kind_rank("a") == 4
    d = c.with_override("x.0.a", 2)
    assert d.override("x.0.a") == 2 and d.with_override("x.0.a", None).overrides == ()
    assert d.without_overrides() == c
    assert hash(d) != hash(c)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_bad_ranks_are_refused_with_the_name(bad):
    with pytest.raises(InvalidRankPlan, match="'q'"):
        RankControls({"q": bad})
    with pytest.raises(InvalidRankPlan, match="override"):
        RankControls({}, {"q": bad})


@pytest.mark.parametrize("spectra_fixture", ["llama_spectra", "gpt2_spectra"])
@pytest.mark.parametrize(
    "make_plan",
    [
        lambda sp: RankPlan({}),
        lambda sp: PRESETS["keep-params"].plan(sp, 0.3),
        lambda sp: PRESETS["keep-energy"].plan(sp, 0.8),
        lambda sp: PRESETS["fixed-rank"].plan(sp, 5),
        lambda sp: RankPlan({s.name: 1 + i % 7 for i, s in enumerate(sp)}),  # every matrix different
    ],
)
def test_controls_round_trip_a_plan(request, spectra_fixture, make_plan):
    spectra = request.getfixturevalue(spectra_fixture)
    plan = make_plan(spectra)
    expected = {n: r for n, r in plan.ranks if factorizes(r, next(s.shape for s in spectra if s.name == n))}
    controls = controls_from_plan(spectra, plan)
    assert plan_from_controls(spectra, controls).as_dict() == expected


def test_a_uniform_preset_needs_no_overrides(llama_spectra):
    controls = controls_from_plan(llama_spectra, PRESETS["fixed-rank"].plan(llama_spectra, 4))
    assert controls.overrides == ()
    assert all(r == 4 for _, r in controls.kind_ranks)


def test_a_dense_kind_reads_back_as_its_full_rank(llama_spectra):
    plan = plan_keep_energy(llama_spectra, 1.0)  # every matrix needs its full rank: all dense
    controls = controls_from_plan(llama_spectra, plan)
    fulls = {k.kind: k.full_rank for k in linear_kinds(llama_spectra)}
    assert dict(controls.kind_ranks) == fulls


@pytest.mark.parametrize(("key", "value"), [("keep-params", 0.0), ("keep-params", 1.5), ("keep-energy", 0.2)])
def test_presets_refuse_settings_out_of_range(llama_spectra, key, value):
    with pytest.raises(InvalidRankPlan, match="must be in"):
        PRESETS[key].plan(llama_spectra, value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[1, 2]", "JSON object of module name"),
        (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
        (b'{"ranks": {"model.layers.9.mlp.up_proj": 4}}', "does not have: model.layers.9.mlp.up_proj"),
        (b'{"ranks": {"model.layers.0.mlp.up_proj": 65}}', "above its full rank 64"),
        (b'{"ranks": {"model.layers.0.mlp.up_proj": 0}}', "positive integer"),
        (b'{"ranks": {"model.layers.0.mlp.up_proj": "8"}}', "positive integer"),
    ],
)
def test_read_plan_names_what_is_wrong(llama_spectra, data, message):
    with pytest.raises(InvalidRankPlan, match=message):
        read_plan(data, llama_spectra)


def test_read_plan_takes_back_what_to_json_wrote(llama_spectra):
    plan = PRESETS["keep-params"].plan(llama_spectra, 0.25)
    assert read_plan(plan.to_json(model="tiny-llama").encode(), llama_spectra) == plan
