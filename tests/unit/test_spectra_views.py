"""The (layer × kind) metric grid and overlay groups of the Spectra page, on tiny models."""

from __future__ import annotations

import numpy as np
import pytest

from lowrank_lab import SettingsError, compute_spectra
from lowrank_lab.spectra.views import GRID_METRICS, metric_grid, overlay_group, scaled_values


@pytest.fixture(scope="module")
def spectra(tiny_llama):
    return compute_spectra(tiny_llama.model, cache=False)


@pytest.mark.parametrize("metric", list(GRID_METRICS))
def test_grid_places_every_layered_matrix_once(spectra, metric):
    grid = metric_grid(spectra, metric)
    assert grid.layers == [0, 1]
    assert grid.kinds[0] == "self_attn.q_proj" and len(grid.kinds) == 7
    assert grid.values.shape == (2, 7) and not np.isnan(grid.values).any()
    layered = {sp.name for sp in spectra if sp.layer is not None}
    assert set(grid.names.ravel()) == layered
    sp = next(s for s in spectra if s.name == "model.layers.1.mlp.down_proj")
    assert grid.name_at(1, "mlp.down_proj") == sp.name
    assert grid.values[1, grid.kinds.index("mlp.down_proj")] == pytest.approx(GRID_METRICS[metric].value(sp))
    if GRID_METRICS[metric].fraction:
        assert np.all((grid.values > 0) & (grid.values <= 1))
    assert grid.name_at(5, "mlp.down_proj") is None and grid.name_at(0, "nope") is None


def test_grid_of_gpt2_uses_its_conv1d_kinds(tiny_gpt2):
    grid = metric_grid(compute_spectra(tiny_gpt2.model, cache=False), "stable_rank")
    assert "attn.c_attn" in grid.kinds and "mlp.c_fc" in grid.kinds


def test_unknown_metric_names_the_choices(spectra):
    with pytest.raises(SettingsError, match="stable_rank"):
        metric_grid(spectra, "rank")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("matrix", ["model.layers.0.mlp.up_proj"]),
        ("kind", ["model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj"]),
        (
            "layer",
            [
                f"model.layers.0.{k}"
                for k in (
                    "self_attn.q_proj",
                    "self_attn.k_proj",
                    "self_attn.v_proj",
                    "self_attn.o_proj",
                    "mlp.gate_proj",
                    "mlp.up_proj",
                    "mlp.down_proj",
                )
            ],
        ),
    ],
)
def test_overlay_groups(spectra, mode, expected):
    assert [sp.name for sp in overlay_group(spectra, "model.layers.0.mlp.up_proj", mode)] == expected


def test_overlay_of_a_matrix_outside_layers_is_itself(spectra):
    assert [sp.name for sp in overlay_group(spectra, "model.embed_tokens", "layer")] == ["model.embed_tokens"]
    with pytest.raises(SettingsError, match="no matrix named"):
        overlay_group(spectra, "nope", "kind")
    with pytest.raises(SettingsError, match="unknown overlay"):
        overlay_group(spectra, "model.embed_tokens", "all")


def test_normalised_values_start_at_one_and_keep_the_edge_in_scale(spectra):
    sp = spectra[3]
    raw, edge = scaled_values(sp, normalise=False)
    norm, nedge = scaled_values(sp, normalise=True)
    assert norm[0] == pytest.approx(1.0) and np.allclose(norm * sp.s[0], raw)
    assert nedge == pytest.approx(edge / sp.s[0]) and edge == sp.metrics.mp_edge
