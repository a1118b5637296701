"""One compression run: check everything, allocate, compress block by block, measure.

The command line, the app's compress panel and the benchmark all call :func:`run_job` (a
model in memory; :func:`lowrank_lab.compress.stream.run_folder_job` compresses a model folder
into a checkpoint folder one block at a time) and all read the same
:class:`~lowrank_lab.compress.results.CompressionResult`.

Every argument is checked before the first block runs: the method and budget, the plan
against the model, the calibration text against the sizes asked for, the evaluation text and
the device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

from lowrank_lab.cache import KeyedCache
from lowrank_lab.checks import check_device, require
from lowrank_lab.comparison import EvalSettings, compare, measure_dense
from lowrank_lab.compress.allocate import STRATEGIES, allocate_explained, check_keep
from lowrank_lab.compress.apply import check_plan, compress
from lowrank_lab.compress.calibration import CalibrationSettings, calibration_blocks
from lowrank_lab.compress.decompositions import linear_matrices
from lowrank_lab.compress.distill import DistillSettings, check_distill, distill
from lowrank_lab.compress.engine import EngineSettings
from lowrank_lab.compress.results import (
    STAGE_ALLOCATION,
    STAGE_DISTILLED,
    STAGE_REFIT,
    STAGE_SEQUENTIAL,
    STAGE_UNIFORM,
    AllocationReport,
    Candidate,
    CompressionResult,
    StageFigure,
    StageReport,
    plan_linear_params,
)
from lowrank_lab.errors import SettingsError
from lowrank_lab.evaluate import block_perplexity, eval_blocks
from lowrank_lab.models import METHODS, CompressedModel, LoadedModel, Method
from lowrank_lab.models.limits import check_seq_len
from lowrank_lab.plan import RankPlan, plan_keep_params
from lowrank_lab.progress import ProgressFn, ProgressSink, Stages, report
from lowrank_lab.tasks import has_lm_head


@dataclass(frozen=True)
class CompressionJob:
    """What to compress and how.

    Attributes:
        keep: fraction of the linear layers' parameters to keep, in (0, 1] (ignored with ``plan``).
        allocation: ``uniform`` or ``auto`` (ignored with ``plan``).
        plan: ranks given as they are (a plan file), instead of ``keep`` and ``allocation``.
        method: ``svd``, ``whitened`` or ``pca``.
        calibration: calibration text and sizes (not read by ``svd`` with given or uniform ranks).
        engine: how the block walk calibrates and refits.
        distill: the end-to-end distillation after the walk (default: none).
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
    distill: DistillSettings = field(default_factory=DistillSettings)
    device: str = "cpu"
    evaluation: EvalSettings | None = field(default_factory=EvalSettings)
    stage_report: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise SettingsError(f"unknown compression method {self.method!r}; use one of {', '.join(METHODS)}")
        require(self.plan, (RankPlan, type(None)), "the job's plan", "pass a RankPlan or None")
        require(self.calibration, CalibrationSettings, "the job's calibration", "pass CalibrationSettings(...)")
        require(self.engine, EngineSettings, "the job's engine settings", "pass EngineSettings(...)")
        require(self.distill, DistillSettings, "the job's distillation", "pass DistillSettings(...)")
        require(self.evaluation, (EvalSettings, type(None)), "the job's evaluation", "pass EvalSettings(...) or None")
        if self.plan is None:
            check_keep(self.keep)
            if not isinstance(self.allocation, str) or self.allocation not in STRATEGIES:
                raise SettingsError(
                    f"unknown allocation strategy {self.allocation!r}; use one of {', '.join(STRATEGIES)}"
                )

    @property
    def data_aware(self) -> bool:
        """Whether the job reads calibration text (a data-aware method, or ``auto`` ranks)."""
        return self.method != "svd" or (self.plan is None and self.allocation == "auto")


class StageSource(Protocol):
    """What hands out one progress callback per stage of a job (:class:`Stages`, the app's Job)."""

    def stage(self, name: str) -> ProgressFn: ...


# Relative time of each stage, in block passes over the calibration tokens (what dominates on a
# small model): auto's cost pass is about six (forward, recomputed segments, the statistics'
# forward, forward and backward per batch), its candidates' shared walk one and their scoring
# a fraction; the sequential
# compression about four (the dense pass, the shifted partial passes group by group, the
# shifted pass); the stage report three more compressions and four perplexities. A distillation
# step is about four passes (teacher, student, backward) over its batch: weighed per step below.
WEIGHTS = {"dense": 1.5, "allocate": 7.0, "compress": 4.0, "stages": 8.0, "distill": 0.0, "evaluate": 1.5}


