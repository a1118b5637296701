"""Home: choose a model, see its summary, and where to go next."""

from __future__ import annotations

from collections import Counter

import streamlit as st

from lowrank_lab.matrices import weight_matrices
from lowrank_lab.models import BUILTIN_MODELS, TINY_MODELS
from lowrank_lab.ui import state
from lowrank_lab.ui.sidebar import require_model

st.set_page_config(page_title="lowrank_lab", layout="wide")
st.title("lowrank_lab")
st.write("Where does each weight matrix of a transformer have low-rank structure, and what would cutting it cost?")

choices = [*BUILTIN_MODELS, "local folder or file", "Hugging Face hub id", *TINY_MODELS]
current = state.current_spec().source
index = choices.index(current) if current in choices else choices.index("local folder or file")
choice = st.selectbox("Model", choices, index=index, key="home_model_choice")
source = choice
if choice in ("local folder or file", "Hugging Face hub id"):
    source = st.text_input(
        "Path or hub id",
        value="" if current in choices else current,
        key="home_model_path",
        placeholder="/path/to/model-folder or org/name",
    ).strip()
    if not source:
        st.info("Type a folder, a .safetensors file (with config.json beside it) or a hub id.")
        st.stop()
state.set_model_source(source)

loaded = require_model()
matrices = weight_matrices(loaded.model)
kinds = Counter(m.kind if m.layer is not None else "outside layers" for m in matrices)
layers = len({m.layer for m in matrices if m.layer is not None})

st.subheader(loaded.title)
for note in loaded.notes:
    st.info(note)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Architecture", loaded.architecture)
c2.metric("Parameters", f"{loaded.n_params / 1e6:.1f}M")
c3.metric("Memory", f"{loaded.n_bytes / 2**20:.0f} MiB")
c4.metric("Weight matrices", f"{len(matrices)} in {layers} layers")
st.dataframe([{"kind": k, "matrices": n} for k, n in kinds.most_common()], hide_index=True, width="content")
