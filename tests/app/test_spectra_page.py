"""AppTest of the Spectra page on tiny-llama: heatmap, matrix choice, overlays, scales, table and CSV."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from lowrank_lab import compute_spectra
from lowrank_lab.spectra.views import GRID_METRICS, metric_grid
from lowrank_lab.ui import spectra_widgets, state
from lowrank_lab.ui.widgets import current_key
from tests.app.app_support import late_report

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "1_Spectra.py")
UP1 = "model.layers.1.mlp.up_proj"


@pytest.fixture(scope="module")
def spectra(tiny_llama):
    return {sp.name: sp for sp in compute_spectra(tiny_llama.model)}


@pytest.fixture
def at(tiny_llama):
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["model_source"] = "tiny-llama"
    at.run()
    assert not at.exception, at.exception
    return at


def figure(at: AppTest, key: str) -> dict:
    return next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if key in c.proto.id)


def decoded(values) -> np.ndarray:
    """Plotly sends numpy arrays base64-encoded (``{"dtype", "bdata", "shape"}``), flattened here."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values, dtype=float).ravel()


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.mark.parametrize("key", list(GRID_METRICS))
def test_heatmap_shows_the_chosen_metric_for_every_layer_and_kind(at, spectra, key):
    at.selectbox(key="spectra_metric").set_value(key).run()
    fig = figure(at, spectra_widgets.HEATMAP)
    heat = fig["data"][0]
    assert heat["type"] == "heatmap" and len(heat["x"]) == 7 and list(heat["y"]) == [0, 1]
    expected = metric_grid(list(spectra.values()), key).values
    assert np.allclose(decoded(heat["z"]).reshape(expected.shape), expected)
    assert fig["layout"]["title"]["text"] == GRID_METRICS[key].label
    # Each cell carries its module name so a click can select it.
    cells = fig["data"][1]
    assert sorted(cells["customdata"]) == sorted(n for n, sp in spectra.items() if sp.layer is not None)


def test_choosing_a_matrix_in_the_fallback_list_opens_its_spectrum(at, spectra):
    at.selectbox(key=spectra_widgets.MATRIX).set_value(UP1).run()
    sp = spectra[UP1]
    assert metric(at, "Shape (out×in)") == "160×64"
    assert metric(at, "Stable rank") == f"{sp.metrics.stable_rank:.1f}"
    assert metric(at, "Energy ranks") == f"{sp.metrics.energy_rank_90} / {sp.metrics.energy_rank_99}"
    fig = figure(at, "spectra_spectrum")
    values, edge, energy = fig["data"][:3]
    assert values["name"] == "L1 mlp.up_proj"
    assert np.allclose(decoded(values["y"]), sp.s / sp.s[0])  # normalised by σ_max by default
    assert decoded(edge["y"])[0] == pytest.approx(sp.metrics.mp_edge / sp.s[0])
    assert np.allclose(decoded(energy["y"]), sp.cumulative_energy())
    # The heatmap outlines the chosen cell.
    outline = figure(at, spectra_widgets.HEATMAP)["data"][2]
    assert (outline["x"], outline["y"]) == (["mlp.up_proj"], [1])


def test_raw_scale_and_log_axis(at, spectra):
    at.toggle(key="spectra_normalise").set_value(False).run()
    fig = figure(at, "spectra_spectrum")
    sp = spectra["model.layers.0.self_attn.q_proj"]
    assert np.allclose(decoded(fig["data"][0]["y"]), sp.s)
    assert fig["layout"]["yaxis"]["type"] == "log"
    assert fig["layout"]["yaxis"]["title"]["text"] == "σᵢ (log)"