def stage_weights(job: CompressionJob) -> dict[str, float]:
    """The job's stages and their relative weights (what the progress bar's fraction counts)."""
    weights = dict(WEIGHTS)
    if job.plan is not None or job.allocation == "uniform":
        weights["allocate"] = 0.1
    if job.distill.active:
        weights["distill"] = 4.0 * job.distill.steps * job.distill.batch_size / job.calibration.samples
    else:
        weights.pop("distill")
    if not job.stage_report:
        weights.pop("stages")
    if job.evaluation is None:
        weights.pop("evaluate")
        weights.pop("dense")
    return weights


def check_job(loaded: LoadedModel, job: CompressionJob) -> None:
    """Every check that can fail, before any work.

    Raises:
        SettingsError, InvalidRankPlan, DataError: naming the value and the fix.
    """
    require(loaded, LoadedModel, "the model to compress", "load one with load_model")
    require(job, CompressionJob, "the job", "pass CompressionJob(...)")
    check_device(job.device)
    if job.plan is not None:
        check_plan(loaded, job.plan)
    elif job.allocation == "auto" and loaded.task != "causal-lm":
        raise SettingsError(
            f"auto allocation measures how each matrix hurts the language-model loss, and {loaded.title} "
            f"({loaded.architecture}) is an encoder with no such loss; use allocation 'uniform'"
        )
    if job.data_aware:
        check_seq_len(loaded.model, job.calibration.seq_len, "the calibration seq_len")
        calibration_blocks(loaded, job.calibration)  # too little text, or no tokenizer: say so now
    check_distill(loaded, job.distill, job.calibration)
    ev = job.evaluation
    if (ev is not None or job.stage_report) and has_lm_head(loaded.model) and loaded.tokenizer is not None:
        ev = ev or EvalSettings()
        check_seq_len(loaded.model, ev.seq_len, "the perplexity block length seq_len")
        eval_blocks(loaded.tokenizer, ev.eval_text(), ev.seq_len, ev.max_blocks)


def run_job(
    loaded: LoadedModel,
    job: CompressionJob,
    sink: ProgressSink | None = None,
    cache: KeyedCache | None = None,
    *,
    stages: StageSource | None = None,
    dense_cache: KeyedCache | None = None,
) -> CompressionResult:
    """Allocate, compress block by block, and (optionally) measure the stages and the comparison.

    The shared ``loaded`` model is read, never changed.

    Args:
        loaded: the dense model.
        job: what to do.
        sink: receives a :class:`~lowrank_lab.progress.ProgressEvent` per step (fraction of
            the whole job, the step in words, seconds left).
        cache: where ``auto`` keeps its loss costs (default:
            :data:`~lowrank_lab.compress.calibration.CALIBRATION_CACHE`; the app passes its own).
        stages: instead of ``sink``, something that already splits the job into the stages of
            :func:`stage_weights` (``.stage(name)`` → ProgressFn), e.g. the app's background Job.
        dense_cache: where the dense model's figures are kept (:func:`~lowrank_lab.comparison.compare`'s cache).

    Returns:
        The :class:`CompressionResult`.

    Raises:
        SettingsError, InvalidRankPlan, DataError: bad settings, found before any work.
    """
    check_job(loaded, job)
    stages = Stages(sink, stage_weights(job)) if stages is None else stages
    seconds: dict[str, float] = {}
    if job.evaluation is not None:  # before any compressed copy exists: memory holds one model
        clock = time.perf_counter()
        measure_dense(loaded, job.evaluation, stages.stage("dense"), dense_cache)
        seconds["dense"] = time.perf_counter() - clock
    clock = time.perf_counter()
    plan, allocation = allocate_for(loaded, job, stages.stage("allocate"), cache)
    seconds["allocate"] = time.perf_counter() - clock
    clock = time.perf_counter()
    compressed = compress(
        loaded, plan, job.method, job.calibration, stages.stage("compress"), engine=job.engine, device=job.device
    )
    seconds["compress"] = time.perf_counter() - clock
    stage_report = None
    measured = job.stage_report and has_lm_head(loaded.model) and loaded.tokenizer is not None
    if measured:  # on the walk's model, before any distillation
        clock = time.perf_counter()
        stage_report = measure_stages(loaded, job, plan, compressed, stages.stage("stages"))
        seconds["stages"] = time.perf_counter() - clock
    distillation = None
    if job.distill.active:
        clock = time.perf_counter()
        compressed, distillation = distill(loaded, compressed, job.distill, job.calibration, stages.stage("distill"))
        seconds["distill"] = time.perf_counter() - clock
        if measured and not distillation.stopped:
            stage_report = add_distilled(stage_report, compressed, job)
    comparison = None
    if job.evaluation is not None:
        clock = time.perf_counter()
        comparison = compare(loaded, compressed, job.evaluation, stages.stage("evaluate"), dense_cache)
        seconds["evaluate"] = time.perf_counter() - clock
    if isinstance(stages, Stages):
        stages.finish()
    return CompressionResult(
        compressed=compressed,
        plan=compressed.plan,
        allocation=allocation,
        stages=stage_report,
        comparison=comparison,
        params=compressed.params,
        seconds=seconds,
        distillation=distillation,
    )


