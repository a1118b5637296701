"""Compressing a model folder into a checkpoint folder, one block in memory at a time.

For models larger than memory: the folder's safetensors shards are read tensor by tensor
(bf16 and fp16 stay in their dtype until a block is cast to float32), each block is compressed
and written to the output's shards in the asked dtype and freed. ``auto`` allocation runs its
loss-gradient pass block by block too and returns the loss-weighted plan without scoring
candidates (each would cost one more walk over the model). Nothing is evaluated: load the
written checkpoint with ``evaluate`` afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path

from lowrank_lab.checks import check_device
from lowrank_lab.compress.auto import GRADIENT_BATCH, lagrangian_plan
from lowrank_lab.compress.calibration import calibration_ids
from lowrank_lab.compress.costs import streamed_costs
from lowrank_lab.compress.folder_out import write_streamed
from lowrank_lab.compress.pipeline import CompressionJob
from lowrank_lab.compress.results import AllocationReport, Candidate, CompressionResult, plan_linear_params
from lowrank_lab.compress.sources import FolderSource, skeleton
from lowrank_lab.compress.walk import batches_of, prepared_skeleton, walk_to_folder
from lowrank_lab.dtypes import normalize_dtype
from lowrank_lab.errors import SettingsError
from lowrank_lab.export.archive import check_export_target
from lowrank_lab.matrices import weight_matrices
from lowrank_lab.models import CompressedModel, ModelSpec, ParamCounts
from lowrank_lab.models.limits import check_seq_len
from lowrank_lab.models.tokenizer import load_tokenizer
from lowrank_lab.plan import RankPlan, factorizes, plan_keep_params
from lowrank_lab.progress import ProgressSink, Stages
from lowrank_lab.tasks import task_of_model


def run_folder_job(
    folder: Path, job: CompressionJob, out: Path, dtype: str, overwrite: bool = False, sink: ProgressSink | None = None
) -> CompressionResult:
    """Compress the Hugging Face folder ``folder`` into the checkpoint folder ``out``, block by block.

    Args:
        folder: a model folder with ``config.json`` and safetensors weights (one file or shards).
        job: what to do (its ``evaluation`` and ``stage_report`` are not used).
        out: the checkpoint folder to write (format of :func:`~lowrank_lab.export.save_compressed`,
            weights in shards with an index when they pass one shard).
        dtype: the stored dtype (``float32``, ``float16``, ``bfloat16`` or fp32/fp16/bf16).
        overwrite: replace a checkpoint folder lowrank_lab wrote.
        sink: receives a :class:`~lowrank_lab.progress.ProgressEvent` per step.

    Returns:
        The result, with ``compressed`` None and ``out`` the folder written.

    Raises:
        ModelLoadError: the folder is not a safetensors model folder.
        SettingsError, InvalidRankPlan, DataError, OutputError: found before any block runs.
    """
    folder = Path(folder).expanduser()
    check_device(job.device)
    source = FolderSource(folder)
    dtype = normalize_dtype(dtype, out)
    out = check_export_target(out, overwrite, zip=False, protect=(folder,))  # the source is never written
    shell = skeleton(source)
    matrices = weight_matrices(shell, include_embeddings=False)
    tokenizer = load_tokenizer(folder)
    if job.plan is not None:
        job.plan.validate(weight_matrices(shell), model=shell)
    elif job.allocation == "auto" and task_of_model(shell) != "causal-lm":
        raise SettingsError(f"auto allocation needs a language-model loss and {folder} is an encoder; use 'uniform'")
    ids = None
    if job.data_aware:
        check_seq_len(shell, job.calibration.seq_len, "the calibration seq_len")
        ids = calibration_ids(tokenizer, job.calibration, str(folder))
    del shell
    auto = job.plan is None and job.allocation == "auto"
    stages = Stages(sink, {"allocate": 3.0 if auto else 0.1, "compress": 5.0})
    device = check_device(job.device)
    clock = time.perf_counter()
    if job.plan is not None:
        plan, name = job.plan, "given"
    elif not auto:
        plan, name = plan_keep_params(matrices, job.keep), "uniform"
    else:
        model, layout = prepared_skeleton(source, device)
        names = [m.name for m in matrices]
        costs = streamed_costs(
            model, layout, source, batches_of(ids, GRADIENT_BATCH), names, device, stages.stage("allocate")
        )
        del model
        plan, name = lagrangian_plan(matrices, {n: c.cost for n, c in costs.items()}, job.keep), "loss-weighted"
    scoring = "not scored: a streamed run returns the loss-weighted plan" if auto else ""
    allocation = AllocationReport(
        "plan" if job.plan is not None else job.allocation,
        None if job.plan is not None else job.keep,
        (Candidate(name, plan, plan_linear_params(matrices, plan)),),
        0,
        scoring,
    )
    seconds = {"allocate": time.perf_counter() - clock}
    shapes = {m.name: m.shape for m in matrices}
    ranks = {n: r for n, r in plan.ranks if factorizes(r, shapes[n])}
    params = _param_counts(matrices, ranks, source)

    def compress_into(writer):
        model = walk_to_folder(source, ranks, job.method, ids, job.engine, device, writer, stages.stage("compress"))
        calibration = {} if job.method == "svd" else job.calibration.describe()
        return model, CompressedModel(
            model, tokenizer, ModelSpec(str(folder)), RankPlan(ranks), job.method, calibration, params
        )

    clock = time.perf_counter()
    written = write_streamed(out, dtype, overwrite, (folder,), compress_into, tokenizer)
    seconds["compress"] = time.perf_counter() - clock
    stages.finish()
    return CompressionResult(None, RankPlan(ranks), allocation, params=params, out=str(written), seconds=seconds)


def _param_counts(matrices, ranks: dict[str, int], source) -> ParamCounts:
    """Counts before and after from shapes alone (tied tensors once, as the source stores them)."""
    dense = sum(_numel(source.shape(n)) for n in source.names())
    linear_dense = sum(m.params for m in matrices)
    saved = sum(m.params - ranks[m.name] * sum(m.shape) for m in matrices if m.name in ranks)
    return ParamCounts(dense, dense - saved, linear_dense, linear_dense - saved)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
