"""The Spectra page's heavy-tailed parts: what α's colours mean, and the selected matrix's ESD with its fits."""

from __future__ import annotations

import math

import streamlit as st

from lowrank_lab.spectra.engine import LayerSpectrum
from lowrank_lab.spectra.esd import esd_view
from lowrank_lab.ui.esd_charts import esd_figure

ALPHA_WORDS = (
    "**α** is the exponent of the power law p(λ) ∝ λ^−α that the tail of a matrix's eigenvalue density "
    "(λ = σ²) follows. Layers of well-trained models mostly have **α between 2 and 6** (2–4 the best); "
    "**α below 2** is a very heavy tail, a sign of over-fitting or over-training; **α above 6** is close "
    "to a random matrix's spectrum, a layer that learned little (under-trained). Colours span 1–8."
)


def alpha_explanation(spectra: list[LayerSpectrum]) -> None:
    """The 2–6 band in words, and how many matrices fall in each part of it."""
    counts = {"heavy": 0, "well-trained": 0, "random-like": 0, "no fit": 0}
    for sp in spectra:
        counts[sp.heavy_tail.band] += 1
    st.caption(
        f"{ALPHA_WORDS} Here: {counts['well-trained']} matrices in 2–6, {counts['heavy']} below 2, "
        f"{counts['random-like']} above 6" + (f", {counts['no fit']} too small to fit." if counts["no fit"] else ".")
    )


def section(sp: LayerSpectrum) -> None:
    """The selected matrix's heavy-tailed metrics and its ESD chart (from the cached σ, no SVD)."""
    st.subheader("Eigenvalue density (heavy tail)")
    view = esd_view(sp)
    m = view.metrics
    cols = st.columns(5)
    alpha = "–" if not math.isfinite(m.alpha) else f"{m.alpha:.2f}"
    cols[0].metric("α (power-law tail)", alpha, help=f"{m.band}; ± {m.sigma:.2f} (standard error)")
    cols[1].metric("KS distance", "–" if not math.isfinite(m.ks_distance) else f"{m.ks_distance:.3f}",
                   help="Kolmogorov–Smirnov distance between the tail and the fitted power law")  # fmt: skip
    cols[2].metric("Tail", f"{m.n_tail} of {view.n_evals}", help=f"eigenvalues from x_min = {m.xmin:.4g}")
    cols[3].metric("α-weighted", "–" if not math.isfinite(m.alpha_weighted) else f"{m.alpha_weighted:.2f}",
                   help="α · log₁₀ λ_max")  # fmt: skip
    cols[4].metric("log₁₀ spectral norm", f"{m.log_spectral_norm:.2f}", help="log₁₀ λ_max = log₁₀ σ₁²")
    st.plotly_chart(esd_figure(view, sp.name), key="spectra_esd")
    st.caption(
        "Bars: the eigenvalues λ = σ² of WᵀW as a density on log–log axes. Solid: the power law fitted to "
        "the tail (x_min and α by the Clauset–Shalizi–Newman method, the one WeightWatcher uses). Dashed: "
        "the Marchenko–Pastur density of a random matrix of the same shape and variance — a trained layer's "
        "structure is what reaches past it."
    )
