"""The home page's parts: the model chooser, the model's summary, and the guide to the pages."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from lowrank_lab.errors import LowrankLabError
from lowrank_lab.matrices import weight_matrices
from lowrank_lab.model_summary import kind_rows, layer_count
from lowrank_lab.models import BUILTIN_MODELS, TINY_MODELS, LoadedModel
from lowrank_lab.ui import state
from lowrank_lab.ui.formatting import mib, params

LOCAL, HUB = "local folder or file", "Hugging Face hub id"


@dataclass(frozen=True)
class StepPage:
    """One page of the app after Home: its file (relative to the app's folder), title and what it does."""

    path: str
    title: str
    description: str


# Every page after Home, in the sidebar's order: app.py's navigation and the home page's guide.
PAGES = (
    StepPage(
        "pages/1_Spectra.py",
        "Spectra",
        "Singular values of every matrix: a (layer × kind) heatmap of low-rank "
        "metrics, spectra overlaid with energy curves and the Marchenko–Pastur edge, a metrics table (CSV).",
    ),
    StepPage(
        "pages/2_Ranks.py",
        "Ranks",
        "Choose ranks (per kind, per matrix, or a preset) and see at once the "
        "parameters and bytes saved and the reconstruction error; download the plan as JSON.",
    ),
    StepPage("pages/3_LoRA.py", "LoRA", "Fine-tune LoRA adapters on the original or the compressed model."),
    StepPage("pages/4_Export.py", "Export", "Download the compressed checkpoint (safetensors, plan, model card)."),
    StepPage(
        "pages/5_Compare.py",
        "Compare",
        "Compare with a second model (a fine-tune, a compression): the spectrum and rank of every matrix's "
        "change, and a LoRA adapter extracted from it.",
    ),
    StepPage(
        "pages/6_Runs.py",
        "Runs",
        "Every compression, fine-tune and export, recorded: reopen a run for the LoRA and Export pages, "
        "delete it, and see the measured frontier beside the predicted one.",
    ),
)


def _describe(choice: str) -> str:
    if choice in BUILTIN_MODELS:
        return f"{choice} — {BUILTIN_MODELS[choice].title}"
    if choice in TINY_MODELS:
        return f"{choice} — tiny random model for tests"
    return choice


def choose_model() -> str:
    """The model picker; returns the chosen source, or stops the page until a path is typed."""
    choices = [*BUILTIN_MODELS, LOCAL, HUB, *TINY_MODELS]
    current = state.current_spec().source
    index = choices.index(current) if current in choices else choices.index(LOCAL)
    choice = st.selectbox("Model", choices, index=index, key="home_model_choice", format_func=_describe)
    if choice in BUILTIN_MODELS:
        st.caption(BUILTIN_MODELS[choice].description + " Ships inside a pip package: no network needed.")
    elif choice in TINY_MODELS:
        st.caption(TINY_MODELS[choice] + ".")
    if choice not in (LOCAL, HUB):
        return choice
    placeholder = "/path/to/model-folder or /path/to/model.safetensors" if choice == LOCAL else "org/name"
    source = st.text_input(
        "Folder or .safetensors file" if choice == LOCAL else "Hub id",
        value="" if current in choices else current,
        key="home_model_path",
        placeholder=placeholder,
    ).strip()
    if not source:
        st.info(
            "Type a Hugging Face folder (config.json + safetensors), a .safetensors file with its "
            "config.json beside it, or a hub id such as HuggingFaceTB/SmolLM2-135M (needs the network)."
        )
        st.stop()
    return source


def summary(loaded: LoadedModel, n_params: int) -> None:
    """Architecture, parameters, memory and the weight matrices by kind."""
    st.subheader(loaded.title)
    try:
        matrices = weight_matrices(loaded.model)
    except LowrankLabError as err:
        st.error(str(err))
        st.stop()
    for note in loaded.notes:
        st.info(note)
    dtype = next(loaded.model.parameters()).dtype
    c = st.columns([2.4, 1.2, 1.2, 1.1, 0.8])  # the architecture name is the longest value
    c[0].metric("Architecture", loaded.architecture, help=f"task: {loaded.task}")
    c[1].metric("Parameters", params(n_params), help=f"{n_params:,} (tied weights counted once)")
    c[2].metric(
        "Memory",
        mib(loaded.n_bytes),
        help=f"as loaded ({str(dtype).removeprefix('torch.')}); {mib(2 * n_params)} at fp16",
    )
    c[3].metric("Weight matrices", f"{len(matrices)}", help="Every 2-D weight: linear layers and embeddings.")
    c[4].metric("Layers", f"{layer_count(matrices)}", help="Repeated blocks (decoder or encoder layers).")
    rows = kind_rows(matrices, n_params)
    frame = pd.DataFrame(
        {
            "kind": [r.kind for r in rows],
            "matrices": [r.matrices for r in rows],
            "shape (out×in)": [", ".join(f"{m}×{n}" for m, n in r.shapes) for r in rows],
            "parameters": [r.params for r in rows],
            "% of model": [100 * r.model_fraction for r in rows],
            "note": [
                ("embedding" + (f", tied to {', '.join(r.tied_to)}" if r.tied_to else "")) if r.embedding else ""
                for r in rows
            ],
        }
    )
    st.dataframe(
        frame,
        hide_index=True,
        column_config={
            "parameters": st.column_config.NumberColumn(format="localized"),
            "% of model": st.column_config.NumberColumn(format="%.1f"),
            "note": st.column_config.TextColumn(width="large"),
        },
    )


def page_guide() -> None:
    """What each page does, with a link to it."""
    st.subheader("Where to go next")
    for page in PAGES:
        st.page_link(page.path, label=f"**{page.title}**")
        st.caption(page.description)