@pytest.mark.parametrize(("mode", "matrices"), [("matrix", 1), ("kind", 2), ("layer", 7)])
def test_overlays_draw_the_group(at, mode, matrices):
    at.selectbox(key=spectra_widgets.MATRIX).set_value(UP1).run()
    at.radio(key="spectra_overlay").set_value(mode).run()
    fig = figure(at, "spectra_spectrum")
    named = [t["name"] for t in fig["data"] if t.get("showlegend") is not False]
    assert len(named) == matrices and "L1 mlp.up_proj" in named
    # Values and energy per matrix; one MP edge, the selected matrix's (many would bunch into a smear).
    assert len(fig["data"]) == 2 * matrices + 1
    edges = [t for t in fig["data"] if t.get("line", {}).get("dash") == "dash"]
    assert len(edges) == 1 and edges[0]["legendgroup"] == UP1


def test_rank_axis_as_fraction_compares_different_sizes(at):
    at.radio(key="spectra_overlay").set_value("layer").run()
    at.toggle(key="spectra_rank_fraction").set_value(True).run()
    fig = figure(at, "spectra_spectrum")
    assert all(decoded(t["x"])[-1] == pytest.approx(1.0) for t in fig["data"] if t.get("showlegend") is not False)


def test_metrics_table_sorts_and_downloads(at, spectra):
    table = at.dataframe[0].value
    assert len(table) == len(spectra) and {"stable_rank", "mp_edge", "energy_rank_99"} <= set(table.columns)
    at.selectbox(key="spectra_sort").set_value("stable_rank").run()
    at.toggle(key="spectra_sort_desc").set_value(True).run()
    table = at.dataframe[0].value
    assert list(table["stable_rank"]) == sorted(table["stable_rank"], reverse=True)
    assert at.download_button(key="spectra_csv").proto.label == "Download metrics CSV"
    assert list(table.columns[:3]) == ["name", "stable_rank", "kind"]  # the sorted column next to the name
    assert str(table["layer"].dtype) == "Int64"


def test_log_ticks_are_written_out_whatever_the_range():
    from lowrank_lab.ui.spectra_charts import log_ticks

    values, labels = log_ticks(0.2, 1.0)  # no power of ten inside but 1: plotly would label "1, 9, 8, …, 2"
    assert labels == ["0.2", "0.5", "1"] and values == pytest.approx([0.2, 0.5, 1.0])
    values, labels = log_ticks(0.31, 0.9)
    assert labels == ["0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
    values, labels = log_ticks(1e-7, 3.0)
    assert labels == ["1e-07", "1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1", "1"]


def test_the_chosen_matrix_carries_over_to_the_ranks_page(tiny_llama):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["model_source"] = "tiny-llama"
    at.run()
    at.switch_page("pages/1_Spectra.py").run()
    at.selectbox(key=spectra_widgets.MATRIX).set_value(UP1).run()
    at.switch_page("pages/2_Ranks.py").run()
    assert at.selectbox(key="ranks_matrix").value == UP1


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-bert"])
def test_other_architectures(model):
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["model_source"] = model
    at.run()
    assert not at.exception and not at.error
    heat = figure(at, spectra_widgets.HEATMAP)["data"][0]
    assert list(heat["y"]) == [0, 1] and len(heat["x"]) >= 4
    assert len(at.dataframe[0].value) == len(at.selectbox(key=spectra_widgets.MATRIX).options)


def test_a_late_report_of_the_matrix_picker_does_not_undo_a_heatmap_click(at):
    """A cell clicked (the choice made outside the selectbox), then another move before that run
    arrived: the browser still reports the selectbox's old choice, which must not be taken back."""
    picker = at.selectbox(key=current_key(spectra_widgets.MATRIX, at.session_state))
    assert picker.value != UP1
    old = picker._widget_state
    at.session_state[state.SELECTED_MATRIX] = UP1  # what a click on UP1's cell does (_on_cell)
    at.run()
    at.selectbox(key="spectra_metric").set_value("stable_rank")  # the next move
    late_report(at, [old])
    assert not at.exception, at.exception
    assert at.session_state[state.SELECTED_MATRIX] == UP1
    assert at.selectbox(key=current_key(spectra_widgets.MATRIX, at.session_state)).value == UP1
