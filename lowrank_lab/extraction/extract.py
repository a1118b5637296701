"""LoRA extraction: a PEFT adapter that turns the base model into (about) the tuned one.

Two passes over the matched matrices, a few pairs in memory at a time: the ΔW spectra
(:func:`~lowrank_lab.spectra.delta.model_delta`, cached on disk), which fix every rank through
a plan; then the factors of each planned ΔW (:func:`~lowrank_lab.extraction.factors.top_factors`).
What a LoRA cannot hold is carried whole in ``modules_to_save``: a changed matrix whose rank is
at or past break-even, a changed embedding (with the modules tied to it), and any module whose
norm weights or bias changed. Nothing is written until everything is computed, and then into a
staged folder renamed into place.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from lowrank_lab.errors import SettingsError
from lowrank_lab.extraction.adapter_files import AdapterTensors, write_adapter_files
from lowrank_lab.extraction.factors import top_factors
from lowrank_lab.extraction.ranks import ExtractionEstimate, ExtractionSettings, estimate_plan, extraction_plan
from lowrank_lab.matrices import WeightMatrix
from lowrank_lab.outputs import check_output_folder, staged_folder
from lowrank_lab.plan import RankPlan, rank_errors
from lowrank_lab.progress import ProgressFn, report
from lowrank_lab.spectra.delta import ModelDelta
from lowrank_lab.spectra.sources import WeightSource
from lowrank_lab.threads import ordered_map


@dataclass(frozen=True)
class ExtractedMatrix:
    """One changed matrix in the adapter.

    Attributes:
        name: the module.  shape: out×in.
        rank: its LoRA rank, or None when it is carried whole.
        delta_rank: the rank of ΔW.
        predicted_error: ‖ΔW − B·A‖_F / ‖ΔW‖_F from the singular values (0 when carried whole).
        measured_error: the same, measured on the factors built.
    """

    name: str
    shape: tuple[int, int]
    rank: int | None
    delta_rank: int
    predicted_error: float
    measured_error: float


@dataclass(frozen=True)
class ExtractionResult:
    """What an extraction made and measured (recorded by the run store; printed by the CLI).

    Attributes:
        base, tuned: the two models.
        settings: how the ranks were chosen.
        plan: module → LoRA rank.
        whole_modules: modules carried whole (PEFT ``modules_to_save``).
        matrices: every changed matrix, in model order.
        estimate: parameters and the error predicted from the singular values.
        measured_relative_error: ‖ΔW − B·A‖_F / ‖ΔW‖_F over the changed linear matrices,
            stacked, measured on the factors built.
        relative_error_of_tuned: ‖W₂ − (W₁ + B·A)‖_F / ‖W₂‖_F over the same matrices.
        stored_params: numbers in the adapter file (factors and everything carried whole).
        folder: where the adapter was written (None when not written).
        seconds: wall time of the extraction (both passes and the writing).
    """

    base: str
    tuned: str
    settings: ExtractionSettings
    plan: RankPlan
    whole_modules: tuple[str, ...]
    matrices: tuple[ExtractedMatrix, ...]
    estimate: ExtractionEstimate
    measured_relative_error: float
    relative_error_of_tuned: float
    stored_params: int
    folder: Path | None
    seconds: float

    def as_dict(self) -> dict:
        """A JSON-ready summary (ranks by module, no per-matrix rows)."""
        est = self.estimate
        return {
            "base": self.base,
            "tuned": self.tuned,
            "mode": self.settings.mode,
            "value": self.settings.value,
            "lora_modules": est.lora_modules,
            "whole_modules": list(self.whole_modules),
            "ranks": self.plan.as_dict(),
            "adapter_params": est.adapter_params,
            "stored_params": self.stored_params,
            "lora_params": est.lora_params,
            "changed_params": est.changed_params,
            "energy_kept": est.energy_kept,
            "predicted_relative_error": est.relative_error,
            "measured_relative_error": self.measured_relative_error,
            "relative_error_of_tuned": self.relative_error_of_tuned,
            "folder": str(self.folder) if self.folder is not None else None,
            "seconds": round(self.seconds, 4),
        }

    def matrix_records(self) -> list[dict]:
        return [asdict(m) for m in self.matrices]


def _whole_tensors(source: WeightSource, name: str, entry: WeightMatrix | None) -> dict[str, torch.Tensor]:
    """Every parameter of module ``name`` as that module stores it (Conv1D: in×out)."""
    params = {}
    if entry is not None:
        w = source.matrix(name)
        params["weight"] = (w.t() if entry.module_type == "Conv1D" else w).detach().clone()
    for vector in source.vectors():
        owner, _, param = vector.rpartition(".")
        if owner == name:
            params[param] = source.vector(vector).detach().clone()
    return params


def _whole_modules(delta: ModelDelta, plan: RankPlan, entries: dict[str, WeightMatrix]) -> tuple[list[str], RankPlan]:
    """Modules to carry whole, and the plan without any of them."""
    planned = plan.as_dict()
    whole = [d.name for d in delta.changed if d.name not in planned]
    for name in list(whole):
        whole.extend(entries[name].tied_to)  # a tied head must see the same new embedding
    for vector in delta.vectors_changed:
        owner = vector.rpartition(".")[0]
        if owner and owner not in whole:
            whole.append(owner)  # a LoRA cannot carry a bias or norm change; the module goes whole
    for name in whole:
        planned.pop(name, None)
    return list(dict.fromkeys(whole)), RankPlan(planned)


def _residual(change: torch.Tensor, b: torch.Tensor, a: torch.Tensor) -> float:
    """‖ΔW − B·A‖_F of the factors as built (float64), without forming B·A where that is safe.

    ‖ΔW − BA‖² = ‖ΔW‖² − 2⟨ΔWAᵀ, B⟩ + ⟨BᵀB, AAᵀ⟩ costs one m×n×r product and one norm
    instead of three passes over an m×n matrix. It cancels where the residual is tiny beside
    ‖ΔW‖ (all of ΔW kept): below 1e-6 of ‖ΔW‖² the residual is formed explicitly.
    """
    whole = float(torch.linalg.vector_norm(change)) ** 2
    squared = whole - 2 * float(((change @ a.T) * b).sum()) + float(((b.T @ b) * (a @ a.T)).sum())
    if squared < 1e-6 * whole:
        return float(torch.linalg.vector_norm(change - b @ a))
    return math.sqrt(squared)


def _nothing() -> None:
    return None


def _factors(
    w1: torch.Tensor, w2: torch.Tensor, rank: int, singular_values
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(B, A, measured ‖ΔW − BA‖_F) of one pair's change (run on a worker thread)."""
    with torch.no_grad():
        change = w2.to(torch.float64) - w1.to(torch.float64)  # (m, n)
        b, a, _ = top_factors(change, rank, singular_values)  # the known spectrum lets it iterate cheaply
        return b, a, _residual(change, b.double(), a.double())


