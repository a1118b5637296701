"""The Ranks page's controls: presets, a slider per kind, a per-matrix override, the plan file.

Streamlit forgets a widget's value while its page is not shown, so the settings live in
session state as one :class:`RankControls` per model, every slider is seeded from it on each
run (under a new key when its value changed here: :func:`~lowrank_lab.ui.widgets.imposed_key`),
and the sliders' callbacks write changes back before the page reruns. The plan they describe is
kept once, in ``st.session_state[state.PLAN]``, for the compress panel and the export page; a
plan put there by someone else (one the controls do not describe) is adopted on the next run.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from lowrank_lab.errors import InvalidRankPlan
from lowrank_lab.plan import (
    PRESETS,
    KindInfo,
    KindTotals,
    RankControls,
    RankPlan,
    controls_from_plan,
    plan_from_controls,
    read_plan,
)
from lowrank_lab.spectra.engine import LayerSpectrum
from lowrank_lab.ui import state
from lowrank_lab.ui.formatting import params, pct
from lowrank_lab.ui.notices import Notice
from lowrank_lab.ui.widgets import current_key, imposed_key, moved

CONTROLS = "ranks_controls"  # SavedControls: the rank controls of the model in state.MODEL_SOURCE
MATRIX_RANK = "ranks_matrix_rank"  # the base of the one-matrix slider's key: matrix_rank_key()
UPLOAD = "ranks_plan_upload"  # the uploader's key is UPLOAD_<round>: a new round empties it
UPLOAD_ROUND = "ranks_plan_upload_round"  # int: bumped once a file was read, so the uploader empties
UPLOAD_RESULT = "ranks_plan_upload_result"  # Notice about the last uploaded file, shown once
PRESET_MESSAGE = "ranks_preset_message"  # Notice about the last preset applied
DEFAULT_PRESET = ("keep-params", 0.5)


@dataclass(frozen=True)
class SavedControls:
    """The session's rank controls and the model they were set for (the plan they give is state.PLAN)."""

    source: str
    controls: RankControls


def upload_key(session=None) -> str:
    """The plan uploader's key this round (``session``: st.session_state or an AppTest's)."""
    session = st.session_state if session is None else session
    return f"{UPLOAD}_{session[UPLOAD_ROUND] if UPLOAD_ROUND in session else 0}"


def _kind_base(kind: str) -> str:
    return f"ranks_kind_{kind}"  # the base of the kind slider's key (widgets.imposed_key)


def kind_key(kind: str, session=None) -> str:
    """The key of ``kind``'s slider now (``session``: an AppTest's state)."""
    return current_key(_kind_base(kind), session)


def matrix_rank_key(session=None) -> str:
    """The key of the one-matrix rank slider now (``session``: an AppTest's state)."""
    return current_key(MATRIX_RANK, session)


def preset_value_key(preset: str) -> str:
    return f"ranks_preset_value_{preset}"


def preset_button_key(preset: str) -> str:
    return f"ranks_preset_{preset}"


def _save(spectra: list[LayerSpectrum], controls: RankControls) -> RankPlan:
    plan = plan_from_controls(spectra, controls)
    st.session_state[CONTROLS] = SavedControls(state.current_spec().source, controls)
    st.session_state[state.PLAN] = plan
    return plan


def current_controls(spectra: list[LayerSpectrum]) -> tuple[RankControls, RankPlan]:
    """The session's controls and plan for the current model (a 50%-parameters plan at first)."""
    source = state.current_spec().source
    saved = st.session_state.get(CONTROLS)
    outside = st.session_state.get(state.PLAN)
    if isinstance(saved, SavedControls) and saved.source == source:
        plan = plan_from_controls(spectra, saved.controls)  # microseconds: no copy of it is kept
        if outside is None or outside == plan:
            st.session_state[state.PLAN] = plan
            return saved.controls, plan
    plan = None
    if isinstance(outside, RankPlan):
        try:
            outside.validate(spectra)
            plan = outside
        except InvalidRankPlan:
            plan = None  # a plan for another model: start afresh rather than fail
    if plan is None:
        key, value = DEFAULT_PRESET
        plan = PRESETS[key].plan(spectra, value)
    controls = controls_from_plan(spectra, plan)
    return controls, _save(spectra, controls)


