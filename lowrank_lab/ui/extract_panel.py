"""The Compare page's LoRA extraction: ranks from a preset over the ΔW spectra, the error live, a PEFT adapter to download.

A model's change is a list of spectra, so the plan comes from the Ranks page's machinery and
every setting's cost and error follow from the cached σ (Eckart–Young) on each rerun; only the
"Extract" button reads the weights again, to build the factors: a background
:class:`~lowrank_lab.ui.jobs.Job` (the step, one bar, the time left, Stop from the first second).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import streamlit as st

from lowrank_lab.errors import LowrankLabError
from lowrank_lab.export.archive import zip_bytes
from lowrank_lab.extraction import MODES, ExtractionSettings, estimate_plan, extract_lora, extraction_plan
from lowrank_lab.plan import error_curve
from lowrank_lab.runs.record import record_extraction
from lowrank_lab.spectra.delta import MatrixDelta, ModelDelta
from lowrank_lab.spectra.sources import WeightSource
from lowrank_lab.ui import job_view, run_store
from lowrank_lab.ui.compare_inputs import SecondModel
from lowrank_lab.ui.formatting import params, pct
from lowrank_lab.ui.jobs import Job
from lowrank_lab.ui.rank_charts import error_rank_figure

MODE = "compare_extract_mode"
BUILD = "compare_extract_build"
BUILT = "compare_extract_built"  # (request, ExtractionResult, zip bytes)
DOWNLOAD = "compare_extract_download"
JOB = "compare_extract_job"  # (request, Job[(ExtractionResult, zip bytes)]) of the extraction under way
STOP = "compare_extract_stop"
# (minimum, maximum, default, step) of each mode's one setting
RANGES = {"energy": (0.01, 1.0, 0.99, 0.005), "rank": (1, 4096, 16, 1), "budget": (0.001, 1.0, 0.1, 0.005)}


def value_key(mode: str) -> str:
    return f"compare_extract_value_{mode}"


def _settings(max_rank: int) -> ExtractionSettings:
    c1, c2 = st.columns([2, 1])
    mode = c1.radio("Ranks", list(MODES), format_func=MODES.get, key=MODE)
    lo, hi, default, step = RANGES[mode]
    if mode == "rank":
        value = c2.number_input("LoRA rank", min_value=1, max_value=max_rank, value=min(default, max_rank), step=1,
                                key=value_key(mode))  # fmt: skip
    else:
        label = "Energy of each ΔW to keep" if mode == "energy" else "Budget (fraction of the changed parameters)"
        value = c2.number_input(label, min_value=lo, max_value=hi, value=default, step=step, format="%.3f",
                                key=value_key(mode))  # fmt: skip
    return ExtractionSettings(mode, value)


def section(delta: ModelDelta, base: WeightSource, second: SecondModel, selected: MatrixDelta) -> None:
    """Settings, the live estimate, the selected matrix's error against rank, and the extraction itself."""
    st.subheader("Extract a LoRA adapter")
    st.caption(
        "A PEFT LoRA adapter that turns the first model into (about) the second: each changed matrix keeps the top "
        "singular directions of its ΔW (B·A with α = r). A matrix whose rank would reach break-even is carried whole "
        "(PEFT's modules_to_save), as are changed norms. The error below comes from the cached σ, before any factor "
        "is built."
    )
    spectra = delta.spectra()
    linear = [sp for sp in spectra if not sp.is_embedding]
    if not linear:
        st.info("No linear matrix changed, so there is nothing a LoRA could hold.")
        return
    try:
        settings = _settings(max(sp.full_rank for sp in linear))
        plan = extraction_plan(spectra, settings)
    except LowrankLabError as err:
        st.error(str(err))
        return
    est = estimate_plan(spectra, plan)
    cols = st.columns(4)
    cols[0].metric("LoRA matrices", f"{est.lora_modules}", help=f"{est.dense_modules} carried whole")
    cols[1].metric("Adapter parameters", params(est.adapter_params),
                   help=f"{pct(est.params_fraction, 2)} of the {est.changed_params:,} parameters that changed")  # fmt: skip
    cols[2].metric("Energy of ΔW kept", f"{est.energy_kept:.4f}")
    cols[3].metric("‖ΔW − B·A‖ / ‖ΔW‖", f"{est.relative_error:.4f}", help="all changed linear matrices stacked")
    if selected.changed and not selected.spectrum.is_embedding:
        curve = error_curve(selected.spectrum)
        st.plotly_chart(error_rank_figure(curve, plan.get(selected.name), f"ΔW of {selected.name}"),
                        key="compare_extract_error")  # fmt: skip
    request = (base.label, second.key, settings)
    held = st.session_state.get(JOB)
    running = held is not None and not held[1].done
    if st.button("Extract the adapter", key=BUILD, type="primary", disabled=running):
        held = st.session_state[JOB] = (request, extract_job(delta, base, second, settings).start())
    if held is not None:
        if not held[1].done:
            job_view.live(held[1], key=STOP)
            return
        _finished(*st.session_state.pop(JOB))
    built = st.session_state.get(BUILT)
    if built is not None and built[0] == request:
        result, data = built[1], built[2]
        st.success(
            f"Extracted: {result.estimate.lora_modules} LoRA matrices and {len(result.whole_modules)} carried whole, "
            f"measured ‖ΔW − B·A‖/‖ΔW‖ = {result.measured_relative_error:.4f} (predicted "
            f"{result.estimate.relative_error:.4f}), in {result.seconds:.1f} s."
        )
        st.download_button("Download the adapter (PEFT, zip)", data=data, file_name="extracted-lora.zip",
                           mime="application/zip", key=DOWNLOAD)  # fmt: skip


def extract_job(delta: ModelDelta, base: WeightSource, second: SecondModel, settings: ExtractionSettings) -> Job:
    """The extraction as a job (not started): the factors written to a temporary folder, then zipped.

    Its result is ``(ExtractionResult, zip bytes)``; the folder is gone once the job ends.
    """

    def work(job: Job):
        report = job.stage("factors")
        job.tell("building the factors…")

        def progress(done: int, total: int, message: str) -> None:
            report(done, total, f"LoRA factors: {done}/{total} {message}")

        with tempfile.TemporaryDirectory(prefix="lowrank-extract-") as tmp:
            folder = Path(tmp) / "extracted-lora"
            result = extract_lora(base, second.source(), delta, settings, folder=folder, progress=progress)
            job.tell("zipping the adapter…")
            job.check()
            return result, zip_bytes(folder)

    return Job("Extracting", {"factors": 1.0}, work)


def _finished(request, job: Job) -> None:
    """Keep a finished extraction for its request; say once why one ended without a result."""
    if job.result is not None:
        st.session_state[BUILT] = (request, *job.result)
        result = job.result[0]  # recorded without its temporary folder: the download is the adapter
        run_store.attempt(lambda store: record_extraction(store, replace(result, folder=None), origin="app"),
                          "Recording this extraction")  # fmt: skip
    elif job.cancelled:
        st.info(f"Extraction stopped after {job.seconds:,.0f} s; nothing was kept.")
    else:
        st.error(job.error)