def add_distilled(stage_report: StageReport, compressed: CompressedModel, job: CompressionJob) -> StageReport:
    """The stage report with the distilled model's perplexity appended."""
    ppl, _ = _stage_perplexity(compressed.tokenizer, job)
    figure = StageFigure(
        STAGE_DISTILLED,
        ppl(compressed.model),
        f"every factor trained {job.distill.steps} steps to match the dense model's next-token distributions",
    )
    return replace(stage_report, stages=(*stage_report.stages, figure))


def _stage_perplexity(tokenizer, job: CompressionJob) -> tuple[Callable[[torch.nn.Module], float], torch.Tensor]:
    """The stage report's measure (perplexity on the job's evaluation text), and the blocks it scores."""
    ev = job.evaluation or EvalSettings()
    blocks = eval_blocks(tokenizer, ev.eval_text(), ev.seq_len, ev.max_blocks)
    return (lambda model: block_perplexity(model, blocks, batch_size=2)), blocks


def allocate_for(
    loaded: LoadedModel, job: CompressionJob, progress: ProgressFn | None = None, cache: KeyedCache | None = None
) -> tuple[RankPlan, AllocationReport]:
    """The plan the job asks for, with its explanation."""
    if job.plan is not None:
        matrices = linear_matrices(loaded)
        candidate = Candidate("given", job.plan, plan_linear_params(matrices, job.plan))
        return job.plan, AllocationReport("plan", None, (candidate,))
    report = allocate_explained(loaded, job.keep, job.allocation, job.method, job.calibration, progress, cache)
    return report.plan, report


def measure_stages(
    loaded: LoadedModel, job: CompressionJob, plan: RankPlan, final: CompressedModel, progress: ProgressFn | None
) -> StageReport:
    """Perplexity after each stage of the gap waterfall (each stage compresses the model once more).

    Stages, each adding one thing: whitened truncation on the dense model's activations with
    uniform ranks; the same with the job's ranks; with each block calibrated on what the
    compressed blocks before it produce; the final model (each layer refit to the dense
    layer's outputs). Methods other than ``whitened`` report the final model only.
    """
    ev = job.evaluation or EvalSettings()
    ppl, blocks = _stage_perplexity(loaded.tokenizer, job)

    runs: list[tuple[str, RankPlan, EngineSettings, str]] = []
    if job.method == "whitened":
        # The first three stages are plain whitened truncation (SVD-LLM, no ridge beyond what
        # Cholesky needs): the old whole-model path for the first two; the ridge belongs to the refit.
        dense_inputs = replace(job.engine, sequential=False, anchored=False, residual=False, refine_steps=0, ridge=0.0)
        uniform = plan_keep_params(linear_matrices(loaded), job.keep) if job.plan is None else plan
        runs.append((STAGE_UNIFORM, uniform, dense_inputs, "whitened truncation on the dense model's inputs"))
        if job.plan is not None or job.allocation != "uniform":
            ranks = "given" if job.plan is not None else job.allocation
            runs.append((STAGE_ALLOCATION, plan, dense_inputs, f"the same with the {ranks} ranks"))
        shifted = replace(job.engine, anchored=False, residual=False, refine_steps=0, ridge=0.0)
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
    figures.append(
        StageFigure(STAGE_REFIT, ppl(final.model), "each layer refit to the dense layer's outputs (with the ridge)")
    )
    report(progress, total, total, "stages measured")
    return StageReport(dense, tuple(figures), ev.source, int(blocks.numel()))
