"""The LoRA page's inputs: which model to train, on what data, with which settings.

Each function draws its widgets and returns a core object; a bad upload or bad settings show
``st.error`` and stop the page, so no training can start from them. Every widget keeps its
value across runs and pages (:func:`~lowrank_lab.ui.widgets.kept`) and stays on screen,
disabled, while a fine-tune runs: what the widgets show is what the next Train will use.
"""

from __future__ import annotations

import streamlit as st

from lowrank_lab.data import BUILTIN_DATASETS, TrainingSource, builtin_source, read_upload
from lowrank_lab.data.sources import MAX_TRAINING_UPLOAD_BYTES
from lowrank_lab.errors import LowrankLabError
from lowrank_lab.finetune import ALL_LINEAR, INITS, SCHEDULES, LoraSettings, lora_targets
from lowrank_lab.models import CompressedModel, LoadedModel
from lowrank_lab.ui import state
from lowrank_lab.ui.widgets import kept, seed

UPLOAD = "upload"
_DATA_LABELS = {
    "domain-text": "Built-in: Python documentation prose",
    "number-words": "Built-in: numbers in English words (instructions)",
    UPLOAD: "Upload a file (.txt, .jsonl, .csv)",
}
BASE = "lora_base"
# Validation examples when the field says 0: three batches' worth is about one training step of
# work (a forward pass is a third of a step), so the loss before training takes seconds.
AUTO_EVAL_BATCHES = 3


def _compressed() -> CompressedModel | None:
    run = st.session_state.get(state.COMPRESSED)
    return run.compressed if isinstance(run, state.CompressionRun) else None


def choose_base(loaded: LoadedModel, disabled: bool = False) -> LoadedModel | CompressedModel:
    """The compressed model from the Ranks page (healing, offered first) or the original."""
    if loaded.task != "causal-lm":
        st.info(
            f"{loaded.title} is an encoder with no language-model head, so there is no next-token loss to "
            "fine-tune; choose a causal language model (e.g. smollm2-135m) on the home page."
        )
        st.stop()
    compressed = _compressed()
    if compressed is None:
        st.session_state.pop(BASE, None)
        st.caption("Training the original model. Compress it on the **Ranks** page to heal the compressed one here.")
        return loaded
    options = {"compressed": f"Compressed {compressed.source.source} (heal it)", "original": f"Original {loaded.title}"}
    # A new compression is offered first, even after the original was chosen for an older one.
    if st.session_state.get("_lora_base_for") is not compressed:
        st.session_state["_lora_base_for"] = compressed
        st.session_state.pop(BASE, None)
        st.session_state.pop(f"_kept_{BASE}", None)
    kept(BASE, "compressed")
    choice = st.radio("Model to train", list(options), format_func=options.get, key=BASE, horizontal=True,
                      disabled=disabled)  # fmt: skip
    if choice == "original":
        return loaded
    st.caption(
        f"{len(compressed.plan)} factorized layers ({compressed.method}): the adapters sit on each one's thin "
        "A (in → r) and B (r → out) matrices."
    )
    return compressed


def choose_data(disabled: bool = False) -> TrainingSource:
    """A built-in set or an uploaded file, with a preview."""
    kept("lora_data", "domain-text")
    choice = st.radio("Data", list(_DATA_LABELS), format_func=_DATA_LABELS.get, key="lora_data", disabled=disabled)
    if choice != UPLOAD:
        source = builtin_source(choice)
        st.caption(BUILTIN_DATASETS[choice])
    else:
        file = st.file_uploader(
            f"Training file (UTF-8, at most {MAX_TRAINING_UPLOAD_BYTES // 2**20} MiB)",
            type=["txt", "jsonl", "csv"],
            key="lora_upload",
            help="A .txt file of plain text, or .jsonl/.csv with a 'text' column or 'prompt' and 'response' columns.",
            disabled=disabled,
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


def _targets(model, disabled: bool) -> str | tuple[str, ...]:
    """Every linear layer, or the ones chosen (the list gets the page's whole width, so no chip hides)."""
    targets = lora_targets(model)
    kept("lora_all_targets", True)
    if st.toggle(f"Adapt every linear layer ({', '.join(targets)})", key="lora_all_targets", disabled=disabled):
        return ALL_LINEAR
    kept("lora_targets", list(targets))
    seed("lora_targets", [t for t in st.session_state["lora_targets"] if t in targets])
    chosen = st.multiselect("Layers to adapt", targets, key="lora_targets", disabled=disabled)
    return ALL_LINEAR if set(chosen) == set(targets) else tuple(chosen)


def choose_settings(base: LoadedModel | CompressedModel, disabled: bool = False) -> LoraSettings:
    """LoRA and training settings; stops the page with the reason when they are invalid."""
    for key, default in (("lora_r", 8), ("lora_init", "default"), ("lora_steps", 30), ("lora_batch", 4),
                         ("lora_seq_len", 128), ("lora_lr", 1e-3), ("lora_schedule", "linear"), ("lora_dropout", 0.0),
                         ("lora_eval", 10), ("lora_eval_examples", 0), ("lora_seed", 0)):  # fmt: skip
        kept(key, default)
    kept("lora_alpha", float(2 * st.session_state["lora_r"]))
    left, right = st.columns(2)
    with left:
        r = st.select_slider("Rank r", [1, 2, 4, 8, 16, 32, 64], key="lora_r", disabled=disabled)
        alpha = st.number_input("Alpha", 0.5, 1024.0, step=1.0, key="lora_alpha", disabled=disabled,
                                help="The update is scaled by alpha / r; 2·r is a common choice.")  # fmt: skip
        init = st.selectbox("Initialisation", INITS, key="lora_init", disabled=disabled,
                            help="pissa: from each weight's top singular vectors")  # fmt: skip
    with right:
        steps = int(st.number_input("Steps", 1, 100_000, key="lora_steps", disabled=disabled))
        batch = int(st.number_input("Batch size", 1, 256, key="lora_batch", disabled=disabled))
        seq_len = st.select_slider("Max sequence length", [32, 64, 128, 256, 512], key="lora_seq_len",
                                   disabled=disabled)  # fmt: skip
        lr = st.select_slider("Learning rate", [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2], key="lora_lr",
                              disabled=disabled)  # fmt: skip
    targets = _targets(base.model, disabled)
    with st.expander("More settings"):
        schedule = st.selectbox("Schedule", SCHEDULES, key="lora_schedule", disabled=disabled)
        dropout = st.number_input("Dropout", 0.0, 0.9, step=0.05, key="lora_dropout", disabled=disabled)
        eval_every = int(st.number_input("Validate every N steps (0: before and after only)", 0, 10_000,
                                         key="lora_eval", disabled=disabled))  # fmt: skip
        eval_examples = int(st.number_input(
            f"Validation examples (0: {AUTO_EVAL_BATCHES} batches, about one training step of work)", 0, 10_000,
            key="lora_eval_examples", disabled=disabled))  # fmt: skip
        seed = int(st.number_input("Seed", 0, 2**31 - 1, key="lora_seed", disabled=disabled))
    try:
        return LoraSettings(
            r=r,
            alpha=float(alpha),
            dropout=float(dropout),
            targets=targets,
            init=init,
            learning_rate=lr,
            schedule=schedule,
            steps=steps,
            batch_size=batch,
            max_seq_len=seq_len,
            seed=seed,
            eval_every=eval_every,
            eval_examples=eval_examples or AUTO_EVAL_BATCHES * batch,
        )
    except LowrankLabError as err:
        st.error(str(err))
        st.stop()
