"""The Compare page's results: running the comparison with progress, the summary, the heatmap, one matrix, the table.

The comparison runs on a button press (it reads every matrix of both models, pair by pair) as a
background :class:`~lowrank_lab.ui.jobs.Job` like every long job of the app (the step, one bar,
the time left, Stop from the first second), and is kept in the session with the choice it was
made for; changing the second model asks for a new one rather than showing the old.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import streamlit as st

from lowrank_lab.spectra import SpectrumCache
from lowrank_lab.spectra.delta import MatrixDelta, ModelDelta, model_delta
from lowrank_lab.spectra.delta_views import DELTA_METRICS, delta_grid, pair_spectra
from lowrank_lab.spectra.sources import WeightSource
from lowrank_lab.ui import job_view
from lowrank_lab.ui.compare_charts import pair_figure
from lowrank_lab.ui.compare_inputs import SecondModel
from lowrank_lab.ui.jobs import Job
from lowrank_lab.ui.spectra_charts import heatmap_figure
from lowrank_lab.ui.widgets import imposed_key, moved

RESULT = "compare_result"  # (base source, second model key, ModelDelta)
RUN = "compare_run"
JOB = "compare_job"  # (base source, second model key, Job[ModelDelta]) of the comparison under way
STOP = "compare_stop"
METRIC = "compare_metric"
HEATMAP = "compare_heatmap"
MATRIX = "compare_matrix"  # the base of the matrix selectbox's key (widgets.current_key)
CHOSEN = "compare_chosen"  # str: the matrix shown, picked in the selectbox or by a heatmap click
CSV = "compare_csv"


def current(base: str, second: SecondModel) -> ModelDelta | None:
    """The comparison of this session for exactly this pair, if one ran."""
    held = st.session_state.get(RESULT)
    return held[2] if held is not None and held[:2] == (base, second.key) else None


def compare_job(base: WeightSource, second: SecondModel) -> Job[ModelDelta]:
    """The comparison of ``base`` with ``second`` as a job (not started): one stage, a step per matrix pair."""

    def work(job: Job[ModelDelta]) -> ModelDelta:
        report = job.stage("compare")
        job.tell("reading both models matrix by matrix…")

        def progress(done: int, total: int, message: str) -> None:
            report(done, total, f"ΔW spectra: {done}/{total} {message}")

        return model_delta(base, second.source(), progress=progress)

    return Job("Comparing", {"compare": 1.0}, work)


def run(base: WeightSource, second: SecondModel) -> ModelDelta | None:
    """The Compare button; on a press, compare matrix by matrix in a background job. Returns the result shown."""
    held = st.session_state.get(JOB)
    running = held is not None and not held[2].done
    label = "Compare again" if current(base.label, second) is not None else "Compare"
    if st.button(label, key=RUN, type="primary", disabled=running):
        held = st.session_state[JOB] = (base.label, second.key, compare_job(base, second).start())
    if held is not None:
        if not held[2].done:
            job_view.live(held[2], key=STOP)
            return None
        _finished(*st.session_state.pop(JOB))
    delta = current(base.label, second)
    if delta is None:
        st.info(f"Press **Compare** to read both models and look at every matrix's change W₂ − W₁ ({second.label}).")
    return delta


def _finished(base: str, second: tuple, job: Job[ModelDelta]) -> None:
    """Keep a finished comparison; say once why one ended without a result."""
    if job.result is not None:
        st.session_state[RESULT] = (base, second, job.result)
        st.session_state.pop(CHOSEN, None)
    elif job.cancelled:
        st.info(f"Comparison stopped after {job.seconds:,.0f} s.")
    else:
        st.error(job.error)
        st.session_state.pop(RESULT, None)


def summary(delta: ModelDelta) -> None:
    """Counts and sizes of the change, in one row."""
    changed = delta.changed
    ranks = [d.rank for d in changed]
    cols = st.columns(4)
    cols[0].metric("Matrices changed", f"{len(changed)} of {len(delta.matrices)}")
    cols[1].metric("Size of the change", f"{delta.relative_change:.3g}", help="‖ΔW‖F / ‖W₁‖F over every matrix")
    cols[2].metric("Rank of ΔW (median)", f"{int(np.median(ranks))}" if ranks else "–",
                   help="singular values above the subtraction's rounding noise")  # fmt: skip
    cols[3].metric("Other parameters changed", f"{len(delta.vectors_changed)}",
                   help=", ".join(delta.vectors_changed[:8]) or "norm weights and biases are equal")  # fmt: skip
    if changed and len(set(ranks)) == 1 and ranks[0] < min(d.spectrum.full_rank for d in changed):
        st.success(f"Every changed matrix moved by a change of rank exactly {ranks[0]}: what a rank-{ranks[0]} "
                   "LoRA merged into the model leaves.")  # fmt: skip


def _on_cell() -> None:
    event = st.session_state.get(HEATMAP)
    for point in event.selection.points if event is not None else []:
        name = point.get("customdata")
        if isinstance(name, list):
            name = name[0] if name else None
        if name:
            st.session_state[CHOSEN] = name
            return


def heatmap(delta: ModelDelta) -> None:
    """How low-rank the change is, over (layer × kind); clicking a cell selects that matrix."""
    metric = st.selectbox("Heatmap of the change", list(DELTA_METRICS), key=METRIC,
                          format_func=lambda k: DELTA_METRICS[k].grid.label)  # fmt: skip
    grid = delta_grid(delta, metric)
    if not grid.layers:
        return
    fig = heatmap_figure(grid, st.session_state.get(CHOSEN), DELTA_METRICS[metric].grid)
    st.plotly_chart(fig, key=HEATMAP, on_select=_on_cell, selection_mode="points")
    st.caption("Low values: the change lives in a few directions, so a small LoRA holds it. Click a cell to open it.")


def _on_pick(key: str) -> None:
    if moved(MATRIX, key):  # not a late report from before a heatmap click changed the choice
        st.session_state[CHOSEN] = st.session_state[key]


def choose_matrix(delta: ModelDelta) -> MatrixDelta:
    """A selectbox of every matrix (the first changed one until someone picks)."""
    names = [d.name for d in delta.matrices]
    if st.session_state.get(CHOSEN) not in names:
        st.session_state[CHOSEN] = next((d.name for d in delta.changed), names[0])
    key = imposed_key(MATRIX, st.session_state[CHOSEN])
    ranks = {d.name: d.rank for d in delta.matrices}
    name = st.selectbox("Matrix", names, key=key, on_change=_on_pick, args=(key,),
                        format_func=lambda n: f"{n}  (ΔW rank {ranks[n]})")  # fmt: skip
    return delta.get(name)


def matrix(delta: ModelDelta, d: MatrixDelta, base: WeightSource, tuned: WeightSource) -> None:
    """One matrix: its numbers, and its spectra in both models overlaid with the spectrum of the change."""
    m = d.spectrum.metrics
    cols = st.columns(5)
    cols[0].metric("Rank of ΔW", f"{d.rank} of {d.spectrum.full_rank}")
    cols[1].metric("‖ΔW‖ / ‖W₁‖", "–" if math.isnan(d.relative_change) else f"{d.relative_change:.3g}")
    cols[2].metric("Stable rank of ΔW", f"{m.stable_rank:.2f}")
    cols[3].metric("Rank for 90% / 99% of ΔW", f"{m.energy_rank_90} / {m.energy_rank_99}")
    s_base, s_tuned = pair_spectra(base, tuned, d.name, SpectrumCache())
    spectral = d.relative_spectral_change  # NaN when the comparison did not need σ₁(W₁): it is s_base[0]
    if math.isnan(spectral) and d.changed and len(s_base) and s_base[0] > 0:
        spectral = m.spectral / float(s_base[0])
    cols[4].metric("‖ΔW‖₂ / ‖W₁‖₂", "–" if math.isnan(spectral) else f"{spectral:.3g}")
    st.plotly_chart(pair_figure(d, s_base, s_tuned, delta.base, delta.tuned), key="compare_pair")


def table(delta: ModelDelta) -> None:
    """Every matrix's change as a table, with CSV download."""
    frame = pd.DataFrame(delta.records())
    st.dataframe(frame, hide_index=True, height=320)
    st.download_button("Download the comparison CSV", data=frame.to_csv(index=False), file_name="comparison.csv",
                       mime="text/csv", key=CSV)  # fmt: skip
