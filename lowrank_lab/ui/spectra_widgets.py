"""The Spectra page's interactive parts: the clickable heatmap, the overlay controls, the metrics table."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lowrank_lab.spectra.engine import LayerSpectrum, spectra_records
from lowrank_lab.spectra.heavy_tail import heavy_tail_records
from lowrank_lab.spectra.views import GRID_METRICS, OVERLAYS, metric_grid
from lowrank_lab.ui import heavy_tail_view, state
from lowrank_lab.ui.spectra_charts import heatmap_figure

HEATMAP = "spectra_heatmap"
MATRIX = "spectra_matrix"


def _on_cell() -> None:
    # Called once per new selection (not on every rerun), so picking another matrix in the
    # selectbox afterwards is not overridden by a stale heatmap selection.
    event = st.session_state.get(HEATMAP)
    points = event.selection.points if event is not None else []
    for point in points:
        name = point.get("customdata")
        if isinstance(name, list):  # plotly sends customdata as a list for some traces
            name = name[0] if name else None
        if name:
            state.select_matrix(name)
            return


def heatmap(spectra: list[LayerSpectrum]) -> None:
    """The chosen metric over (layer × kind); clicking a cell selects that matrix."""
    metric = st.selectbox(
        "Heatmap metric", list(GRID_METRICS), format_func=lambda k: GRID_METRICS[k].label, key="spectra_metric"
    )
    grid = metric_grid(spectra, metric)
    if not grid.layers:
        st.info("This model has no repeated layers to lay out; pick matrices from the list below.")
        return
    st.plotly_chart(
        heatmap_figure(grid, st.session_state.get(state.SELECTED_MATRIX)),
        key=HEATMAP,
        on_select=_on_cell,
        selection_mode="points",
    )
    st.caption("Click a cell to open that matrix's spectrum below (or choose it in the list).")
    if metric == "alpha":
        heavy_tail_view.alpha_explanation(spectra)


def view_options() -> tuple[str, bool, bool]:
    """Overlay group, normalise by σ₁, rank axis as a fraction of full rank."""
    c1, c2, c3 = st.columns([2, 1, 1])
    overlay = c1.radio("Show", list(OVERLAYS), format_func=OVERLAYS.get, key="spectra_overlay", horizontal=True)
    normalise = c2.toggle("Normalise by σ_max", value=True, key="spectra_normalise")
    fraction = c3.toggle("Rank as fraction of full rank", value=False, key="spectra_rank_fraction")
    return overlay, normalise, fraction


def selected_metrics(sp: LayerSpectrum) -> None:
    """The selected matrix's metrics in one row."""
    m = sp.metrics
    cols = st.columns(6)
    cols[0].metric("Shape (out×in)", f"{sp.shape[0]}×{sp.shape[1]}")
    cols[1].metric("Stable rank", f"{m.stable_rank:.1f}", help=r"$\|W\|_F^2/\sigma_1^2$")
    cols[2].metric(
        "Effective rank", f"{m.effective_rank:.1f}", help=r"$\exp$ of the entropy of $\sigma_i/\sum_j\sigma_j$"
    )
    cols[3].metric(
        "Energy ranks", f"{m.energy_rank_90} / {m.energy_rank_99}", help="The smallest ranks keeping 90% / 99% of Σσᵢ²."
    )
    cols[4].metric("Above MP edge", f"{m.mp_outliers}", help=f"σᵢ > {m.mp_edge:.4g}, the edge of a random matrix")
    cols[5].metric("Full rank", f"{sp.full_rank}", help=f"numerical rank {m.numerical_rank}")


def metrics_table(spectra: list[LayerSpectrum], model: str) -> pd.DataFrame:
    """Every matrix's metrics, sorted as chosen (headers sort in the browser too), with CSV download."""
    frame = pd.DataFrame(spectra_records(spectra))
    heavy = pd.DataFrame(heavy_tail_records(spectra))[["alpha", "ks_distance", "alpha_weighted", "log_spectral_norm"]]
    frame = pd.concat([frame, heavy], axis=1)  # both in the spectra's order
    frame["layer"] = frame["layer"].astype("Int64")  # a whole number, empty outside the layers (not 4.0)
    c1, c2 = st.columns([3, 1])
    column = c1.selectbox("Sort by", list(frame.columns), index=list(frame.columns).index("name"), key="spectra_sort")
    descending = c2.toggle("Descending", value=False, key="spectra_sort_desc")
    frame = frame.sort_values(column, ascending=not descending, kind="stable", na_position="last")
    # The column sorted by comes right after the name, before the structural columns.
    frame = frame[
        ["name", *([column] if column != "name" else []), *(c for c in frame.columns if c not in ("name", column))]
    ]
    st.dataframe(frame, hide_index=True, height=360)
    st.download_button(
        "Download metrics CSV",
        data=frame.to_csv(index=False),
        file_name=f"spectra_{model.replace('/', '_')}.csv",
        mime="text/csv",
        key="spectra_csv",
    )
    return frame
