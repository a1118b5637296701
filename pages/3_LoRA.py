"""LoRA: a quick fine-tune of the original model, or healing of the compressed one, on built-in or uploaded data."""

import streamlit as st

from lowrank_lab.ui import finetune_inputs, finetune_view
from lowrank_lab.ui.current_model import require_model

st.set_page_config(page_title="LoRA · lowrank_lab", layout="wide")
st.title("LoRA fine-tune")
st.caption(
    "Train a small low-rank adapter (PEFT LoRA) on a copy of the model: the compressed model from the Ranks "
    "page, to win back what compression lost, or the original. The shared model is never changed."
)

loaded = require_model()
job = finetune_view.current_job()
running = job is not None and not job.done
base = finetune_inputs.choose_base(loaded, disabled=running)
source = finetune_inputs.choose_data(disabled=running)
settings = finetune_inputs.choose_settings(base, disabled=running)
if running:
    finetune_view.live(job)
elif st.button("Train", key="lora_train", type="primary"):
    finetune_view.start(base, source, settings)
    st.rerun()
if job is not None and job.done:
    finetune_view.results(job)
else:
    finetune_view.reopened()  # an adapter reopened from a recorded run (Runs page)
