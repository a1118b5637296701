"""The last compression's results on the Ranks page: the verdict, why these ranks, the figures, the generations."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from lowrank_lab.comparison import Comparison
from lowrank_lab.compress import AllocationReport
from lowrank_lab.compress.distill import DistillReport
from lowrank_lab.compress.results import StageReport
from lowrank_lab.plan import RankPlan
from lowrank_lab.runs.record import run_id_of
from lowrank_lab.ui import guard_rails, run_store, state
from lowrank_lab.ui.formatting import params, pct, ratio, sig

MIB = 2**20


def _headline(run: state.CompressionRun) -> None:
    """Green only when it was measured and is not far above dense."""
    compressed = run.compressed
    counts = compressed.params
    what = (
        f"Compressed {len(compressed.plan)} layers with {compressed.method}: {params(counts.compressed)} of "
        f"{params(counts.dense)} parameters ({pct(counts.compressed / counts.dense)})."
    )
    verdict = guard_rails.verdict(run)
    if verdict.far_above:
        st.warning(f"{what} {verdict.text} It is still on the LoRA and Export pages.")
    elif not verdict.text:
        st.info(f"{what} Not measured against the dense model. It is ready for the LoRA and Export pages.")
    else:
        st.success(f"{what} {verdict.text[0].upper()}{verdict.text[1:]}. It is ready for the LoRA and Export pages.")
    for note in run.notes:
        st.warning(note)


def explain_allocation(report: AllocationReport) -> None:
    """Why auto chose its plan: each candidate with its calibration loss."""
    if report.strategy != "auto" or len(report.candidates) < 2:
        return
    winner = report.winner
    others = [c for c in report.candidates if c is not winner]
    against = ", ".join(f"the {c.name} plan's {c.calibration_loss:.4f}" for c in others)
    if winner.name == "uniform":
        why = "spending the budget unevenly did not pay on this calibration text, so auto keeps the uniform plan"
    else:
        why = "it spends the budget where dropping components costs the loss least"
    st.markdown(
        f"**Why these ranks.** auto returned the **{winner.name}** plan: its calibration loss "
        f"{winner.calibration_loss:.4f} is below {against}; {why}."
    )
    frame = pd.DataFrame(
        {
            "candidate": [c.name for c in report.candidates],
            "matrices factorized": [len(c.plan) for c in report.candidates],
            "linear parameters kept": [c.linear_params for c in report.candidates],
            "calibration loss": [None if math.isnan(c.calibration_loss) else c.calibration_loss
                                 for c in report.candidates],
            "chosen": [i == report.chosen for i in range(len(report.candidates))],
        }
    )  # fmt: skip
    st.dataframe(
        frame,
        hide_index=True,
        column_config={
            "linear parameters kept": st.column_config.NumberColumn(format="localized"),
            "calibration loss": st.column_config.NumberColumn(format="%.4f"),
        },
        key="compress_candidates",
    )
    st.caption(f"Scored by {report.scoring}.")


def distillation_curve(report: DistillReport) -> None:
    """The distillation's KL to the dense model, step by step."""
    d = report.settings
    st.markdown(
        f"**Distillation** — {d.steps} steps of {d.batch_size} calibration blocks ({report.tokens:,} tokens, "
        f"{report.seconds:,.0f} s): KL to the dense model {report.losses[0]:.3g} → {report.losses[-1]:.3g} nats per token"
    )
    frame = pd.DataFrame({"step": range(1, len(report.losses) + 1), "KL (nats per token)": report.losses})
    st.line_chart(frame, x="step", y="KL (nats per token)", height=220)


def stage_table(report: StageReport) -> None:
    """What each stage of the compression bought: perplexity after it, against dense (the gap waterfall)."""
    rows = [("dense", report.dense_perplexity, 1.0, "")]
    rows += [(f.stage, f.perplexity, report.ratio(f), f.description) for f in report.stages]
    st.markdown(f"**What each stage bought** — perplexity on {report.eval_source} ({report.eval_tokens:,} tokens)")
    st.dataframe(
        pd.DataFrame(rows, columns=["stage", "perplexity", "× dense", "what the model is"]),
        hide_index=True,
        column_config={
            "perplexity": st.column_config.NumberColumn(format="%.2f"),
            "× dense": st.column_config.NumberColumn(format="%.2f×"),
        },
        key="compress_stages_table",
    )


