"""The Export page's widgets: what is available, the chosen format and its size, the download.

The zip is built only when asked (a button), as a background :class:`~lowrank_lab.ui.jobs.Job`
(the step, one bar, Stop), kept in the session for the request it was built for, and dropped
when the request changes, so a large model is held in memory once.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from peft import get_peft_model_state_dict

from lowrank_lab.checkpoint.format import factorized_modules
from lowrank_lab.dtypes import DTYPES
from lowrank_lab.errors import LowrankLabError
from lowrank_lab.export import EXPORT_FORMATS, available_formats, estimate_size, export, safe_folder_name
from lowrank_lab.export.adapter import peft_model_of
from lowrank_lab.export.archive import zip_bytes
from lowrank_lab.finetune import TrainedAdapter
from lowrank_lab.models import CompressedModel
from lowrank_lab.runs.record import record_export
from lowrank_lab.ui import guard_rails, job_view, run_store, state
from lowrank_lab.ui.formatting import mib, params
from lowrank_lab.ui.jobs import Job
from lowrank_lab.ui.notices import Notice
from lowrank_lab.ui.state import CompressionRun

BUILT = "export_built"  # session key: the BuiltZip of the last zip built
BUILDING = "export_job"  # session key: the Job building a zip, with the request it builds
NOTICE = "export_notice"  # session key: a Notice about the last build, shown once


@dataclass(frozen=True)
class ExportRequest:
    """What the user asked for, and the artifacts (by identity) it was asked of."""

    fmt: str
    dtype: str
    name: str
    compressed_id: int
    adapter_id: int

    @property
    def file_name(self) -> str:
        return f"{self.name}.zip"


@dataclass(frozen=True, eq=False)
class BuiltZip:
    """A zip built for one request, kept in the session until the request changes."""

    request: ExportRequest
    data: bytes


def artifacts() -> tuple[CompressionRun | None, TrainedAdapter | None]:
    """The compression run (Ranks page) and the adapter (LoRA page) of this session, if any."""
    run = st.session_state.get(state.COMPRESSED)
    adapter = st.session_state.get(state.ADAPTER)
    if run is not None and not isinstance(run, CompressionRun):
        st.error(f"The session's compressed model is a {type(run).__name__}; compress again on the Ranks page.")
        run = None
    if adapter is not None and not isinstance(adapter, TrainedAdapter):
        st.error(f"The session's adapter is a {type(adapter).__name__}; fine-tune again on the LoRA page.")
        adapter = None
    return run, adapter


def describe(run: CompressionRun | None, adapter: TrainedAdapter | None) -> None:
    """One line per available artifact."""
    if run is not None:
        compressed = run.compressed
        n = len(factorized_modules(compressed.model))
        count = sum(p.numel() for p in compressed.model.parameters())
        what = (
            f"Compressed model of **{compressed.source.source}** ({compressed.method}): {n} layers factorized, "
            f"{params(count)} parameters"
        )
        verdict = guard_rails.verdict(run)
        if verdict.far_above:  # never in green: this checkpoint is not fit to use as it is
            st.warning(f"{what}. {verdict.text}")
        elif verdict.text:
            st.success(f"{what}, {verdict.text}.")
        else:
            st.info(f"{what}; not measured against the dense model.")
    else:
        st.caption("No compressed model yet: make one with “Compress and evaluate” on the Ranks page.")
    if adapter is not None:
        try:
            lora = sum(t.numel() for t in get_peft_model_state_dict(peft_model_of(adapter)).values())
        except LowrankLabError as err:
            st.error(str(err))
            st.stop()
        st.success(
            f"LoRA adapter on the **{adapter.base}** {adapter.source.source}: {params(lora)} adapter parameters."
        )
    else:
        st.caption("No LoRA adapter yet: fine-tune one on the LoRA page.")


def choose(compressed: CompressedModel | None, adapter: TrainedAdapter | None) -> ExportRequest:
    """Format, dtype and folder name widgets; stops the page with st.error on an unusable name."""
    formats = available_formats(compressed, adapter)
    labels = dict(EXPORT_FORMATS)
    if adapter is not None and adapter.compressed is not None:
        labels["merged"] = (
            "Adapter merged into its compressed base: the healed compressed checkpoint (same ranks, loads with "
            "load_compressed or load_lowrank.py)"
        )
    fmt = st.radio("Format", formats, format_func=labels.get, key="export_kind")
    dtype = "float32"
    if fmt != "rank_pattern":
        dtype = st.selectbox("Weights dtype", DTYPES, key="export_dtype", help="float16/bfloat16 halve the size")
    source = (compressed or adapter).source.source
    default = f"{safe_folder_name(source)}-{fmt.replace('_', '-')}"
    raw = st.text_input("Folder name inside the zip", value=default, key="export_name")
    try:
        name = safe_folder_name(raw)
    except LowrankLabError as err:
        st.error(str(err))
        st.stop()
    if name != raw.strip():
        st.caption(f"Saved as **{name}** (names are reduced to letters, digits, '-', '_' and '.').")
    return ExportRequest(fmt, dtype, name, id(compressed), id(adapter))


def show_size(request: ExportRequest, compressed, adapter) -> None:
    """The size the export will have, from parameter counts, before anything is built."""
    try:
        estimate = estimate_size(request.fmt, request.dtype, compressed=compressed, adapter=adapter)
    except LowrankLabError as err:
        st.error(str(err))
        st.stop()
    c1, c2, c3 = st.columns(3)
    c1.metric("Size", mib(estimate.total_bytes) if estimate.total_bytes else "a few KiB")
    c2.metric("Stored values", f"{estimate.elements:,}")
    c3.metric("Tokenizer", mib(estimate.tokenizer_bytes) if estimate.tokenizer_bytes else "none")
    if estimate.elements:
        st.caption(
            f"{estimate.elements:,} values × {estimate.weight_bytes // max(estimate.elements, 1)} bytes "
            f"({request.dtype}) = {mib(estimate.weight_bytes)} of weights, plus the tokenizer, "
            "config and model card."
        )


def _record(request: ExportRequest, size: int, compressed, adapter) -> None:
    source = adapter if request.fmt in ("adapter", "merged") else compressed
    run_store.attempt(
        lambda store: record_export(store, model=source.source.source, export_kind=request.fmt, dtype=request.dtype,
                                    name=request.name, size_bytes=size, source=source),
        "Recording this export",
    )  # fmt: skip


def _build_job(request: ExportRequest, compressed, adapter, comparison) -> Job[BuiltZip]:
    """Write the export into a temporary folder, then zip it: two named steps."""

    def work(job: Job) -> BuiltZip:
        job.stage("write")(0, 1, f"writing the {request.fmt.replace('_', ' ')} folder ({request.dtype})")
        with tempfile.TemporaryDirectory(prefix="lowrank-export-") as tmp:
            folder = export(request.fmt, Path(tmp) / request.name, request.dtype, compressed=compressed,
                            adapter=adapter, comparison=comparison)  # fmt: skip
            job.stage("zip")(0, 1, f"zipping {request.file_name}")
            data = zip_bytes(folder, request.name)
        job.stage("zip")(1, 1, "done")
        return BuiltZip(request, data)

    return Job("Exporting", {"write": 4.0, "zip": 1.0}, work)


def _take_finished_build(compressed, adapter) -> None:
    job = st.session_state.get(BUILDING)
    if not isinstance(job, Job) or not job.done:
        return
    del st.session_state[BUILDING]
    if job.result is not None:
        st.session_state[BUILT] = job.result
        _record(job.result.request, len(job.result.data), compressed, adapter)
    elif job.cancelled:
        st.session_state[NOTICE] = Notice("info", "Export stopped; nothing was built.")
    else:
        st.session_state[NOTICE] = Notice("error", str(job.error))


def download(request: ExportRequest, run: CompressionRun | None, adapter) -> None:
    """Build the zip on request and offer it for download (the card carries the run's measured figures)."""
    compressed, comparison = (run.compressed, run.comparison) if run is not None else (None, None)
    _take_finished_build(compressed, adapter)
    building = st.session_state.get(BUILDING)
    built = st.session_state.get(BUILT)
    if built is not None and built.request != request:
        del st.session_state[BUILT]  # free the old zip: the request changed
        built = None
    if building is not None:
        job_view.live(building, key="export_stop")
    elif built is None and st.button("Build the zip", key="export_build", type="primary"):
        st.session_state[BUILDING] = _build_job(request, compressed, adapter, comparison).start()
        st.rerun()
    notice = st.session_state.pop(NOTICE, None)  # shown once: the next action clears it
    if notice is not None:
        notice.show()
    if built is not None:
        data = built.data
        st.download_button(
            f"Download {request.file_name} ({mib(len(data))})",
            data=data,
            file_name=request.file_name,
            mime="application/zip",
            key="export_download",
            on_click="ignore",
        )
