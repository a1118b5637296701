"""The dense export: factors multiplied back into plain layers, saved as a Hugging Face folder.

The result loads with ``AutoModelForCausalLM.from_pretrained`` (or ``AutoModel`` for an
encoder) and needs nothing from lowrank_lab. It is as large as the original model: the
point is compatibility, not size.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from lowrank_lab.checkpoint.format import SECTION, factorized_modules, head_is_untied
from lowrank_lab.dtypes import normalize_dtype, torch_dtype
from lowrank_lab.export.archive import check_export_target, staged_folder, zip_folder
from lowrank_lab.export.compressed import check_compressed, check_exportable
from lowrank_lab.layers import dense_layer
from lowrank_lab.lowrank import set_submodule
from lowrank_lab.models import CompressedModel


def _original_types(model: nn.Module) -> dict[str, nn.Module]:
    """The modules the architecture has at each factorized name, built on the meta device (no memory)."""
    config = copy.deepcopy(model.config)
    if hasattr(config, SECTION):
        delattr(config, SECTION)
    with torch.device("meta"):
        skeleton = type(model)(config)
    return {name: skeleton.get_submodule(name) for name in factorized_modules(model)}


def densify(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every LowRankLinear replaced by the dense layer W = B·A.

    The replacement has the architecture's own type at that name (``nn.Linear``, or GPT-2's
    ``Conv1D`` with its in×out weight), so the state dict has the upstream names and shapes.
    ``model`` is not changed.
    """
    check_exportable(model, "the model")
    originals = _original_types(model)
    dense = copy.deepcopy(model)
    with torch.no_grad():
        for name, low in factorized_modules(dense).items():
            layer = dense_layer(originals[name], low.dense_weight(), low.B.bias)  # W = B·A, (out, in)
            set_submodule(dense, name, layer)
    if hasattr(dense.config, SECTION):
        delattr(dense.config, SECTION)
    return dense


def write_hf_folder(model: nn.Module, tokenizer, folder: Path, dtype: str) -> None:
    """``save_pretrained`` of ``model`` into ``folder`` in ``dtype`` (casts ``model`` in place)."""
    model.to(torch_dtype(dtype))
    if getattr(model.config, "tie_word_embeddings", False) and head_is_untied(model):
        # A head that was factorized no longer shares the embedding; a tied config would
        # make from_pretrained overwrite it with the embedding.
        model.config.tie_word_embeddings = False
    model.save_pretrained(str(folder))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))


def dense_card(source: str, n_factorized: int, dtype: str) -> str:
    return f"""# {source} — dense export of a lowrank_lab compressed model ({dtype})

The {n_factorized} factorized layers were multiplied back (W = B·A), so this is a plain
Hugging Face folder of the original architecture; its outputs equal the compressed model's
up to rounding. Load it with

```python
from transformers import AutoModelForCausalLM  # AutoModel for an encoder
model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")
```
"""


def write_dense(compressed: CompressedModel, folder: Path, dtype: str) -> None:
    """Write the dense export of ``compressed`` into the existing, empty ``folder``."""
    write_hf_folder(densify(compressed.model), compressed.tokenizer, folder, dtype)
    card = dense_card(compressed.source.source, len(factorized_modules(compressed.model)), dtype)
    (folder / "README.md").write_text(card, encoding="utf-8")


def save_dense(
    compressed: CompressedModel, folder: str | Path, dtype: str = "float32", zip: bool = False, overwrite: bool = False
) -> Path:
    """Save ``compressed`` with its factors multiplied back, as a plain Hugging Face folder.

    Args:
        compressed: the compressed model (not changed).
        folder: the folder to create (written atomically).
        dtype: ``float32``, ``float16`` or ``bfloat16``.
        zip: also write ``<folder>.zip`` and return its path.
        overwrite: replace an export folder (and zip) lowrank_lab wrote.

    Returns:
        The folder, or the zip when ``zip`` is true.

    Raises:
        ArgumentTypeError: ``compressed`` is not a CompressedModel.
        CheckpointError: an unknown dtype or a model that is not a transformers model.
        OutputError: the folder or zip is taken, or is inside the source model (checked before writing).
    """
    check_compressed(compressed)
    protect = compressed.source.source
    folder = check_export_target(folder, overwrite, zip, protect)
    dtype = normalize_dtype(dtype, folder)
    with staged_folder(folder, overwrite, protect, writer="save_dense") as tmp:
        write_dense(compressed, tmp, dtype)
    return zip_folder(folder, overwrite=overwrite, protect=protect) if zip else folder
