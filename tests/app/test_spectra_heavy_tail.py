"""AppTest of the Spectra page's heavy-tailed parts on tiny-llama: α on the heatmap in words, the ESD view."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from lowrank_lab import compute_spectra
from lowrank_lab.spectra.esd import esd_view
from lowrank_lab.spectra.heavy_tail import heavy_tail_metrics
from lowrank_lab.ui import spectra_widgets
from tests.app.test_spectra_page import decoded

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "1_Spectra.py")
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


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_alpha_heatmap_explains_the_band_and_counts_it(at, spectra):
    at.selectbox(key="spectra_metric").set_value("alpha").run()
    heat = figure(at, spectra_widgets.HEATMAP)["data"][0]
    assert (heat["zmin"], heat["zmax"]) == (1.0, 8.0)
    caption = next(c.value for c in at.caption if "between 2 and 6" in c.value)
    layered = [sp for sp in spectra.values() if sp.layer is not None]
    alphas = [heavy_tail_metrics(sp).alpha for sp in spectra.values()]
    in_band = sum(2 <= a <= 6 for a in alphas if math.isfinite(a))
    assert f"Here: {in_band} matrices in 2–6" in caption
    assert "over-fitting" in caption and "under-trained" in caption
    assert np.nanmax(decoded(heat["z"])) == pytest.approx(max(heavy_tail_metrics(sp).alpha for sp in layered))


def test_the_esd_view_of_the_selected_matrix(at, spectra):
    at.selectbox(key=spectra_widgets.MATRIX).set_value(UP1).run()
    sp = spectra[UP1]
    m = heavy_tail_metrics(sp)
    assert metric(at, "α (power-law tail)") == f"{m.alpha:.2f}"
    assert metric(at, "KS distance") == f"{m.ks_distance:.3f}"
    assert metric(at, "Tail") == f"{m.n_tail} of {sp.full_rank}"
    assert metric(at, "log₁₀ spectral norm") == f"{math.log10(sp.s[0] ** 2):.2f}"
    fig = figure(at, "spectra_esd")
    bars, power_law, mp = fig["data"]
    view = esd_view(sp)
    assert bars["type"] == "bar" and np.allclose(decoded(bars["y"]), view.density[view.density > 0])
    assert f"α = {m.alpha:.2f}" in power_law["name"]
    assert decoded(power_law["x"])[0] == pytest.approx(math.log10(m.xmin))
    assert mp["name"].startswith("Marchenko–Pastur")
    assert fig["layout"]["yaxis"]["type"] == "log"


def test_the_metrics_table_has_the_heavy_tailed_columns(at, spectra):
    at.selectbox(key="spectra_sort").set_value("alpha").run()
    table = at.dataframe[0].value
    assert {"alpha", "ks_distance", "alpha_weighted", "log_spectral_norm"} <= set(table.columns)
    row = table.set_index("name").loc[UP1]
    assert row["alpha"] == pytest.approx(heavy_tail_metrics(spectra[UP1]).alpha)
    assert list(table["alpha"]) == sorted(table["alpha"])
