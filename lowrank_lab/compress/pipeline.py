"""One compression run: check everything, allocate, compress block by block, measure, write.

The command line, the app's compress panel and the benchmark all call :func:`run_job` (a
model in memory) or :func:`run_folder_job` (a model folder compressed into a checkpoint
folder one block at a time, for models larger than memory), and all read the same
:class:`~lowrank_lab.compress.results.CompressionResult`.

Every argument is checked before the first block runs: the method and budget, the plan
against the model, the calibration text against the sizes asked for, the evaluation text,
the device, the output dtype and the output folder.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from lowrank_lab.artifacts import METHODS, CompressedModel, Method
from lowrank_lab.comparison import EvalSettings, compare
from lowrank_lab.compress.allocate import STRATEGIES, check_keep
from lowrank_lab.compress.allocation import allocate_explained, plan_linear_params
from lowrank_lab.compress.apply import check_plan, compress
from lowrank_lab.compress.auto import lagrangian_plan
from lowrank_lab.compress.calibration import CalibrationSettings, calibration_blocks
from lowrank_lab.compress.engine import EngineSettings
from lowrank_lab.compress.methods import linear_matrices
from lowrank_lab.compress.results import (
    STAGE_ALLOCATION,
    STAGE_REFIT,
    STAGE_SEQUENTIAL,
    STAGE_UNIFORM,
    AllocationReport,
    Candidate,
    CompressionResult,
    StageFigure,
    StageReport,
)
from lowrank_lab.compress.walk import check_device
from lowrank_lab.data.text import builtin_text, token_blocks
from lowrank_lab.errors import CheckpointError, DataError, SettingsError
from lowrank_lab.evaluate import perplexity
from lowrank_lab.export.archive import _check_replaceable as check_replaceable
from lowrank_lab.export.checkpoint import task_of
from lowrank_lab.export.format import normalize_dtype
from lowrank_lab.models import LoadedModel, ModelSpec
from lowrank_lab.plan import RankPlan, factorizes, plan_keep_params
from lowrank_lab.progress import ProgressFn, ProgressSink, Stages, report


@dataclass(frozen=True)
class CompressionJob:
    """What to compress and how.

    Attributes:
        keep: fraction of the linear layers' parameters to keep, in (0, 1] (ignored with ``plan``).
        allocation: ``uniform`` or ``auto`` (ignored with ``plan``).
        plan: ranks given as they are (a plan file), instead of ``keep`` and ``allocation``.
        method: ``svd``, ``whitened`` or ``pca``.
        calibration: calibration text and sizes (not read by ``svd``).
        engine: how the block walk calibrates and refits.
        device: where the block work runs (``cpu``, ``cuda``).
        evaluation: how to compare with the dense model; None skips it.
        stage_report: also measure perplexity after each stage (the gap waterfall; compresses
            the model up to three more times).

    Raises:
        SettingsError: an unknown method or strategy, a budget outside (0, 1].
    """

    keep: float = 0.8
    allocation: str = "auto"
    plan: RankPlan | None = None
    method: Method = "whitened"
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    device: str = "cpu"
    evaluation: EvalSettings | None = field(default_factory=EvalSettings)
    stage_report: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SettingsError(f"unknown compression method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.plan is None:
            check_keep(self.keep)
            if self.allocation not in STRATEGIES:
                raise SettingsError(
                    f"unknown allocation strategy {self.allocation!r}; use one of {', '.join(STRATEGIES)}"
                )
        elif not isinstance(self.plan, RankPlan):
            raise SettingsError(f"plan must be a RankPlan, got {type(self.plan).__name__}")


WEIGHTS = {"check": 0.2, "allocate": 3.0, "compress": 4.0, "stages": 8.0, "evaluate": 3.0}


def _stage_weights(job: CompressionJob) -> dict[str, float]:
    weights = dict(WEIGHTS)
    if job.plan is not None or job.allocation == "uniform":
        weights["allocate"] = 0.1
    if not job.stage_report:
        weights.pop("stages")
    if job.evaluation is None:
        weights.pop("evaluate")
    return weights


def check_job(loaded: LoadedModel, job: CompressionJob) -> tuple[torch.device, torch.Tensor | None]:
    """Every check that can fail, before any work: returns the device and the calibration blocks.

    Raises:
        SettingsError, InvalidRankPlan, DataError: naming the value and the fix.
    """
    device = check_device(job.device)
    if job.plan is not None:
        check_plan(loaded, job.plan)
    elif job.allocation == "auto" and loaded.task != "causal-lm":
        raise SettingsError(
            f"auto allocation measures how each matrix hurts the language-model loss, and {loaded.title} "
            f"({loaded.architecture}) is an encoder with no such loss; use allocation 'uniform'"
        )
    data_aware = job.method != "svd" or (job.plan is None and job.allocation == "auto")
    ids = calibration_blocks(loaded, job.calibration) if data_aware else None
    if job.evaluation is not None and has_lm_head(loaded) and loaded.tokenizer is not None:
        ev = job.evaluation
        token_blocks(loaded.tokenizer, ev.eval_text(), ev.max_blocks, ev.seq_len, allow_fewer=True)
    return device, ids


def has_lm_head(loaded: LoadedModel) -> bool:
    model = loaded.model
    return hasattr(model, "get_output_embeddings") and model.get_output_embeddings() is not None


def run_job(loaded: LoadedModel, job: CompressionJob, sink: ProgressSink | None = None) -> CompressionResult:
    """Allocate, compress block by block, and (optionally) measure the stages and the comparison.

    The shared ``loaded`` model is read, never changed.

    Args:
        loaded: the dense model.
        job: what to do.
        sink: receives a :class:`~lowrank_lab.progress.ProgressEvent` per step (fraction of
            the whole job, the step in words, seconds left).

    Returns:
        The :class:`CompressionResult`.

    Raises:
        SettingsError, InvalidRankPlan, DataError: bad settings, found before any work.
    """
    device, ids = check_job(loaded, job)
    stages = Stages(sink, _stage_weights(job))
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    plan, allocation = allocate_for(loaded, job, stages.stage("allocate"))
    seconds["allocate"] = time.perf_counter() - clock
    clock = time.perf_counter()
    compressed = compress(
        loaded, plan, job.method, job.calibration, stages.stage("compress"), engine=job.engine, device=job.device
    )
    seconds["compress"] = time.perf_counter() - clock
    del device, ids
    stage_report = None
    if job.stage_report and has_lm_head(loaded) and loaded.tokenizer is not None:
        clock = time.perf_counter()
        stage_report = measure_stages(loaded, job, plan, compressed, stages.stage("stages"))
        seconds["stages"] = time.perf_counter() - clock
    comparison = None
    if job.evaluation is not None:
        clock = time.perf_counter()
        comparison = compare(loaded, compressed, job.evaluation, progress=stages.stage("evaluate"))
        seconds["evaluate"] = time.perf_counter() - clock
    stages.finish()
    return CompressionResult(
        compressed=compressed,
        plan=compressed.plan,
        allocation=allocation,
        stages=stage_report,
        comparison=comparison,
        seconds=seconds,
    )


def allocate_for(
    loaded: LoadedModel, job: CompressionJob, progress: ProgressFn | None
) -> tuple[RankPlan, AllocationReport]:
    """The plan the job asks for, with its explanation."""
    matrices = linear_matrices(loaded)
    if job.plan is not None:
        plan = job.plan
        report = AllocationReport("plan", None, (Candidate("given", plan, plan_linear_params(matrices, plan)),))
        return plan, report
    return allocate_explained(loaded, job.keep, job.allocation, job.method, job.calibration, progress=progress)


def measure_stages(
    loaded: LoadedModel, job: CompressionJob, plan: RankPlan, final: CompressedModel, progress: ProgressFn | None
) -> StageReport:
    """Perplexity after each stage of the gap waterfall (each compresses the model once more).

    Stages: whitened truncation on the dense model's activations with uniform ranks; the same
    with the job's ranks; with inputs through the compressed blocks (no refit); the final model.
    Methods other than ``whitened`` report the final model only.
    """
    ev = job.evaluation or EvalSettings()
    text = ev.eval_text()

    def ppl(model) -> float:
        return perplexity(model, loaded.tokenizer, text, seq_len=ev.seq_len, max_blocks=ev.max_blocks, batch_size=2)

    runs: list[tuple[str, RankPlan, EngineSettings, str]] = []
    if job.method == "whitened":
        dense_inputs = replace(job.engine, sequential=False, anchored=False, residual=False, refine_steps=0)
        uniform = plan_keep_params(linear_matrices(loaded), job.keep) if job.plan is None else plan
        runs.append(
            (STAGE_UNIFORM, uniform, dense_inputs, "whitened truncation on the dense model's inputs, uniform ranks")
        )
        if job.plan is not None or job.allocation != "uniform":
            runs.append(
                (
                    STAGE_ALLOCATION,
                    plan,
                    dense_inputs,
                    f"the same with the {job.allocation if job.plan is None else 'given'} ranks",
                )
            )
        shifted = replace(job.engine, anchored=False, residual=False, refine_steps=0)
        runs.append((STAGE_SEQUENTIAL, plan, shifted, "block k calibrated on what compressed blocks 0..k−1 produce"))
    total = len(runs) + 2
    report(progress, 0, total, "perplexity, dense")
    dense = ppl(loaded.model)
    figures = []
    for i, (stage, stage_plan, engine, description) in enumerate(runs):
        report(progress, i + 1, total, f"stage: {stage}")
        model = compress(loaded, stage_plan, job.method, job.calibration, engine=engine, device=job.device).model
        figures.append(StageFigure(stage, ppl(model), description))
        del model
    report(progress, total - 1, total, f"stage: {STAGE_REFIT}")
    figures.append(StageFigure(STAGE_REFIT, ppl(final.model), "each layer refit to the dense layer's outputs"))
    report(progress, total, total, "stages measured")
    blocks = token_blocks(loaded.tokenizer, text, ev.max_blocks, ev.seq_len, allow_fewer=True)
    return StageReport(dense, tuple(figures), ev.source, int(blocks.numel()))


def check_output(out: Path, overwrite: bool, source: str | Path | None = None) -> Path:
    """Check before any work that the checkpoint folder can be written and is not the source.

    Raises:
        CheckpointError: the folder is the source model's folder, lies inside it or holds it,
            exists and is not an export (or exists without ``overwrite``), or cannot be created.
    """
    out = Path(out).expanduser().absolute()
    if source is not None:
        src = Path(source).expanduser()
        if src.exists():
            src = src.resolve()
            real = out.resolve()
            if real == src or src in real.parents or real in src.parents:
                raise CheckpointError(
                    f"--out {out} overlaps the source model {src}; write the checkpoint to a folder outside it"
                )
    check_replaceable(out, overwrite)
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise CheckpointError(f"cannot create {out}: {parent} is not writable; choose another --out folder")
    return out


def run_folder_job(
    folder: Path, job: CompressionJob, out: Path, dtype: str, overwrite: bool, sink: ProgressSink | None = None
) -> CompressionResult:
    """Compress a Hugging Face model folder into a checkpoint folder, one block in memory at a time.

    Reads the folder's safetensors shards tensor by tensor (bf16 and fp16 stay in their dtype
    until a block is cast to float32) and writes the compressed tensors in ``dtype`` block by
    block. ``auto`` allocation runs its loss-gradient pass block by block too, and returns the
    loss-weighted plan without scoring candidates (each would cost one more walk). No
    evaluation: load the written checkpoint with ``evaluate`` afterwards.

    Raises:
        ModelLoadError: the folder is not a safetensors model folder.
        SettingsError, InvalidRankPlan, DataError, CheckpointError: found before any block runs.
    """
    from lowrank_lab.compress.costs import streamed_costs
    from lowrank_lab.compress.folder_out import write_streamed
    from lowrank_lab.compress.sources import FolderSource, skeleton
    from lowrank_lab.compress.walk import batches_of, prepared_skeleton, walk_to_folder
    from lowrank_lab.matrices import weight_matrices
    from lowrank_lab.models.load import _load_tokenizer

    device = check_device(job.device)
    source = FolderSource(folder)
    dtype = normalize_dtype(dtype, out)
    check_output(out, overwrite, folder)
    shell = skeleton(source)
    matrices = weight_matrices(shell, include_embeddings=False)
    task = task_of(shell)
    tokenizer = _load_tokenizer(str(folder), True, False)
    if job.plan is not None:
        job.plan.validate(weight_matrices(shell))
    elif job.allocation == "auto" and task != "causal-lm":
        raise SettingsError(f"auto allocation needs a language-model loss and {folder} is an encoder; use 'uniform'")
    data_aware = job.method != "svd" or (job.plan is None and job.allocation == "auto")
    ids = None
    if data_aware:
        if tokenizer is None:
            raise DataError(f"{folder} has no tokenizer, so it cannot read calibration text; use method 'svd'")
        text = job.calibration.text if job.calibration.text is not None else builtin_text("calibration")
        ids = token_blocks(tokenizer, text, job.calibration.samples, job.calibration.seq_len, spread=True)
    del shell
    stages = Stages(sink, {"allocate": 3.0 if job.plan is None and job.allocation == "auto" else 0.1, "compress": 5.0})
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    if job.plan is not None:
        plan = job.plan
        allocation = AllocationReport("plan", None, (Candidate("given", plan, plan_linear_params(matrices, plan)),))
    elif job.allocation == "uniform":
        plan = plan_keep_params(matrices, job.keep)
        allocation = AllocationReport(
            "uniform", job.keep, (Candidate("uniform", plan, plan_linear_params(matrices, plan)),)
        )
    else:
        model, layout = prepared_skeleton(source, device)
        names = [m.name for m in matrices]
        costs = streamed_costs(model, layout, source, batches_of(ids, 4), names, device, stages.stage("allocate"))
        del model
        plan = lagrangian_plan(matrices, {n: c.cost for n, c in costs.items()}, job.keep)
        allocation = AllocationReport(
            "auto",
            job.keep,
            (Candidate("loss-weighted", plan, plan_linear_params(matrices, plan)),),
            0,
            "not scored: a streamed run returns the loss-weighted plan",
        )
    seconds["allocate"] = time.perf_counter() - clock
    shapes = {m.name: m.shape for m in matrices}
    ranks = {n: r for n, r in plan.ranks if factorizes(r, shapes[n])}
    clock = time.perf_counter()

    def compress_into(writer):
        model = walk_to_folder(source, ranks, job.method, ids, job.engine, device, writer, stages.stage("compress"))
        described = CompressedModel(
            model,
            tokenizer,
            ModelSpec(str(folder)),
            RankPlan(ranks),
            job.method,
            {} if job.method == "svd" else job.calibration.describe(),
            {
                "linear_params_dense": sum(m.params for m in matrices),
                "linear_params_compressed": plan_linear_params(matrices, RankPlan(ranks)),
            },
        )
        return model, described

    written = write_streamed(Path(out).expanduser(), dtype, overwrite, compress_into, tokenizer)
    seconds["compress"] = time.perf_counter() - clock
    stages.finish()
    return CompressionResult(None, RankPlan(ranks), allocation, out=str(written), seconds=seconds)
