"""Exporting a LoRA fine-tune: the adapter in PEFT's format, the adapter merged, the plan as rank_pattern.

A :class:`TrainedAdapter`'s ``.model`` is a PEFT model. Nothing here changes it: merging and
unloading work on a deep copy (PEFT's ``merge_and_unload`` rewrites the model it is given).
LoRA on a compressed model sits on the thin ``A``/``B`` Linears of each LowRankLinear, so
merging folds it into those factors and the ranks stay what they were.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from lowrank_lab import outputs
from lowrank_lab.checkpoint.format import factorized_modules
from lowrank_lab.comparison import Comparison
from lowrank_lab.dtypes import normalize_dtype, torch_dtype
from lowrank_lab.errors import ArgumentTypeError, CheckpointError
from lowrank_lab.export.archive import check_export_target, staged_folder, zip_folder
from lowrank_lab.export.compressed import write_compressed
from lowrank_lab.export.dense import write_hf_folder
from lowrank_lab.finetune.result import TrainedAdapter
from lowrank_lab.models import CompressedModel, ParamCounts, factorized_plan
from lowrank_lab.plan import RankPlan

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASE_FOLDER = "base"
RANK_PATTERN_FILE = "rank_pattern.json"


def check_adapter(adapter: object) -> TrainedAdapter:
    """``adapter`` itself, or a clear error when it is not a :class:`TrainedAdapter`."""
    if not isinstance(adapter, TrainedAdapter):
        raise ArgumentTypeError(
            f"expected a TrainedAdapter (what lowrank_lab.finetune returns), got {type(adapter).__name__}; "
            "fine-tune a model first"
        )
    return adapter


def adapter_sources(adapter: TrainedAdapter) -> tuple[str, ...]:
    """The model sources an export of ``adapter`` must not write into."""
    return (adapter.source.source,) if adapter.source is not None else ()


def peft_model_of(adapter: TrainedAdapter):
    """The adapter's PEFT model, or a clear error when it is something else."""
    from peft import PeftModel  # heavy (seconds): imported on first use, not with lowrank_lab

    check_adapter(adapter)
    if not isinstance(adapter.model, PeftModel):
        raise CheckpointError(
            f"the adapter's model is a {type(adapter.model).__name__}, not a PEFT model; "
            "train it with lowrank_lab's LoRA fine-tune (or peft.get_peft_model) before exporting"
        )
    return adapter.model


def base_model_of(adapter: TrainedAdapter) -> nn.Module:
    """A copy of the model the adapter sits on, with the LoRA layers removed (not merged)."""
    return copy.deepcopy(peft_model_of(adapter)).unload()


def merge_adapter(adapter: TrainedAdapter) -> nn.Module:
    """A copy of the base model with the adapter merged in (``merge_and_unload`` on a deep copy)."""
    return copy.deepcopy(peft_model_of(adapter)).merge_and_unload()


def _compressed_like(adapter: TrainedAdapter, model: nn.Module, params: ParamCounts | None = None) -> CompressedModel:
    source = adapter.compressed
    return CompressedModel(
        model=model,
        tokenizer=adapter.tokenizer,
        source=adapter.source,
        plan=factorized_plan(model),
        method=source.method if source is not None else "unknown",
        calibration=dict(source.calibration) if source is not None else {},
        params=params,
    )


def merged_compressed(adapter: TrainedAdapter) -> CompressedModel:
    """The adapter merged into its compressed base, as a CompressedModel with the same ranks.

    Its parameter counts are read off the merged model; a comparison of the base is not carried
    over, since training changed the model (compare the merged model to measure it).

    Args:
        adapter: an adapter trained on a compressed model (``base == "compressed"``).

    Raises:
        CheckpointError: the adapter was trained on the original model.
    """
    merged = merge_adapter(adapter)
    if not factorized_modules(merged):
        raise CheckpointError(
            "this adapter was trained on the original (dense) model, so merging it gives a dense model; "
            "export it with save_merged, which writes a plain Hugging Face folder"
        )
    return _compressed_like(adapter, merged)


