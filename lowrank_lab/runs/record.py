"""Recording what the app and the command line make: compressions, fine-tunes, extractions, exports.

Each ``record_*`` function saves the run's artifacts first (a compressed checkpoint, an
adapter), in the existing formats, into the store's own folder (``runs/<uid>-<role>`` beside the
database), then writes the record in one short transaction. If the record cannot be written,
the artifacts just saved are removed again (no run points to them), and the error says why;
the caller's objects are never changed.
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

from lowrank_lab.cache import KeyedCache, model_digest
from lowrank_lab.comparison import Comparison, EvalSettings
from lowrank_lab.compress import CalibrationSettings
from lowrank_lab.errors import RunStoreError
from lowrank_lab.export import save_adapter, save_compressed
from lowrank_lab.extraction import ExtractionResult
from lowrank_lab.finetune import TrainedAdapter
from lowrank_lab.models import CompressedModel, LoadedModel
from lowrank_lab.prediction import Prediction, prediction_basis
from lowrank_lab.progress import ProgressFn
from lowrank_lab.runs.frontier import PREDICTED_METHOD, fit_from_runs
from lowrank_lab.runs.records import Artifact, RunRecord
from lowrank_lab.runs.store import RunStore

CHECKPOINT, ADAPTER, EXPORT = "checkpoint", "adapter", "export"

# Which run an in-memory result came from (recorded or reopened), so a fine-tune of a compressed
# model or an export can name its parent run. Entries die with the object.
_RUN_OF: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def run_id_of(result: CompressedModel | TrainedAdapter | None) -> int | None:
    """The id of the run that recorded (or reopened) ``result``, if any."""
    return None if result is None else _RUN_OF.get(result)


def remember(result: CompressedModel | TrainedAdapter, run_id: int) -> None:
    """Note that ``result`` is run ``run_id`` (see :func:`run_id_of`)."""
    _RUN_OF[result] = run_id


def new_uid() -> str:
    return uuid.uuid4().hex[:16]


def _check_writable(store: RunStore) -> None:
    if store.read_only:
        raise RunStoreError(
            f"the run store {store.path} is read-only, so nothing is recorded; give this user write access "
            "or set LOWRANK_LAB_RUNS to another file",
            "read-only",
        )


def _record_with(store: RunStore, uid: str, build, save) -> int:
    """Save artifacts with ``save(path_for)`` (``path_for(role)`` names each one's place in the
    store's folder), then record ``build(artifacts)``."""
    _check_writable(store)
    made: list[Path] = []

    def path_for(role: str) -> Path:
        made.append(store.artifact_path(uid, role))
        return made[-1]

    try:
        artifacts = save(path_for)
        return store.record(build(artifacts))
    except BaseException:
        for path in made:  # written just now, for this run only: no record points to them
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
        raise


def evaluation_settings(evaluation: EvalSettings | None) -> dict:
    """How a comparison measured, without the text itself."""
    e = evaluation or EvalSettings()
    return {"text": e.source, "seq_len": e.seq_len, "max_blocks": e.max_blocks, "max_new_tokens": e.max_new_tokens}


def compression_record(
    compressed: CompressedModel,
    *,
    allocation: str,
    keep: float | None = None,
    comparison: Comparison | None = None,
    evaluation: EvalSettings | None = None,
    prediction: Prediction | None = None,
    stages: Sequence[Mapping] = (),
    model_digest: str | None = None,
    artifacts: Sequence[Artifact] = (),
    origin: str = "api",
    uid: str | None = None,
) -> RunRecord:
    """The record of one compression (nothing is saved or written)."""
    figures = compressed.params.as_dict()
    if comparison is not None:
        figures |= comparison.figures()
        figures["generations"] = [dataclasses.asdict(g) for g in comparison.generations]
    settings = {"calibration": dict(compressed.calibration)}
    if comparison is not None:
        settings["evaluation"] = evaluation_settings(evaluation)
    return RunRecord(
        kind="compression",
        model=compressed.source.source,
        model_digest=model_digest,
        method=compressed.method,
        allocation=allocation,
        keep=keep,
        plan=compressed.plan,
        settings=settings,
        figures=figures,
        prediction={} if prediction is None else prediction.as_dict(),
        stages=tuple(stages),
        artifacts=tuple(artifacts),
        origin=origin,
        uid=uid or new_uid(),
    )


def record_compression(
    store: RunStore,
    compressed: CompressedModel,
    *,
    save: bool = True,
    exported_to: str | Path | None = None,
    **details,
) -> int:
    """Save the compressed checkpoint into the store's folder and record the run.

    Args:
        store: the run store.
        compressed: the compressed model (not changed).
        save: write the checkpoint (float32, so reopening gives the same outputs).
        exported_to: a folder the user exported it to (recorded, never deleted with the run).
        **details: as :func:`compression_record` (allocation, keep, comparison, prediction, ...).

    Returns:
        The run's id.

    Raises:
        RunStoreError: the store is read-only, locked or broken (the checkpoint is not kept).
        CheckpointError: the checkpoint could not be written.
    """
    uid = new_uid()

    def save_all(path_for) -> list[Artifact]:
        artifacts = []
        if save:
            path = save_compressed(compressed, path_for(CHECKPOINT), comparison=details.get("comparison"))
            artifacts.append(Artifact(CHECKPOINT, str(path)))
        if exported_to is not None:
            artifacts.append(Artifact(EXPORT, str(Path(exported_to).expanduser().resolve()), owned=False))
        return artifacts

    run_id = _record_with(
        store, uid, lambda artifacts: compression_record(compressed, artifacts=artifacts, uid=uid, **details), save_all
    )
    remember(compressed, run_id)
    return run_id


def predict_compression(
    store: RunStore | None,
    loaded: LoadedModel,
    compressed: CompressedModel,
    calibration: CalibrationSettings,
    dense: float | None = None,
    progress: ProgressFn | None = None,
    cache: KeyedCache | None = None,
) -> Prediction | None:
    """What the calibration predicts for a whitened compression's plan, fitted on the store's earlier runs.

    Returns:
        The prediction, or None for other methods (the prediction prices whitened truncation).
    """
    if compressed.method != PREDICTED_METHOD:
        return None
    fit = fit_from_runs(store.runs(model=loaded.spec.source, kind="compression")) if store is not None else None
    basis = prediction_basis(
        loaded, calibration, fit=fit, dense=dense, measure_dense=False, progress=progress, cache=cache
    )
    return basis.predict(compressed.plan)


def record_compression_run(
    store: RunStore,
    loaded: LoadedModel,
    compressed: CompressedModel,
    calibration: CalibrationSettings,
    *,
    comparison: Comparison | None = None,
    progress: ProgressFn | None = None,
    cache: KeyedCache | None = None,
    **details,
) -> int:
    """Predict (whitened), digest the source model, save the checkpoint and record: what the app and CLI call.

    Args:
        store: the run store.
        loaded: the source model (read-only).
        compressed: the compressed model (not changed).
        calibration: the calibration it was made with.
        comparison: the measured comparison, when one ran.
        progress: told how the prediction's calibration goes (cached after the first time).
        cache: the calibration cache the compression used (the app's; default: the process's).
        **details: as :func:`record_compression` (allocation, keep, evaluation, stages, save, exported_to, origin).

    Raises:
        RunStoreError: the store is read-only, locked or broken.
    """
    _check_writable(store)
    dense = comparison.dense.perplexity if comparison is not None else None
    prediction = predict_compression(store, loaded, compressed, calibration, dense, progress, cache)
    return record_compression(
        store, compressed, comparison=comparison, prediction=prediction,
        model_digest=model_digest(loaded.model), **details,
    )  # fmt: skip


def _plain(settings) -> dict:
    return dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings or {})