def _controls() -> RankControls:
    return st.session_state[CONTROLS].controls


def _on_kind(kind: KindInfo, key: str, spectra: list[LayerSpectrum]) -> None:
    # A kind slider sets that kind in every layer, so it drops the kind's per-matrix overrides.
    if not moved(_kind_base(kind.kind), key):
        return  # a late report of the slider from before the page moved it: see imposed_key
    controls = _controls().with_kind_rank(kind.kind, int(st.session_state[key]))
    for name in kind.names:
        controls = controls.with_override(name, None)
    _save(spectra, controls)


def _on_matrix_rank(name: str, key: str, spectra: list[LayerSpectrum]) -> None:
    if not moved(MATRIX_RANK, key):
        return  # a late report of the slider from before the page moved it: see imposed_key
    _save(spectra, _controls().with_override(name, int(st.session_state[key])))


def _reset_override(name: str, spectra: list[LayerSpectrum]) -> None:
    _save(spectra, _controls().with_override(name, None))


def _clear_overrides(spectra: list[LayerSpectrum]) -> None:
    _save(spectra, _controls().without_overrides())


def _apply_preset(key: str, spectra: list[LayerSpectrum]) -> None:
    preset = PRESETS[key]
    value = st.session_state[preset_value_key(key)]
    try:
        plan = preset.plan(spectra, value)
    except InvalidRankPlan as err:
        st.session_state[PRESET_MESSAGE] = Notice("error", str(err))
        return
    _save(spectra, controls_from_plan(spectra, plan))
    st.session_state[PRESET_MESSAGE] = Notice("success", f"Applied “{preset.label}” = {value:g}")


def _on_upload(key: str, spectra: list[LayerSpectrum]) -> None:
    """Read the uploaded plan once; the uploader then empties and the result shows once."""
    uploaded = st.session_state.get(key)
    if uploaded is None:
        return
    st.session_state[UPLOAD_ROUND] = st.session_state.get(UPLOAD_ROUND, 0) + 1
    try:
        plan = read_plan(uploaded.getvalue(), spectra)
    except InvalidRankPlan as err:
        st.session_state[UPLOAD_RESULT] = Notice("error", f"{uploaded.name}: {err}")
        return
    _save(spectra, controls_from_plan(spectra, plan))
    st.session_state[UPLOAD_RESULT] = Notice("success", f"Loaded {uploaded.name}: {len(plan)} ranks")


def preset_controls(spectra: list[LayerSpectrum]) -> None:
    """One column per preset: its setting and an Apply button."""
    max_rank = max((sp.full_rank for sp in spectra if not sp.is_embedding), default=1)
    for col, preset in zip(st.columns(len(PRESETS)), PRESETS.values()):
        with col:
            integer = preset.integer
            st.number_input(
                preset.label,
                min_value=int(preset.minimum) if integer else preset.minimum,
                max_value=min(int(preset.maximum), max_rank) if integer else preset.maximum,
                value=int(preset.default) if integer else preset.default,
                step=int(preset.step) if integer else preset.step,
                key=preset_value_key(preset.key),
            )
            st.button("Apply", key=preset_button_key(preset.key), on_click=_apply_preset, args=(preset.key, spectra))
    message = st.session_state.pop(PRESET_MESSAGE, None)
    if message is not None:
        message.show()


def _kind_caption(kind: KindInfo, rank: int, totals: KindTotals | None, activation: float | None = None) -> str:
    if rank >= kind.break_even or totals is None or totals.factorized == 0:
        return f"r ≥ {kind.break_even} (break-even): **keep dense**"
    dense = totals.matrices - totals.factorized
    act = f" · act. {activation:.3f}" if activation is not None else ""
    return f"keeps {pct(totals.params_kept / totals.params_dense, 0)} · error {totals.rel_frobenius_error:.3f}{act}" + (
        f" · {dense} dense" if dense else ""
    )


