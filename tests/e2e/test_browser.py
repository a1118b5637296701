"""End to end in a real browser on the built-in model: `make app`, Debian's chromium driven by playwright.

Loads the default built-in model (smollm2-135m), opens the Spectra page and clicks a heatmap
cell to open that matrix's spectrum, opens the Ranks page, moves a rank slider with the
keyboard and checks that the savings figure changes by what one rank of that kind is worth.
Screenshots of each page go to ``$LOWRANK_LAB_SCREENSHOTS`` (default: the test's temporary
folder) for a person to look at. The whole flow on a tiny model is in ``test_walkthrough.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import (
    LOAD_TIMEOUT_MS,
    as_int,
    metric_value,
    open_page,
    serve,
    snap,
    wait_for_metric,
    wait_until_idle,
)

pytestmark = [pytest.mark.e2e, pytest.mark.builtin]


def check_home(page, shots: Path) -> None:
    """The default built-in model loads and is summarised."""
    page.get_by_text("SmolLM2-135M-Instruct").first.wait_for(timeout=LOAD_TIMEOUT_MS)
    page.get_by_text("LlamaForCausalLM").wait_for(timeout=LOAD_TIMEOUT_MS)
    assert metric_value(page, "Weight matrices") == "211" and metric_value(page, "Layers") == "30"
    wait_until_idle(page)
    snap(page, shots / "home.png")


def check_spectra(page, shots: Path) -> None:
    """The heatmap and a spectrum draw; clicking a heatmap cell opens that matrix."""
    open_page(page, "Spectra", "Heatmap metric")
    page.locator(".js-plotly-plot").nth(1).wait_for(timeout=LOAD_TIMEOUT_MS)
    assert metric_value(page, "Shape (out×in)") == "576×576"
    # The cell of layer 10's mlp.down_proj, in a grid of 7 kinds × 30 layers.
    area = page.locator(".js-plotly-plot").first.locator(".nsewdrag").first.bounding_box()
    page.mouse.click(area["x"] + area["width"] * 6.5 / 7, area["y"] + area["height"] * 10.5 / 30)
    wait_for_metric(page, "Shape (out×in)", "576×1536")
    wait_until_idle(page)
    assert page.get_by_role("combobox", name="Matrix").input_value().startswith("model.layers.10.mlp.down_proj")
    snap(page, shots / "spectra.png")


def check_ranks(page, shots: Path) -> None:
    """Moving the first kind slider (self_attn.q_proj, 30 matrices of 576×576) changes the savings."""
    open_page(page, "Ranks", "Rank per kind")
    snap(page, shots / "ranks.png")
    before = as_int(metric_value(page, "Parameters saved"))
    linear_before = metric_value(page, "Saved, % of linear layers")
    handle = page.locator('[data-testid="stSlider"]').first.locator('input[type="range"]')
    rank_before = int(handle.input_value())
    handle.focus()
    for _ in range(10):
        handle.press("ArrowLeft")
    wait_until_idle(page)
    rank_after = int(handle.input_value())
    assert rank_after < rank_before
    # Each rank step of q_proj is 576+576 parameters in each of its 30 layers. The key presses
    # may reach the server as more than one rerun: wait for the last one's figure.
    expected = before + 30 * (576 + 576) * (rank_before - rank_after)
    wait_for_metric(page, "Parameters saved", f"{expected:,}")
    assert as_int(metric_value(page, "Parameters saved")) == expected
    assert metric_value(page, "Saved, % of linear layers") != linear_before
    snap(page, shots / "ranks_after_move.png")


def test_load_explore_and_move_a_rank_slider(chromium, shots, tmp_path):
    with serve("smollm2-135m", tmp_path / "streamlit.log") as server:
        page = chromium.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(server.url)
        check_home(page, shots)
        check_spectra(page, shots)
        check_ranks(page, shots)
