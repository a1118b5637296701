"""The Compare page's choice of the second model: this session's fine-tune or compression, or any model that loads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from lowrank_lab.errors import LowrankLabError
from lowrank_lab.finetune.result import TrainedAdapter
from lowrank_lab.models import LoadedModel, ModelSpec
from lowrank_lab.models.compressed import CompressedModel
from lowrank_lab.spectra.sources import ModuleSource, WeightSource
from lowrank_lab.ui import state
from lowrank_lab.ui.cache import loaded_model

SECOND = "compare_second"
PATH = "compare_path"
MERGED = "compare_merged"  # (id of the adapter, the merged copy): merged once per adapter
FINETUNE, COMPRESSED, OTHER = "finetune", "compressed", "other"
LABELS = {
    FINETUNE: "the LoRA fine-tune from the LoRA page (merged)",
    COMPRESSED: "the compressed model from the Ranks page",
    OTHER: "another model: a folder, a compressed checkpoint, a built-in",
}


@dataclass(frozen=True)
class SecondModel:
    """The model to compare with, and how to read its weights.

    Attributes:
        key: identifies the choice (a new key means a new comparison).
        label: how the page names it.
        source: builds its :class:`WeightSource` (cheap: no weights are read).
    """

    key: tuple
    label: str
    source: Callable[[], WeightSource]


def base_source(loaded: LoadedModel) -> WeightSource:
    """The session's model as the first model W₁ (read-only, shared)."""
    return ModuleSource(loaded.model, loaded.tokenizer, loaded.spec.source)


def _adapter(spec: ModelSpec) -> TrainedAdapter | None:
    adapter = st.session_state.get(state.ADAPTER)
    ok = isinstance(adapter, TrainedAdapter) and adapter.base == "original" and adapter.source.source == spec.source
    return adapter if ok else None


def _compressed(spec: ModelSpec) -> CompressedModel | None:
    run = st.session_state.get(state.COMPRESSED)
    compressed = run.compressed if isinstance(run, state.CompressionRun) else None
    return compressed if isinstance(compressed, CompressedModel) and compressed.source.source == spec.source else None


def _merged(adapter: TrainedAdapter):
    from lowrank_lab.export.adapter import merge_adapter

    held = st.session_state.get(MERGED)
    if held is None or held[0] != id(adapter):
        held = st.session_state[MERGED] = (id(adapter), merge_adapter(adapter))  # a copy: the adapter stays
    return held[1]


def choose_second(loaded: LoadedModel) -> SecondModel:
    """The second-model picker; stops the page until a model is given (or when it cannot load)."""
    spec = loaded.spec
    adapter, compressed = _adapter(spec), _compressed(spec)
    options = [k for k, there in ((FINETUNE, adapter), (COMPRESSED, compressed)) if there is not None] + [OTHER]
    choice = st.selectbox("Compare with", options, format_func=LABELS.get, key=SECOND)
    if choice == FINETUNE:
        rank = f"r={adapter.settings.r}, " if adapter.settings is not None else ""
        label = f"LoRA fine-tune of {spec.source} ({rank}merged)"
        return SecondModel((FINETUNE, id(adapter)), label,
                           lambda: ModuleSource(_merged(adapter), adapter.tokenizer, label))  # fmt: skip
    if choice == COMPRESSED:
        label = f"{spec.source} compressed ({compressed.method}, {len(compressed.plan)} layers factorized)"
        return SecondModel((COMPRESSED, id(compressed)), label,
                           lambda: ModuleSource(compressed.model, compressed.tokenizer, label))  # fmt: skip
    if not adapter and not compressed:
        st.caption("Fine-tune on the LoRA page or compress on the Ranks page to compare with that model here.")
    source = st.text_input(
        "Second model",
        key=PATH,
        placeholder="/path/to/fine-tuned-folder, a compressed checkpoint folder, or a built-in name",
        help="Any model that loads (as on the Home page) with the same architecture, shapes and vocabulary.",
    ).strip()
    if not source:
        st.info("Type the second model: a fine-tune or compression of this one, with the same matrices.")
        st.stop()
    try:
        other = loaded_model(ModelSpec(source))
    except LowrankLabError as err:
        st.error(str(err))
        st.stop()
    return SecondModel((OTHER, source), source, lambda: ModuleSource(other.model, other.tokenizer, source))
