"""The LoRA page's inputs: which model to train, on what data, with which settings.

Each function draws its widgets and returns a core object; a bad upload or bad settings show
``st.error`` and stop the page, so no training can start from them.
"""

from __future__ import annotations

import streamlit as st

from lowrank_lab.data import BUILTIN_DATASETS, TrainingSource, builtin_source, read_upload
from lowrank_lab.data.sources import MAX_TRAINING_UPLOAD_BYTES
from lowrank_lab.errors import LowrankLabError
from lowrank_lab.finetune import ALL_LINEAR, INITS, SCHEDULES, LoraSettings, lora_targets
from lowrank_lab.models import CompressedModel, LoadedModel
from lowrank_lab.ui import state

UPLOAD = "upload"
_DATA_LABELS = {
    "domain-text": "Built-in: Python documentation prose",
    "number-words": "Built-in: numbers in English words (instructions)",
    UPLOAD: "Upload a file (.txt, .jsonl, .csv)",
}


def choose_base(loaded: LoadedModel) -> LoadedModel | CompressedModel:
    """The original model, or the compressed one from the Ranks page (healing)."""
    if loaded.task != "causal-lm":
        st.info(
            f"{loaded.title} is an encoder with no language-model head, so there is no next-token loss to "
            "fine-tune; choose a causal language model (e.g. smollm2-135m) on the home page."
        )
        st.stop()
    run = st.session_state.get(state.COMPRESSED)
    compressed = run.compressed if isinstance(run, state.CompressionRun) else None
    if compressed is None:
        st.caption("Training the original model. Compress it on the **Ranks** page to heal the compressed one here.")
        return loaded
    options = {"original": f"Original {loaded.title}", "compressed": f"Compressed {compressed.source.source} (heal it)"}
    choice = st.radio("Model to train", list(options), format_func=options.get, key="lora_base", horizontal=True)
    if choice == "original":
        return loaded
    st.caption(
        f"{len(compressed.plan)} factorized layers ({compressed.method}): the adapters sit on each one's thin "
        "A (in → r) and B (r → out) matrices."
    )
    return compressed


def choose_data() -> TrainingSource:
    """A built-in set or an uploaded file, with a preview."""
    choice = st.radio("Data", list(_DATA_LABELS), format_func=_DATA_LABELS.get, key="lora_data")
    if choice != UPLOAD:
        source = builtin_source(choice)
        st.caption(BUILTIN_DATASETS[choice])
    else:
        file = st.file_uploader(
            f"Training file (UTF-8, at most {MAX_TRAINING_UPLOAD_BYTES // 2**20} MiB)",
            type=["txt", "jsonl", "csv"],
            key="lora_upload",
            help="A .txt file of plain text, or .jsonl/.csv with a 'text' column or 'prompt' and 'response' columns.",
        )
        if file is None:
            st.info("Upload a file to train on; nothing trains until then.")
            st.stop()
        try:
            source = read_upload(file.getvalue(), file.name)
        except LowrankLabError as err:
            st.error(str(err))
            st.stop()
        st.caption(f"{file.name}: {source.description}; 10% of it is held out for validation.")
    with st.expander("Preview", expanded=choice == UPLOAD):
        st.dataframe(source.preview(), hide_index=True, key="lora_preview")
    return source


def _targets(model) -> str | tuple[str, ...]:
    targets = lora_targets(model)
    chosen = st.multiselect("Layers to adapt", targets, default=targets, key="lora_targets")
    return ALL_LINEAR if set(chosen) == set(targets) else tuple(chosen)


def choose_settings(base: LoadedModel | CompressedModel) -> LoraSettings:
    """LoRA and training settings; stops the page with the reason when they are invalid."""
    left, right = st.columns(2)
    with left:
        r = st.select_slider("Rank r", [1, 2, 4, 8, 16, 32, 64], value=8, key="lora_r")
        alpha = st.number_input("Alpha", 0.5, 1024.0, float(2 * r), step=1.0, key="lora_alpha")
        init = st.selectbox(
            "Initialisation", INITS, key="lora_init", help="pissa: from each weight's top singular vectors"
        )
        targets = _targets(base.model)
    with right:
        steps = int(st.number_input("Steps", 1, 100_000, 30, key="lora_steps"))
        batch = int(st.number_input("Batch size", 1, 256, 4, key="lora_batch"))
        seq_len = st.select_slider("Max sequence length", [32, 64, 128, 256, 512], value=128, key="lora_seq_len")
        lr = st.select_slider("Learning rate", [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2], value=1e-3, key="lora_lr")
    with st.expander("More settings"):
        schedule = st.selectbox("Schedule", SCHEDULES, index=SCHEDULES.index("linear"), key="lora_schedule")
        dropout = st.number_input("Dropout", 0.0, 0.9, 0.0, step=0.05, key="lora_dropout")
        eval_every = int(
            st.number_input("Validate every N steps (0: before and after only)", 0, 10_000, 5, key="lora_eval")
        )
        seed = int(st.number_input("Seed", 0, 2**31 - 1, 0, key="lora_seed"))
    try:
        return LoraSettings(
            r=r,
            alpha=alpha,
            dropout=dropout,
            targets=targets,
            init=init,
            learning_rate=lr,
            schedule=schedule,
            steps=steps,
            batch_size=batch,
            max_seq_len=seq_len,
            seed=seed,
            eval_every=eval_every,
        )
    except LowrankLabError as err:
        st.error(str(err))
        st.stop()
