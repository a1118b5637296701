"""Export: download the compressed checkpoint, a dense copy, the LoRA adapter, the merge, or the plan."""

from __future__ import annotations

import streamlit as st

from lowrank_lab.ui import export_panel

st.set_page_config(page_title="Export · lowrank_lab", layout="wide")
st.title("Export")
st.write("Download what you made: safetensors only, never a pickle, loadable without this app.")

run, adapter = export_panel.artifacts()
if run is None and adapter is None:
    st.info(
        "Nothing to export yet. Compress a model on the **Ranks** page (“Compress and evaluate”) "
        "or fine-tune a LoRA adapter on the **LoRA** page, then come back here. Made them before (or "
        "reloaded this tab)? Reopen a recorded run on the **Runs** page."
    )
    st.stop()

compressed = run.compressed if run is not None else None
export_panel.describe(run, adapter)
request = export_panel.choose(compressed, adapter)
export_panel.show_size(request, compressed, adapter)
export_panel.download(request, run, adapter)
