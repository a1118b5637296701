"""Spectra straight from safetensors files, one tensor at a time, without building the model.

For models too large to load here: memory stays bounded by the largest matrix (and its
float64 copy). ``*.weight`` tensors of two dimensions are matrices. Which of them are
embeddings, and which are GPT-2-style ``Conv1D`` weights (stored in×out, reported out×in), comes
from the architecture in the ``config.json`` beside the files, built on the meta device (no
memory, no weights, no remote code); without a config transformers can build, every matrix is
a Linear and names with ``embed``, ``wte`` or ``wpe`` are embeddings.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from lowrank_lab.checkpoint.safetensors_file import check_safetensors
from lowrank_lab.errors import ModelLoadError, NoWeightMatricesError
from lowrank_lab.layers import is_conv1d
from lowrank_lab.matrices import WeightMatrix, split_name
from lowrank_lab.progress import ProgressFn, report
from lowrank_lab.spectra.cache import SpectrumCache, weight_digest
from lowrank_lab.spectra.engine import LayerSpectrum, check_finite, spectrum_of
from lowrank_lab.spectra.svd import singular_values
from lowrank_lab.tasks import auto_model_class, task_of_config

EMBEDDING_MARKS = ("embed", "wte", "wpe")  # only when the architecture cannot be built


def safetensors_files(path: str | Path) -> list[Path]:
    """The safetensors files of a folder (all shards, sorted), or the one file given.

    Raises:
        ModelLoadError: nothing to read, naming the path.
    """
    path = Path(path).expanduser()
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files or not all(f.exists() and f.suffix == ".safetensors" for f in files):
        raise ModelLoadError(f"{path} holds no .safetensors file to stream; pass a model folder or a .safetensors file")
    for f in files:
        check_safetensors(f)
    return files


def architecture_layers(folder: Path) -> tuple[frozenset[str], frozenset[str]] | None:
    """(kinds stored as Conv1D, last name parts of embeddings) of the architecture in ``folder``'s config.

    None when there is no config.json, or transformers cannot build its architecture without
    running remote code.
    """
    if not (folder / "config.json").exists():
        return None
    from transformers import AutoConfig  # heavy: imported on first use, not with lowrank_lab

    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        with torch.device("meta"):
            model = auto_model_class(task_of_config(config)).from_config(config)
    except Exception:  # an unknown or remote-code architecture: fall back to the names
        return None
    modules = list(model.named_modules())
    conv1d = frozenset(split_name(name)[1] for name, m in modules if is_conv1d(m))
    embeddings = frozenset(name.rsplit(".", 1)[-1] for name, m in modules if isinstance(m, nn.Embedding))
    return conv1d, embeddings


def stream_matrices(path: str | Path) -> Iterator[WeightMatrix]:
    """Yield every 2-D ``*.weight`` tensor as a :class:`WeightMatrix`, reading one at a time."""
    files = safetensors_files(path)
    layers = architecture_layers(files[0].parent)
    conv1d, embeddings = layers if layers is not None else (frozenset(), None)
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                if not key.endswith(".weight") or len(f.get_slice(key).get_shape()) != 2:
                    continue
                name = key.removesuffix(".weight")
                layer, kind = split_name(name)
                tensor = f.get_tensor(key)
                last = name.rsplit(".", 1)[-1]
                is_embedding = last in embeddings if embeddings is not None else any(m in last for m in EMBEDDING_MARKS)
                module_type = "Embedding" if is_embedding else "Linear"
                shape = tuple(tensor.shape)
                if kind in conv1d:
                    module_type, shape = "Conv1D", shape[::-1]
                yield WeightMatrix(name, kind, layer, shape, module_type, is_embedding, (), tensor)


def stream_spectra(
    path: str | Path,
    *,
    progress: ProgressFn | None = None,
    cache: SpectrumCache | bool = True,
    include_embeddings: bool = True,
) -> list[LayerSpectrum]:
    """Spectra of every weight matrix in safetensors files, one tensor in memory at a time.

    Args:
        path: a model folder (all ``*.safetensors`` shards) or one ``.safetensors`` file.
        progress: called as ``progress(done, 0, name)`` after each matrix (the total is unknown
            until the files are read, so it is passed as 0).
        cache: as in :func:`~lowrank_lab.spectra.compute_spectra`.
        include_embeddings: analyse embedding matrices too.

    Raises:
        ModelLoadError: no readable safetensors file.
        NoWeightMatricesError: the files hold no 2-D weight.
    """
    store = SpectrumCache() if cache is True else (cache or None)
    out = []
    for matrix in stream_matrices(path):
        if matrix.is_embedding and not include_embeddings:
            continue
        check_finite(matrix)
        w = matrix.matrix()
        digest = weight_digest(w) if store is not None else ""
        s = store.get(digest) if store is not None else None
        if s is None or s.shape != (matrix.full_rank,):
            s = singular_values(w)
            if store is not None:
                store.put(digest, s)
        out.append(spectrum_of(matrix, s, digest))
        report(progress, len(out), 0, matrix.name)
    if not out:
        raise NoWeightMatricesError(f"{path} holds no 2-D weight tensor, so there is nothing to analyse")
    return out
