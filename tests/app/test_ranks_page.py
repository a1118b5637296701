"""AppTest of the Ranks page on tiny-llama: sliders, overrides, presets, plan files, and the numbers shown."""

from __future__ import annotations

import json
from pathlib import Path

import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

from lowrank_lab import RankPlan, compute_spectra, summarize_plan
from lowrank_lab.plan.curves import error_curve, plan_point, tradeoff_curves
from lowrank_lab.plan.presets import PRESETS
from lowrank_lab.ui import rank_display as shown
from lowrank_lab.ui import rank_widgets as widgets
from lowrank_lab.ui.rank_charts import error_rank_spec, fast_figure, tradeoff_spec
from tests.app.app_support import late_report

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "2_Ranks.py")
Q = "self_attn.q_proj"
UP0 = "model.layers.0.mlp.up_proj"


@pytest.fixture(scope="module")
def spectra(tiny_llama):
    return compute_spectra(tiny_llama.model)


@pytest.fixture
def at(tiny_llama):
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["model_source"] = "tiny-llama"
    at.run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def number(text: str) -> float:
    return float(text.replace(",", "").rstrip("%"))


def plan_of(at: AppTest) -> dict[str, int]:
    return at.session_state["rank_plan"].as_dict()


def figure(at: AppTest, key: str) -> dict:
    return next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if key in c.proto.id)


def test_totals_equal_the_sum_over_matrices(at, spectra, tiny_llama):
    table = at.dataframe[0].value
    assert len(table) == len(spectra)
    saved = number(metric(at, shown.SAVED_PARAMS))
    assert saved == table["params_saved"].sum() > 0
    linear = table[~table["name"].eq("model.embed_tokens")]
    assert number(metric(at, shown.SAVED_LINEAR)) == pytest.approx(
        100 * linear["params_saved"].sum() / linear["params_dense"].sum(), abs=0.05
    )
    assert number(metric(at, shown.SAVED_MODEL)) == pytest.approx(100 * saved / tiny_llama.n_params, abs=0.05)
    assert number(metric(at, shown.KEPT_MODEL)) == tiny_llama.n_params - saved
    # The first visit starts from the 50%-of-parameters preset, and the plan is in session state.
    assert plan_of(at) == PRESETS["keep-params"].plan(spectra, 0.5).as_dict()
    expected = summarize_plan(spectra, at.session_state["rank_plan"], tiny_llama.n_params)
    assert number(metric(at, shown.WEIGHTED_ERROR)) == pytest.approx(expected.weighted_error, abs=5e-5)


def test_kind_slider_sets_every_layer_and_error_falls_as_rank_rises(at):
    errors, saved = [], []
    for rank in (2, 8, 20, 31):
        at.slider(key=widgets.kind_key(Q, at.session_state)).set_value(rank).run()
        plan = plan_of(at)
        assert plan["model.layers.0.self_attn.q_proj"] == plan["model.layers.1.self_attn.q_proj"] == rank
        errors.append(number(metric(at, shown.WEIGHTED_ERROR)))
        saved.append(number(metric(at, shown.SAVED_PARAMS)))
    assert errors == sorted(errors, reverse=True) and len(set(errors)) == 4
    assert saved == sorted(saved, reverse=True)
    # Two q_proj matrices of 64×64: one rank step is 2·(64+64) parameters.
    assert saved[2] - saved[3] == 2 * 128 * (31 - 20)


def test_rank_at_break_even_says_keep_dense(at):
    at.slider(key=widgets.kind_key(Q, at.session_state)).set_value(32).run()
    assert "model.layers.0.self_attn.q_proj" not in plan_of(at)
    assert "keep dense" in at.slider(key=widgets.kind_key(Q, at.session_state)).label
    assert "keep dense" not in at.slider(key=widgets.kind_key("mlp.up_proj", at.session_state)).label
    table = at.dataframe[0].value.set_index("name")
    assert table.loc["model.layers.0.self_attn.q_proj", "dense"]
    assert table.loc["model.layers.0.self_attn.q_proj", "params_saved"] == 0