def build_adapter(
    base: WeightSource, tuned: WeightSource, delta: ModelDelta, plan: RankPlan, progress: ProgressFn | None = None
) -> tuple[AdapterTensors, list[ExtractedMatrix], tuple[float, float], RankPlan]:
    """The adapter's tensors for ``plan``, reading the matrix pairs in order (two factorized at a time).

    Returns:
        (tensors, per-matrix rows, (measured ‖ΔW − BA‖_F/‖ΔW‖_F, ‖W₂ − W₁ − BA‖_F/‖W₂‖_F) over
        the changed linear matrices, the plan actually factorized).
    """
    entries = {m.name: m for m in base.matrices()}
    tied_owner = {tied: m.name for m in entries.values() for tied in m.tied_to}
    whole, plan = _whole_modules(delta, plan, entries)
    ranks = plan.as_dict()
    tensors = AdapterTensors(conv1d=any(entries[n].module_type == "Conv1D" for n in ranks))
    rows, lost, total, tuned_total = [], 0.0, 0.0, 0.0
    work = [d for d in delta.changed] + [n for n in whole if n not in {d.name for d in delta.changed}]

    def calls():  # the pairs to factorize are read here, in order; their factors computed on a small pool
        for item in work:
            r = None if isinstance(item, str) else ranks.get(item.name)
            if r is None:
                yield _nothing, ()
            else:
                yield _factors, (base.matrix(item.name), tuned.matrix(item.name), r, item.spectrum.s)

    for i, (item, factored) in enumerate(zip(work, ordered_map(calls(), min(2, os.cpu_count() or 1)))):
        if isinstance(item, str):  # a module carried whole only for its vectors, or a tied head
            owner = tied_owner.get(item)
            if owner is not None:  # a head tied to a changed embedding stores that same new matrix
                tensors.whole[item] = {"weight": tuned.matrix(owner).detach().clone()}
            else:
                tensors.whole[item] = _whole_tensors(tuned, item, entries.get(item))
            report(progress, i + 1, len(work), item)
            continue
        d, sp = item, item.spectrum
        r = ranks.get(d.name)
        if factored is not None:
            b, a, residual = factored
            tensors.factors[d.name] = (b, a)
            predicted = float(rank_errors(sp, [r])[0][0])
        else:
            tensors.whole[d.name] = _whole_tensors(tuned, d.name, entries[d.name])
            residual, predicted = 0.0, 0.0
        norm = sp.metrics.frobenius
        rows.append(ExtractedMatrix(d.name, sp.shape, r, d.rank, predicted, residual / norm if norm else 0.0))
        if not sp.is_embedding:
            lost += residual**2
            total += norm**2
            tuned_total += d.tuned_frobenius**2
        report(progress, i + 1, len(work), d.name)
    measured = math.sqrt(lost / total) if total else 0.0
    of_tuned = math.sqrt(lost / tuned_total) if tuned_total else 0.0
    return tensors, rows, (measured, of_tuned), plan