def _recast_safetensors(path: Path, dtype: str) -> None:
    tensors = {k: (v.to(torch_dtype(dtype)) if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})


def _adapter_card(adapter: TrainedAdapter, config: dict, dtype: str) -> str:
    on_compressed = adapter.base == "compressed"
    base = "the compressed checkpoint in `base/`" if on_compressed else f"the original model `{adapter.source.source}`"
    load_base = (
        'from lowrank_lab import load_compressed\nbase = load_compressed("path/to/this/folder/base")'
        if on_compressed
        else f'from lowrank_lab import load_model\nbase = load_model("{adapter.source.source}").copy()'
    )
    targets = config.get("target_modules")
    targets = ", ".join(sorted(targets)) if isinstance(targets, list) else targets
    return f"""# LoRA adapter for {adapter.source.source} ({"compressed" if on_compressed else "original"} base, {dtype})

A PEFT LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`) trained by lowrank_lab on
{base}. Rank r = {config.get("r")}, alpha = {config.get("lora_alpha")}, targets: {targets}.

```python
from peft import PeftModel
{load_base}
model = PeftModel.from_pretrained(base, "path/to/this/folder")
```
"""


def write_adapter(adapter: TrainedAdapter, folder: Path, dtype: str, comparison: Comparison | None = None) -> None:
    """Write the PEFT adapter files (and, for a compressed base, that base in ``base/``) into ``folder``.

    ``comparison`` is what was measured on the compressed base, for the card in ``base/``.
    """
    peft_model = peft_model_of(adapter)
    peft_model.save_pretrained(str(folder))
    if not (folder / ADAPTER_WEIGHTS).exists():
        raise CheckpointError(
            f"PEFT wrote no {ADAPTER_WEIGHTS} into {folder} (a named, non-default adapter?); "
            "export an adapter trained with lowrank_lab's LoRA fine-tune"
        )
    if dtype != "float32":
        _recast_safetensors(folder / ADAPTER_WEIGHTS, dtype)
    config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    if not config.get("base_model_name_or_path"):
        config["base_model_name_or_path"] = BASE_FOLDER if adapter.base == "compressed" else adapter.source.source
        (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if adapter.base == "compressed":
        (folder / BASE_FOLDER).mkdir()
        base = base_model_of(adapter)
        params = adapter.compressed.params if adapter.compressed is not None else None
        write_compressed(_compressed_like(adapter, base, params), folder / BASE_FOLDER, dtype, comparison=comparison)
    (folder / "README.md").write_text(_adapter_card(adapter, config, dtype), encoding="utf-8")


def save_adapter(
    adapter: TrainedAdapter,
    folder: str | Path,
    dtype: str = "float32",
    zip: bool = False,
    overwrite: bool = False,
    comparison: Comparison | None = None,
) -> Path:
    """Save a LoRA adapter in PEFT's format, loadable with ``PeftModel.from_pretrained``.

    The folder holds ``adapter_config.json``, ``adapter_model.safetensors`` and a README. An
    adapter trained on a compressed model needs that model to load onto, so its compressed
    checkpoint is written into ``base/`` as well.

    Args:
        adapter: the trained adapter (not changed).
        folder: the folder to create (written atomically).
        dtype: dtype of the stored adapter (and base) tensors.
        zip: also write ``<folder>.zip`` and return its path.
        overwrite: replace an export folder (and zip) lowrank_lab wrote.
        comparison: what :func:`~lowrank_lab.comparison.compare` measured on the compressed
            base, for the model card in ``base/``.

    Raises:
        ArgumentTypeError: ``adapter`` is not a TrainedAdapter.
        CheckpointError: an unknown dtype or a model that is not a PEFT model.
        OutputError: the folder or zip is taken, or is inside the source model (checked before writing).
    """
    peft_model_of(adapter)
    protect = adapter_sources(adapter)
    folder = check_export_target(folder, overwrite, zip, protect)
    dtype = normalize_dtype(dtype, folder)
    with staged_folder(folder, overwrite, protect, writer="save_adapter") as tmp:
        write_adapter(adapter, tmp, dtype, comparison)
    return zip_folder(folder, overwrite=overwrite, protect=protect) if zip else folder


def write_merged(adapter: TrainedAdapter, folder: Path, dtype: str, comparison: Comparison | None = None) -> None:
    """Write the merged model into ``folder``: a compressed checkpoint, or a plain HF folder for a dense base."""
    if adapter.base == "compressed":
        write_compressed(merged_compressed(adapter), folder, dtype, comparison=comparison)
    else:
        write_hf_folder(merge_adapter(adapter), adapter.tokenizer, folder, dtype)


def save_merged(
    adapter: TrainedAdapter,
    folder: str | Path,
    dtype: str = "float32",
    zip: bool = False,
    overwrite: bool = False,
    comparison: Comparison | None = None,
) -> Path:
    """Merge the adapter into its base and save the result.

    On a compressed base the result is a compressed checkpoint with the same ranks (loads with
    :func:`load_compressed`); on the original model it is a plain Hugging Face folder.

    Args:
        adapter: the trained adapter (not changed).
        folder: the folder to create (written atomically).
        dtype: ``float32``, ``float16`` or ``bfloat16``.
        zip: also write ``<folder>.zip`` and return its path.
        overwrite: replace an export folder (and zip) lowrank_lab wrote.
        comparison: what :func:`~lowrank_lab.comparison.compare` measured on the merged
            model (``merged_compressed(adapter)``), for the model card of a compressed base.

    Raises:
        ArgumentTypeError: ``adapter`` is not a TrainedAdapter.
        OutputError: the folder or zip is taken, or is inside the source model (checked before writing).
    """
    peft_model_of(adapter)
    protect = adapter_sources(adapter)
    folder = check_export_target(folder, overwrite, zip, protect)
    dtype = normalize_dtype(dtype, folder)
    with staged_folder(folder, overwrite, protect, writer="save_merged") as tmp:
        write_merged(adapter, tmp, dtype, comparison)
    return zip_folder(folder, overwrite=overwrite, protect=protect) if zip else folder


def rank_pattern(plan: RankPlan) -> dict:
    """The plan as keyword arguments of ``peft.LoraConfig``: ``r``, ``target_modules``, ``rank_pattern``.

    Every planned module is a target and gets its own rank in ``rank_pattern`` (full module
    names, which PEFT matches exactly); ``r`` is the most common rank.

    Raises:
        ArgumentTypeError: ``plan`` is not a RankPlan.
        CheckpointError: the plan is empty.
    """
    if not isinstance(plan, RankPlan):
        raise ArgumentTypeError(
            f"expected a RankPlan, got {type(plan).__name__}; build one with RankPlan({{name: rank}})"
        )
    ranks = plan.as_dict()
    if not ranks:
        raise CheckpointError("the rank plan is empty, so there is no rank_pattern to write; set some ranks first")
    common = Counter(ranks.values()).most_common(1)[0][0]
    return {"r": common, "target_modules": sorted(ranks), "rank_pattern": ranks}


def save_rank_pattern(plan: RankPlan, path: str | Path, overwrite: bool = False, protect=()) -> Path:
    """Write :func:`rank_pattern` as JSON to ``path``; ``LoraConfig(**json.load(f))`` reads it.

    The file is written to a temporary sibling and renamed into place.

    Args:
        plan: the rank plan.
        path: the JSON file to write.
        overwrite: replace an existing file (a symbolic link is never written through).
        protect: model sources the file must not lie inside.

    Raises:
        CheckpointError: the plan is empty.
        OutputError: ``path`` exists (without ``overwrite``), is a link or a folder, or cannot be written.
    """
    outputs.check_output_file(path, overwrite, protect)
    text = json.dumps(rank_pattern(plan), indent=1) + "\n"
    return outputs.write_file(path, text, overwrite, protect)