def mixed_note(kind: KindInfo, controls: RankControls, rank: int) -> str:
    """What a move of the kind's slider would replace, when some of its matrices have their own rank ("")."""
    own = {name: controls.override(name) for name in kind.names if controls.override(name) is not None}
    if not own:
        return ""
    ranks = sorted(set(own.values()) | ({rank} if len(own) < len(kind.names) else set()))
    spread = f"ranks {ranks[0]}–{ranks[-1]}" if len(ranks) > 1 else f"rank {ranks[0]}"
    return (
        f"mixed: {len(own)} of {len(kind.names)} set one by one ({spread}); moving this slider sets all "
        f"{len(kind.names)} to one rank"
    )


def kind_sliders(
    kinds: list[KindInfo],
    spectra: list[LayerSpectrum],
    totals: dict[str, KindTotals],
    activation: dict[str, float] | None = None,
) -> None:
    """One slider per matrix kind (every layer); a rank at or past break-even says "keep dense".

    ``activation`` (kind → activation-aware error), once the model is calibrated, joins each label.
    """
    activation = activation or {}
    controls = _controls()
    for kind in kinds:
        rank = min(controls.kind_rank(kind.kind) or kind.full_rank, kind.full_rank)
        key = imposed_key(_kind_base(kind.kind), rank)
        sum_params = totals[kind.kind].params_dense if kind.kind in totals else 0
        mixed = mixed_note(kind, controls, rank)
        summary = _kind_caption(kind, rank, totals.get(kind.kind), activation.get(kind.kind))
        caption = f":orange[{mixed}]" if mixed else f":gray[{summary}]"
        # The numbers go in the label (markdown), so they sit right above the slider they describe.
        st.slider(
            f"**{kind.kind}** × {len(kind.names)} · {caption}",
            min_value=1,
            max_value=kind.full_rank,
            key=key,
            on_change=_on_kind,
            args=(kind, key, spectra),
            help=f"Rank of every {kind.kind} ({params(sum_params)} parameters in all); from "
            f"{kind.break_even} on, two factors are no smaller than the matrix, so it stays dense. "
            "Moving it drops this kind's per-matrix overrides.",
        )


def matrix_override(sp: LayerSpectrum, plan: RankPlan, spectra: list[LayerSpectrum]) -> None:
    """A slider for the selected matrix's own rank, and buttons to drop overrides."""
    controls = _controls()
    planned = plan.get(sp.name)
    key = imposed_key(MATRIX_RANK, planned or sp.full_rank)
    st.slider(
        f"Rank of {sp.name} ({sp.shape[0]}×{sp.shape[1]})",
        min_value=1,
        max_value=sp.full_rank,
        key=key,
        on_change=_on_matrix_rank,
        args=(sp.name, key, spectra),
        help="Overrides the kind's rank for this one matrix.",
    )
    overridden = controls.override(sp.name) is not None
    status = f"rank {planned}" if planned else "keep dense (at or past break-even)"
    st.caption(f"{'Override' if overridden else 'From its kind'}: {status}")
    c1, c2 = st.columns(2)
    c1.button(
        "Use the kind's rank",
        key="ranks_reset_override",
        on_click=_reset_override,
        args=(sp.name, spectra),
        disabled=not overridden,
    )
    c2.button(
        f"Clear all {len(controls.overrides)} overrides",
        key="ranks_clear_overrides",
        on_click=_clear_overrides,
        args=(spectra,),
        disabled=not controls.overrides,
    )


def plan_file(plan: RankPlan, spectra: list[LayerSpectrum]) -> None:
    """Download the plan as JSON; upload one back (validated against the model)."""
    source = state.current_spec().source
    st.download_button(
        f"Download plan JSON ({len(plan)} ranks)",
        data=plan.to_json(model=source),
        file_name=f"rank_plan_{source.replace('/', '_')}.json",
        mime="application/json",
        key="ranks_download",
    )
    key = upload_key()
    st.file_uploader(
        "Load a plan (JSON: module name → rank)", type=["json"], key=key, on_change=_on_upload, args=(key, spectra)
    )
    result = st.session_state.pop(UPLOAD_RESULT, None)  # shown once: the next action clears it
    if result is not None:
        result.show()