def adapter_card(result: ExtractionResult) -> str:
    """The README of an extracted adapter: where it came from, what it keeps, how to load it."""
    est = result.estimate
    ranks = sorted(set(result.plan.as_dict().values()))
    rank_text = ", ".join(map(str, ranks[:12])) + (" …" if len(ranks) > 12 else "")
    return f"""# LoRA extracted by lowrank_lab

From the difference of two models: base `{result.base}`, tuned `{result.tuned}`.
Ranks chosen by {result.settings.describe()}: {est.lora_modules} matrices as LoRA factors
(ranks {rank_text or "none"}), {len(result.whole_modules)} modules carried whole (`modules_to_save`).

| | |
| --- | --- |
| adapter parameters | {est.adapter_params:,} in changed matrices ({est.params_fraction:.4f} of their {est.changed_params:,}); {result.stored_params:,} stored in all |
| energy of ΔW kept | {est.energy_kept:.6f} |
| ‖ΔW − B·A‖ / ‖ΔW‖ predicted from σ | {est.relative_error:.6f} |
| ‖ΔW − B·A‖ / ‖ΔW‖ measured | {result.measured_relative_error:.6f} |
| ‖W_tuned − (W_base + B·A)‖ / ‖W_tuned‖ | {result.relative_error_of_tuned:.3e} |

```python
from peft import PeftModel
model = PeftModel.from_pretrained(base_model, "path/to/this/folder")  # base_model: {result.base}
```
"""


def extract_lora(
    base: WeightSource,
    tuned: WeightSource,
    delta: ModelDelta,
    settings: ExtractionSettings | None = None,
    *,
    plan: RankPlan | None = None,
    folder: str | Path | None = None,
    overwrite: bool = False,
    protect=(),
    progress: ProgressFn | None = None,
) -> ExtractionResult:
    """Extract a LoRA adapter from ``tuned − base`` and (optionally) write it in PEFT's format.

    Args:
        base, tuned: the two models' weights (not changed).
        delta: their :func:`~lowrank_lab.spectra.delta.model_delta` (the ΔW spectra).
        settings: how to choose the ranks (default: keep 0.99 of each ΔW's energy).
        plan: ranks chosen elsewhere (the Compare page's sliders); overrides ``settings``.
        folder: where to write the adapter (created atomically); None writes nothing.
        overwrite: replace an adapter folder written before.
        protect: model sources (paths) the adapter folder must not be, contain or lie inside.
        progress: called as ``progress(done, total, module)`` while factors are computed.

    Returns:
        The :class:`ExtractionResult`.

    Raises:
        SettingsError: a bad setting, a plan naming matrices that did not change, or nothing
            a LoRA could hold.
        OutputError: ``folder`` exists and was not written by this library, or touches a source.
    """
    start = time.perf_counter()
    settings = settings or ExtractionSettings()
    if folder is not None:  # before any factor is computed
        folder = check_output_folder(folder, overwrite, protect)
    spectra = delta.spectra()
    if plan is None:
        plan = extraction_plan(spectra, settings)
    else:
        plan.validate(spectra)
    tensors, rows, (measured, of_tuned), plan = build_adapter(base, tuned, delta, plan, progress)
    if not tensors.factors:
        raise SettingsError(
            "no changed matrix is low-rank enough to store as LoRA factors under "
            f"{settings.describe()} (each would be at or past break-even); the change is a full one — "
            "save the tuned model itself, or lower the energy/rank"
        )
    result = ExtractionResult(
        base=delta.base,
        tuned=delta.tuned,
        settings=settings,
        plan=plan,
        whole_modules=tuple(tensors.whole),
        matrices=tuple(rows),
        estimate=estimate_plan(spectra, plan),
        measured_relative_error=measured,
        relative_error_of_tuned=of_tuned,
        stored_params=sum(t.numel() for t in tensors.state_dict().values()),
        folder=None,
        seconds=0.0,
    )
    if folder is not None:
        with staged_folder(folder, overwrite, protect) as tmp:
            write_adapter_files(tmp, tensors, delta.base, adapter_card(result))
    seconds = time.perf_counter() - start
    return replace(result, folder=folder, seconds=seconds)
