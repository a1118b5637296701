"""Writing a compressed checkpoint: config + factor tensors + plan + loader + card (+ zip).

The format is described in :mod:`lowrank_lab.checkpoint.format`. Nothing is pickled: tensors go to
safetensors, everything else is JSON, Markdown or the loader's Python source.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from lowrank_lab.checkpoint.format import (
    CARD_FILE,
    CONFIG_FILE,
    FORMAT,
    LOADER_FILE,
    PLAN_FILE,
    SECTION,
    WEIGHTS_FILE,
    LowrankSection,
    factorized_modules,
    head_is_untied,
    unique_state_dict,
)
from lowrank_lab.comparison import Comparison
from lowrank_lab.dtypes import normalize_dtype, torch_dtype
from lowrank_lab.errors import ArgumentTypeError, CheckpointError
from lowrank_lab.export.archive import check_export_target, staged_folder, zip_folder
from lowrank_lab.export.card import model_card
from lowrank_lab.models import CompressedModel
from lowrank_lab.plan import RankPlan
from lowrank_lab.progress import ProgressFn, report
from lowrank_lab.tasks import task_of_model
from lowrank_lab.version import __version__

LOADER_SOURCE = Path(__file__).with_name("load_lowrank.py")


def check_compressed(compressed: object) -> CompressedModel:
    """``compressed`` itself, or a clear error when it is not a :class:`CompressedModel`."""
    if not isinstance(compressed, CompressedModel):
        raise ArgumentTypeError(
            f"expected a CompressedModel (what lowrank_lab.compress returns), got {type(compressed).__name__}; "
            "compress a model first, or load a checkpoint with load_compressed"
        )
    check_exportable(compressed.model, "the compressed model")
    return compressed


def check_exportable(model: nn.Module, what: str) -> None:
    """Raise a clear error unless ``model`` is a plain transformers model (not wrapped)."""
    from transformers import PreTrainedModel  # heavy (seconds): imported on first use, not with lowrank_lab

    if not isinstance(model, PreTrainedModel):
        raise CheckpointError(
            f"{what} is a {type(model).__name__}, not a transformers model with a config; "
            "export a CompressedModel from lowrank_lab.compress (or merge a PEFT adapter first)"
        )


def section_for(compressed: CompressedModel, dtype: str) -> LowrankSection:
    """The ``lowrank`` section describing ``compressed`` as it will be written in ``dtype``."""
    model = compressed.model
    layers = factorized_modules(model)
    return LowrankSection(
        ranks={name: m.rank for name, m in layers.items()},
        bias=tuple(name for name, m in layers.items() if m.B.bias is not None),
        method=str(compressed.method),
        dtype=dtype,
        architecture=type(model).__name__,
        task=task_of_model(model),
        source=compressed.source.source,
        library_version=__version__,
        calibration=dict(compressed.calibration or {}),
    )


def hf_config_dict(model: nn.Module, dtype: str) -> dict:
    """The model's config as JSON-ready dict, in ``dtype``, with no stale ``lowrank`` section.

    A factorized output head no longer shares the input embedding, so the config says
    the two are untied (else transformers would tie them again on load).
    """
    config = json.loads(model.config.to_json_string(use_diff=False))
    config.pop(SECTION, None)
    config["dtype"] = dtype
    config["architectures"] = [type(model).__name__]
    if config.get("tie_word_embeddings") and head_is_untied(model):
        config["tie_word_embeddings"] = False
    return config


def checkpoint_tensors(model: nn.Module, dtype: str) -> dict[str, torch.Tensor]:
    """Every tensor to store (shared ones once), floating ones cast to ``dtype``, contiguous, on CPU."""
    target = torch_dtype(dtype)
    out = {}
    for name, tensor in unique_state_dict(model).items():
        t = tensor.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(target)
        out[name] = t.contiguous()
    return out


def write_compressed(
    compressed: CompressedModel,
    folder: Path,
    dtype: str,
    progress: ProgressFn | None = None,
    comparison: Comparison | None = None,
) -> LowrankSection:
    """Write the checkpoint's files into the existing, empty ``folder`` (no staging)."""
    check_exportable(compressed.model, "the compressed model")
    section = section_for(compressed, dtype)
    report(progress, 0, 3, "collecting tensors")
    tensors = checkpoint_tensors(compressed.model, dtype)
    report(progress, 1, 3, f"writing {WEIGHTS_FILE}")
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt", "lowrank_lab": FORMAT})
    config = hf_config_dict(compressed.model, dtype)
    config[SECTION] = section.to_dict()
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (folder / PLAN_FILE).write_text(RankPlan(section.ranks).to_json(model=section.source) + "\n", encoding="utf-8")
    shutil.copyfile(LOADER_SOURCE, folder / LOADER_FILE)
    report(progress, 2, 3, "writing the tokenizer and the model card")
    if compressed.tokenizer is not None:
        compressed.tokenizer.save_pretrained(str(folder))
    card = model_card(
        section,
        compressed.params,
        comparison,
        (folder / WEIGHTS_FILE).stat().st_size,
        compressed.tokenizer is not None,
    )
    (folder / CARD_FILE).write_text(card, encoding="utf-8")
    report(progress, 3, 3, "written")
    return section


def save_compressed(
    compressed: CompressedModel,
    folder: str | Path,
    dtype: str = "float32",
    zip: bool = False,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    comparison: Comparison | None = None,
) -> Path:
    """Save a compressed model as a checkpoint folder (and optionally a zip of it).

    The folder holds ``config.json`` (the original config plus a ``lowrank`` section),
    ``model.safetensors`` (dense tensors of untouched modules, ``<module>.A.weight`` r×in and
    ``<module>.B.weight`` out×r (+ ``<module>.B.bias``) per factorized module, tied tensors
    once), the tokenizer, ``rank_plan.json``, ``load_lowrank.py`` and a ``README.md`` model
    card. It is written into a temporary sibling folder and renamed into place, so a failed
    export leaves nothing half-written. ``compressed`` is not changed.

    Args:
        compressed: the compressed model (its ``.model`` holds the LowRankLinear layers).
        folder: the checkpoint folder to create.
        dtype: ``float32``, ``float16`` or ``bfloat16`` (``fp32``/``fp16``/``bf16`` too).
        zip: also write ``<folder>.zip`` and return its path.
        overwrite: replace a checkpoint folder (and zip) lowrank_lab wrote; never a folder
            holding other files (see :mod:`lowrank_lab.outputs`).
        progress: called as ``progress(done, total, message)``.
        comparison: what :func:`~lowrank_lab.comparison.compare` measured on ``compressed``;
            the model card shows its perplexities (else it says "not measured").

    Returns:
        The checkpoint folder, or the zip when ``zip`` is true.

    Raises:
        ArgumentTypeError: ``compressed`` is not a CompressedModel.
        CheckpointError: an unknown dtype or a model that is not a transformers model.
        OutputError: the folder or zip is taken, or is inside the source model (checked before writing).
    """
    check_compressed(compressed)
    protect = compressed.source.source
    folder = check_export_target(folder, overwrite, zip, protect)
    dtype = normalize_dtype(dtype, folder)
    with staged_folder(folder, overwrite, protect, writer="save_compressed") as tmp:
        write_compressed(compressed, tmp, dtype, progress, comparison)
    if zip:
        return zip_folder(folder, overwrite=overwrite, protect=protect)
    return folder