def test_matrix_override_changes_one_matrix_and_can_be_undone(at):
    at.selectbox(key="ranks_matrix").set_value(UP0).run()
    before = plan_of(at)
    at.slider(key=widgets.matrix_rank_key(at.session_state)).set_value(3).run()
    after = plan_of(at)
    assert after[UP0] == 3
    assert {k: v for k, v in after.items() if k != UP0} == {k: v for k, v in before.items() if k != UP0}
    assert metric(at, "Rank kept") == "3"
    assert any(c.value.startswith("Override: rank 3") for c in at.caption)
    # The error chart marks the chosen rank on the selected matrix's curve.
    fig = figure(at, "ranks_error_chart")
    assert any(t.get("name") == "plan: r=3" for t in fig["data"])
    at.button(key="ranks_reset_override").click().run()
    assert plan_of(at) == before
    # A kind slider move drops that kind's overrides.
    at.slider(key=widgets.matrix_rank_key(at.session_state)).set_value(5).run()
    at.slider(key=widgets.kind_key("mlp.up_proj", at.session_state)).set_value(7).run()
    assert plan_of(at)[UP0] == plan_of(at)["model.layers.1.mlp.up_proj"] == 7


def test_clear_all_overrides(at):
    at.selectbox(key="ranks_matrix").set_value(UP0).run()
    at.slider(key=widgets.matrix_rank_key(at.session_state)).set_value(3).run()
    at.selectbox(key="ranks_matrix").set_value("model.layers.1.mlp.down_proj").run()
    at.slider(key=widgets.matrix_rank_key(at.session_state)).set_value(4).run()
    assert plan_of(at)[UP0] == 3 and plan_of(at)["model.layers.1.mlp.down_proj"] == 4
    at.button(key="ranks_clear_overrides").click().run()
    plan = plan_of(at)
    assert plan[UP0] == plan["model.layers.1.mlp.up_proj"]
    assert plan["model.layers.1.mlp.down_proj"] == plan["model.layers.0.mlp.down_proj"]


@pytest.mark.parametrize(("key", "value"), [("keep-params", 0.2), ("keep-energy", 0.8), ("fixed-rank", 6)])
def test_each_preset_sets_the_plan_and_the_sliders(at, spectra, key, value):
    at.number_input(key=widgets.preset_value_key(key)).set_value(value).run()
    at.button(key=widgets.preset_button_key(key)).click().run()
    assert plan_of(at) == PRESETS[key].plan(spectra, value).as_dict()
    assert at.success and "Applied" in at.success[0].value
    if key == "fixed-rank":
        assert at.slider(key=widgets.kind_key(Q, at.session_state)).value == value
    # The trade-off chart puts the current plan where its summary says.
    fig = figure(at, "ranks_tradeoff_chart")
    star = next(t for t in fig["data"] if t.get("name") == "current plan")
    kept, err = plan_point(summarize_plan(spectra, at.session_state["rank_plan"]))
    assert star["x"][0] == pytest.approx(100 * kept) and star["y"][0] == pytest.approx(err)


def test_upload_a_good_plan(at, spectra):
    plan = RankPlan({UP0: 5, "model.layers.1.self_attn.v_proj": 2, "model.embed_tokens": 8})
    at.file_uploader(key=widgets.upload_key(at.session_state)).upload(
        "plan.json", plan.to_json(model="tiny-llama").encode()
    ).run()
    assert not at.error
    assert plan_of(at) == plan.as_dict()
    assert at.success and "Loaded plan.json: 3 ranks" in at.success[0].value
    # Moving a slider afterwards works from the uploaded plan (it is not re-applied on reruns).
    at.slider(key=widgets.kind_key(Q, at.session_state)).set_value(4).run()
    assert plan_of(at) == {**plan.as_dict(), "model.layers.0.self_attn.q_proj": 4, "model.layers.1.self_attn.q_proj": 4}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{oops", "not valid JSON"),
        (b'["model.layers.0.mlp.up_proj", 4]', "JSON object of module name"),
        (b'{"ranks": {"model.layers.7.mlp.up_proj": 4}}', "does not have: model.layers.7.mlp.up_proj"),
        (b'{"ranks": {"model.layers.0.mlp.up_proj": 100}}', "above its full rank 64"),
        (b'{"ranks": {"model.layers.0.mlp.up_proj": -1}}', "positive integer"),
    ],
)
def test_upload_a_bad_plan_shows_an_error_and_keeps_the_plan(at, content, message):
    before = plan_of(at)
    at.file_uploader(key=widgets.upload_key(at.session_state)).upload("bad.json", content).run()
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value and "bad.json" in at.error[0].value
    assert plan_of(at) == before