def _base_of(compressed: CompressedModel | None) -> dict:
    """What an adapter's compressed base was, for reopening it (nothing for the original model)."""
    if compressed is None:
        return {}
    p = compressed.params
    counts = {"dense": p.dense, "compressed": p.compressed, "linear_dense": p.linear_dense,
              "linear_compressed": p.linear_compressed}  # fmt: skip
    return {"compressed": {"method": compressed.method, "calibration": dict(compressed.calibration), "params": counts}}


def finetune_record(
    adapter: TrainedAdapter,
    *,
    data: str = "",
    parent: int | None = None,
    model_digest: str | None = None,
    artifacts: Sequence[Artifact] = (),
    origin: str = "api",
    uid: str | None = None,
) -> RunRecord:
    """The record of one LoRA fine-tune (nothing is saved or written)."""
    report = adapter.report
    figures = dict(report.figures()) if report is not None else {}
    if report is not None:
        figures["losses"] = [list(x) for x in report.losses]
        figures["val_losses"] = [list(x) for x in report.val_losses]
    lora = _plain(adapter.settings)
    base = adapter.compressed
    return RunRecord(
        kind="finetune",
        model=adapter.source.source,
        model_digest=model_digest,
        method="lora" if lora.get("init", "default") == "default" else f"lora-{lora['init']}",
        allocation=adapter.base,
        plan=base.plan if base is not None else None,
        settings={"lora": lora, "data": data or figures.get("data", ""), "base": adapter.base, **_base_of(base)},
        figures=figures,
        parent=parent if parent is not None else run_id_of(base),
        artifacts=tuple(artifacts),
        origin=origin,
        uid=uid or new_uid(),
    )


