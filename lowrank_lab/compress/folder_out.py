"""A compressed checkpoint written block by block: the files around the engine's shards.

The folder is the format of :func:`~lowrank_lab.export.save_compressed` (config with the
``lowrank`` section, rank plan, loader, card, tokenizer), its weights split into shards with an
index when they pass one shard. Everything goes into a staged temporary sibling that is renamed
into place at the end, so a failure mid-walk leaves nothing half-written.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from torch import nn

from lowrank_lab.checkpoint.format import CARD_FILE, CONFIG_FILE, LOADER_FILE, PLAN_FILE, SECTION
from lowrank_lab.compress.writer import DEFAULT_SHARD_BYTES, ShardWriter
from lowrank_lab.dtypes import torch_dtype
from lowrank_lab.export.card import model_card
from lowrank_lab.export.compressed import LOADER_SOURCE, hf_config_dict, section_for
from lowrank_lab.models import CompressedModel
from lowrank_lab.outputs import staged_folder
from lowrank_lab.plan import RankPlan


def write_streamed(
    folder: Path,
    dtype: str,
    overwrite: bool,
    protect,
    compress_into: Callable[[ShardWriter], tuple[nn.Module, CompressedModel]],
    tokenizer,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> Path:
    """Stage ``folder``, let ``compress_into(writer)`` stream the weights in, then write the rest.

    Args:
        folder: the checkpoint folder to create.
        dtype: the canonical dtype name of the stored tensors.
        overwrite: replace a checkpoint folder lowrank_lab wrote (never a folder of other files).
        protect: the source model's path: the output may not be, contain or lie inside it.
        compress_into: runs the walk into the given writer; returns the (meta) model and a
            :class:`CompressedModel` describing it (source, method, calibration, figures).
        tokenizer: saved beside the weights when not None.
        shard_bytes: target shard size.

    Returns:
        The folder.
    """
    with staged_folder(folder, overwrite, protect, writer="compress --stream") as tmp:
        writer = ShardWriter(tmp, torch_dtype(dtype), shard_bytes)
        model, described = compress_into(writer)
        files = writer.close()
        section = section_for(described, dtype)
        config = hf_config_dict(model, dtype)
        config[SECTION] = section.to_dict()
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / PLAN_FILE).write_text(RankPlan(section.ranks).to_json(model=section.source) + "\n", encoding="utf-8")
        shutil.copyfile(LOADER_SOURCE, tmp / LOADER_FILE)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        size = sum(f.stat().st_size for f in files)
        card = model_card(section, described.params, None, size, tokenizer is not None)
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
    return Path(folder)