def test_a_plan_set_elsewhere_is_adopted(at):
    at.session_state["rank_plan"] = RankPlan({UP0: 9})
    at.run()
    assert plan_of(at) == {UP0: 9}
    assert at.slider(key=widgets.kind_key(Q, at.session_state)).value == 64  # dense: the kind's full rank
    assert number(metric(at, shown.SAVED_PARAMS)) == 160 * 64 - 9 * (160 + 64)


@pytest.mark.parametrize("rank", [None, 1, 17, 31])
def test_the_fast_unvalidated_figures_are_valid_plotly(spectra, rank):
    """The page skips plotly's validation for speed; the same dicts must pass it."""
    curve = error_curve(next(sp for sp in spectra if sp.name == UP0))
    go.Figure(error_rank_spec(curve, rank, UP0))  # raises ValueError on any bad property
    curves = tradeoff_curves(spectra, n_points=6)
    go.Figure(tradeoff_spec(curves, (0.5, 0.3)))
    assert (
        fast_figure(tradeoff_spec(curves, (0.5, 0.3))).to_dict()
        == go.Figure(tradeoff_spec(curves, (0.5, 0.3))).to_dict()
    )


def test_ranks_survive_a_visit_to_another_page(tiny_llama):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["model_source"] = "tiny-llama"
    at.run()
    at.switch_page("pages/2_Ranks.py").run()
    at.slider(key=widgets.kind_key(Q, at.session_state)).set_value(11).run()
    at.switch_page("pages/1_Spectra.py").run()
    assert not at.exception
    at.switch_page("pages/2_Ranks.py").run()
    assert at.slider(key=widgets.kind_key(Q, at.session_state)).value == 11
    assert plan_of(at)["model.layers.1.self_attn.q_proj"] == 11


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-bert"])
def test_other_architectures(model):
    """GPT-2's Conv1D (stored in×out) and BERT's encoder with a pooler outside the layers."""
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["model_source"] = model
    at.run()
    assert not at.exception and not at.error
    assert number(metric(at, shown.SAVED_PARAMS)) == at.dataframe[0].value["params_saved"].sum() > 0
    kind = "mlp.c_fc" if model == "tiny-gpt2" else "intermediate.dense"
    at.slider(key=widgets.kind_key(kind, at.session_state)).set_value(3).run()
    assert all(r == 3 for n, r in plan_of(at).items() if n.endswith(kind))


def test_messages_and_the_uploaded_file_go_on_the_next_action(at):
    plan = RankPlan({UP0: 5})
    key = widgets.upload_key(at.session_state)
    at.file_uploader(key=key).upload("plan.json", plan.to_json(model="tiny-llama").encode()).run()
    assert at.success and "Loaded plan.json: 1 ranks" in at.success[0].value
    assert widgets.upload_key(at.session_state) != key  # a fresh, empty uploader
    at.button(key=widgets.preset_button_key("keep-energy")).click().run()
    assert [s.value for s in at.success] == ["Applied “Keep this fraction of each matrix's energy Σσᵢ²” = 0.9"]
    at.slider(key=widgets.kind_key(Q, at.session_state)).set_value(3).run()
    assert not at.success and not at.error  # transient: gone on the next action


