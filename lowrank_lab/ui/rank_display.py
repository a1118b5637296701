"""What the Ranks page shows for a plan: whole-model totals, one matrix's numbers, every matrix's row."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lowrank_lab.dtypes import BYTES_PER_ELEMENT
from lowrank_lab.plan import MatrixCost, PlanSummary
from lowrank_lab.plan.curves import summary_records
from lowrank_lab.ui.formatting import mib, params, pct

# Labels the tests (and a reader) look for; the numbers under them are exact counts or percentages.
SAVED_PARAMS = "Parameters saved"
SAVED_LINEAR = "Saved, % of linear layers"
SAVED_MODEL = "Saved, % of whole model"
KEPT_MODEL = "Parameters kept"
WEIGHTED_ERROR = "Weighted error"
WORST_SPECTRAL = "Worst spectral error"
# The sizes shown: every parameter at this many bytes.
SIZES = {"fp32": BYTES_PER_ELEMENT["float32"], "fp16": BYTES_PER_ELEMENT["float16"]}


def totals(summary: PlanSummary) -> None:
    """The plan's whole-model numbers: parameters, both savings percentages, bytes, errors."""
    linear = summary.linear_params_dense
    worst = max((r.spectral_error for r in summary.rows), default=0.0)
    c = st.columns(4)
    c[0].metric(SAVED_PARAMS, f"{summary.params_saved:,}", help="Dense parameters minus what the plan keeps.")
    c[1].metric(
        SAVED_LINEAR,
        pct(summary.saved_fraction_of_linear),
        help=f"Of the {params(linear)} parameters in the linear layers (attention and MLP projections).",
    )
    c[2].metric(
        SAVED_MODEL,
        pct(summary.saved_fraction_of_model),
        help=f"Of all {params(summary.model_params)} parameters (embeddings and norms included).",
    )
    c[3].metric(KEPT_MODEL, f"{summary.model_params_kept:,}", help=f"Whole model; dense: {summary.model_params:,}.")
    c = st.columns(4)
    for col, (dtype, size) in zip(c, SIZES.items()):
        saved = summary.params_saved * size
        col.metric(
            f"Size at {dtype}",
            mib(summary.model_bytes(size)),
            delta=f"-{mib(saved)}" if saved else None,
            delta_color="inverse",
            help=f"Every parameter at {size} bytes.",
        )
    c[2].metric(
        WEIGHTED_ERROR,
        f"{summary.weighted_error:.4f}",
        help=r"$\|W-W_r\|_F/\|W\|_F$ of all linear matrices together: "
        r"$\sqrt{\sum \text{lost } \sigma_i^2 / \sum \sigma_i^2}$.",
    )
    c[3].metric(
        WORST_SPECTRAL, f"{worst:.4f}", help=r"The largest $\sigma_{r+1}/\sigma_1$ over the factorized matrices."
    )
    st.caption(f"{summary.n_factorized} of {len(summary.rows)} matrices factorized; the rest stay dense.")


def matrix_numbers(row: MatrixCost) -> None:
    """The selected matrix's numbers under its error chart."""
    c = st.columns(4)
    c[0].metric("Rank kept", f"{row.rank}" if row.factorized else "dense", help=f"Full rank {min(row.shape)}.")
    c[1].metric(
        "Parameters kept",
        f"{row.params_kept:,}",
        delta=f"-{row.params_dense - row.params_kept:,}" if row.factorized else None,
        delta_color="inverse",
        help=f"Dense: {row.params_dense:,}.",
    )
    c[2].metric("Frobenius error", f"{row.rel_frobenius_error:.4f}", help=r"$\|W-W_r\|_F/\|W\|_F$")
    c[3].metric("Spectral error", f"{row.spectral_error:.4f}", help=r"$\sigma_{r+1}/\sigma_1$")


ORDER = ("name", "shape", "rank", "break_even", "dense", "params_dense", "params_kept", "params_saved", "saved_pct",
         "fp16_MiB_saved", "rel_frobenius_error", "activation_error", "spectral_error")  # fmt: skip
COLUMNS = {
    "name": st.column_config.TextColumn("matrix", width="medium"),
    "params_dense": st.column_config.NumberColumn("dense params", format="localized"),
    "params_kept": st.column_config.NumberColumn("params kept", format="localized"),
    "params_saved": st.column_config.NumberColumn("params saved", format="localized"),
    "saved_pct": st.column_config.NumberColumn("saved %", format="%.1f"),
    "fp16_MiB_saved": st.column_config.NumberColumn("fp16 MiB saved", format="%.2f"),
    "rel_frobenius_error": st.column_config.NumberColumn("rel. Frobenius error", format="%.4f"),
    "spectral_error": st.column_config.NumberColumn("spectral error σᵣ₊₁/σ₁", format="%.4f"),
    "activation_error": st.column_config.NumberColumn(
        "act. error (whitened)", format="%.4f", help="‖(W−Wᵣ)X‖/‖WX‖ on the calibration tokens"
    ),
    "break_even": st.column_config.NumberColumn("break-even r", format="%d"),
}


def matrix_table(summary: PlanSummary, activation: dict[str, float] | None = None) -> None:
    """Every matrix's numbers (sortable in the browser by clicking a header).

    ``activation`` (matrix name → activation-aware error), once the model is calibrated, adds a
    column beside the plain Frobenius error.
    """
    frame = pd.DataFrame(summary_records(summary))
    if activation is not None:
        frame["activation_error"] = frame["name"].map(activation)
    st.dataframe(frame, hide_index=True, column_config=COLUMNS, column_order=ORDER, height=320)