def record_finetune(
    store: RunStore, adapter: TrainedAdapter, *, save: bool = True, exported_to: str | Path | None = None, **details
) -> int:
    """Save the adapter (PEFT format; a compressed base goes in its ``base/``) and record the run.

    Args:
        store: the run store.
        adapter: the trained adapter (not changed).
        save: write the adapter folder into the store's folder.
        exported_to: a folder the user saved it to (recorded, never deleted with the run).
        **details: as :func:`finetune_record` (data, parent, model_digest, origin).

    Raises:
        RunStoreError: the store is read-only, locked or broken (the adapter is not kept).
    """
    uid = new_uid()

    def save_all(path_for) -> list[Artifact]:
        artifacts = []
        if save:
            artifacts.append(Artifact(ADAPTER, str(save_adapter(adapter, path_for(ADAPTER)))))
        if exported_to is not None:
            artifacts.append(Artifact(EXPORT, str(Path(exported_to).expanduser().resolve()), owned=False))
        return artifacts

    run_id = _record_with(store, uid, lambda a: finetune_record(adapter, artifacts=a, uid=uid, **details), save_all)
    remember(adapter, run_id)
    return run_id


def record_export(
    store: RunStore,
    *,
    model: str,
    export_kind: str,
    dtype: str,
    name: str,
    size_bytes: int,
    source: CompressedModel | TrainedAdapter | None = None,
    origin: str = "app",
) -> int:
    """Record an export (a download from the Export page): what was exported, from which run, how big.

    Raises:
        RunStoreError: the store is read-only, locked or broken.
    """
    _check_writable(store)
    record = RunRecord(
        kind="export",
        model=model,
        method=export_kind,
        settings={"dtype": dtype, "name": name},
        figures={"bytes": int(size_bytes)},
        parent=run_id_of(source),
        origin=origin,
    )
    return store.record(record)


def extraction_record(result: ExtractionResult, *, artifacts: Sequence[Artifact] = (), origin: str = "api",
                      uid: str | None = None) -> RunRecord:  # fmt: skip
    """The record of one LoRA extraction from two models (nothing is saved or written)."""
    est = result.estimate
    figures = {
        "lora_modules": est.lora_modules,
        "whole_modules": len(result.whole_modules),
        "adapter_params": est.adapter_params,
        "changed_params": est.changed_params,
        "stored_params": result.stored_params,
        "energy_kept": est.energy_kept,
        "relative_error_predicted": est.relative_error,
        "relative_error_measured": result.measured_relative_error,
        "relative_error_of_tuned": result.relative_error_of_tuned,
        "seconds": result.seconds,
    }
    return RunRecord(
        kind="extraction",
        model=result.base,
        method="lora-extraction",
        allocation=result.settings.mode,
        plan=result.plan,
        settings={"tuned": result.tuned, "extraction": {"mode": result.settings.mode, "value": result.settings.value}},
        figures=figures,
        artifacts=tuple(artifacts),
        origin=origin,
        uid=uid or new_uid(),
    )


def record_extraction(store: RunStore, result: ExtractionResult, *, origin: str = "api") -> int:
    """Record a LoRA extraction: the two models, how ranks were chosen, the errors and sizes.

    The adapter folder the extraction wrote (``result.folder``, the user's ``--out``) is recorded
    as an artifact the run does not own: deleting the run leaves it alone.

    Raises:
        RunStoreError: the store is read-only, locked or broken.
    """
    _check_writable(store)
    artifacts = () if result.folder is None else (Artifact(ADAPTER, str(Path(result.folder).resolve()), owned=False),)
    return store.record(extraction_record(result, artifacts=artifacts, origin=origin))