def figures_table(report: Comparison) -> pd.DataFrame:
    """Dense against compressed, one figure a row (numbers; :func:`_styled` formats each row)."""
    d, c = report.dense, report.compressed
    rows = [
        ("parameters", d.params, c.params),
        ("weights (MiB, as loaded)", d.bytes / MIB, c.bytes / MIB),
        (f"perplexity ({report.eval_source}, {report.eval_tokens:,} tokens)", d.perplexity, c.perplexity),
        (f"forward latency (ms, 1×{report.latency_tokens} tokens, median)", d.latency_ms, c.latency_ms),
        ("peak memory of that forward (MiB)", d.peak_memory_bytes / MIB, c.peak_memory_bytes / MIB),
    ]
    frame = pd.DataFrame(rows, columns=["figure", "dense", "compressed"]).dropna()
    frame["compressed / dense"] = frame["compressed"] / frame["dense"]
    return frame.reset_index(drop=True)


def _styled(frame: pd.DataFrame):
    """Each row in its own precision: exact counts, one decimal of MiB, four significant digits else."""
    styler = frame.style
    for i, figure in frame["figure"].items():
        if figure == "parameters":
            fmt = "{:,.0f}".format
        elif "MiB" in figure:
            fmt = "{:,.1f}".format
        else:
            fmt = sig
        styler = styler.format(fmt, subset=pd.IndexSlice[[i], ["dense", "compressed"]])
    return styler.format(ratio, subset=["compressed / dense"])


def _generations(report: Comparison) -> None:
    for g in report.generations:
        st.markdown(f"**{g.prompt}**")
        left, right = st.columns(2)
        for column, label, text in ((left, "dense", g.dense), (right, "compressed", g.compressed)):
            column.caption(label)
            column.text(text or "(no text: only special tokens were generated)")


def _load_plan_into_sliders(plan: RankPlan) -> None:
    st.session_state[state.PLAN] = plan  # the Ranks controls adopt an outside plan on the next run


def _recorded(compressed) -> None:
    """Which run this is, and what the calibration predicted beside what was measured."""
    run_id = run_id_of(compressed)
    if run_id is None:
        _, err = run_store.store()
        if err is not None:
            run_store.notice(err)
        return
    run = run_store.attempt(lambda s: s.get(run_id), "Reading the run")
    if run is None:
        return
    text = f"Recorded as run #{run_id} (the **Runs** page lists it; its checkpoint is kept in the cache folder)."
    p, measured = run.prediction, run.row.perplexity
    if p.get("perplexity") is not None and measured is not None:
        text += (
            f" Predicted perplexity {p['perplexity']:.2f} ({p['perplexity_low']:.2f}–{p['perplexity_high']:.2f}), "
            f"measured {measured:.2f}."
        )
    st.caption(text)


def show(source: str) -> None:
    """The last run's verdict, the allocation's reasons, its figures, generations side by side,
    and its plan offered to the sliders."""
    run = st.session_state.get(state.COMPRESSED)
    if not isinstance(run, state.CompressionRun):
        return
    compressed, report = run.compressed, run.comparison
    if compressed.source.source != source:
        st.info(f"The last compressed model was made from {compressed.source.source}; it stays on the Export page.")
        return
    _headline(run)
    _recorded(compressed)
    if run.allocation is not None:
        explain_allocation(run.allocation)
    if report is not None:
        st.dataframe(_styled(figures_table(report)), hide_index=True, key="compress_figures")
    if run.stages is not None:
        stage_table(run.stages)
    if run.distillation is not None:
        distillation_curve(run.distillation)
    if report is not None:
        _generations(report)
    if run.ranks_from != "plan":
        st.button(
            f"Load this {run.ranks_from} plan into the sliders",
            key="compress_load_plan",
            on_click=_load_plan_into_sliders,
            args=(compressed.plan,),
        )