def test_a_kind_slider_over_per_matrix_ranks_says_what_a_move_replaces(at):
    at.session_state["rank_plan"] = RankPlan(
        {"model.layers.0.self_attn.q_proj": 5, "model.layers.1.self_attn.q_proj": 9}
    )
    at.run()
    label = next(s.label for s in at.slider if s.key == widgets.kind_key(Q, at.session_state))
    assert "mixed: 1 of 2 set one by one (ranks 5–9)" in label and "sets all 2 to one rank" in label
    at.slider(key=widgets.kind_key(Q, at.session_state)).set_value(7).run()
    assert plan_of(at)["model.layers.0.self_attn.q_proj"] == plan_of(at)["model.layers.1.self_attn.q_proj"] == 7
    assert "mixed" not in next(s.label for s in at.slider if s.key == widgets.kind_key(Q, at.session_state))


def test_a_late_report_of_the_matrix_slider_does_not_undo_a_kind_move(at):
    """Keys pressed quickly on a kind slider: the next move arrives with the one-matrix slider's
    old value (the selected matrix is of that kind), and must not become an override."""
    q0 = "model.layers.0.self_attn.q_proj"
    assert at.selectbox(key="ranks_matrix").value == q0
    matrix = at.slider(key=widgets.matrix_rank_key(at.session_state))
    rank, old = matrix.value, matrix._widget_state  # what the browser holds until the next run arrives
    at.slider(key=widgets.kind_key(Q, at.session_state)).set_value(rank - 2).run()
    at.slider(key=widgets.kind_key(Q, at.session_state)).set_value(rank - 3)
    late_report(at, [old])
    assert not at.exception, at.exception
    plan = plan_of(at)
    assert plan[q0] == plan["model.layers.1.self_attn.q_proj"] == rank - 3
    assert not at.session_state[widgets.CONTROLS].controls.overrides
    assert "mixed" not in at.slider(key=widgets.kind_key(Q, at.session_state)).label
    assert at.slider(key=widgets.matrix_rank_key(at.session_state)).value == rank - 3


def test_a_move_of_the_matrix_slider_made_before_the_page_redrew_it_is_kept(at):
    """A kind moved, then the one-matrix slider dragged before that run arrived: the browser reports
    the drag under the slider's old key, and it is a move (an override), not a late report."""
    q0 = "model.layers.0.self_attn.q_proj"
    matrix = at.slider(key=widgets.matrix_rank_key(at.session_state))
    rank = matrix.value
    at.slider(key=widgets.kind_key(Q, at.session_state)).set_value(rank - 2).run()
    dragged = matrix.set_value(rank + 3)._widget_state  # on the slider as the browser still drew it
    late_report(at, [dragged])
    assert not at.exception, at.exception
    plan = plan_of(at)
    assert (plan[q0], plan["model.layers.1.self_attn.q_proj"]) == (rank + 3, rank - 2)
    assert at.slider(key=widgets.matrix_rank_key(at.session_state)).value == rank + 3
    assert "mixed" in at.slider(key=widgets.kind_key(Q, at.session_state)).label


def test_a_late_report_of_the_kind_sliders_does_not_undo_a_preset(at, spectra):
    """A preset moves every kind slider; a move made before its run arrived carries the sliders'
    old values, which must not put the old ranks back."""
    old = [s._widget_state for s in at.slider if s.key.startswith("ranks_kind_")]
    at.number_input(key=widgets.preset_value_key("fixed-rank")).set_value(6).run()
    at.button(key=widgets.preset_button_key("fixed-rank")).click().run()
    applied = PRESETS["fixed-rank"].plan(spectra, 6).as_dict()
    assert plan_of(at) == applied != {}
    at.selectbox(key="ranks_matrix").set_value(UP0)  # the move: another matrix picked
    late_report(at, old)
    assert not at.exception, at.exception
    assert plan_of(at) == applied
    assert at.slider(key=widgets.kind_key(Q, at.session_state)).value == 6
