"""Spectra straight from safetensors files, one tensor at a time, without building the model.

For models too large to load here: memory stays bounded by the largest matrix (and its
float64 copy). With no module objects to inspect, what a tensor is comes from its name and the
config beside it: ``*.weight`` tensors of two dimensions are matrices, names with ``embed``,
``wte``/``wpe`` are embeddings, and GPT-2-style ``Conv1D`` weights (stored in×out) are reported
out×in.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from safetensors import safe_open

from lowrank_lab.checkpoint.safetensors_file import check_safetensors
from lowrank_lab.errors import ModelLoadError, NoWeightMatricesError
from lowrank_lab.matrices import WeightMatrix, split_name
from lowrank_lab.progress import ProgressFn, report
from lowrank_lab.spectra.cache import SpectrumCache, weight_digest
from lowrank_lab.spectra.engine import LayerSpectrum, spectrum_of
from lowrank_lab.spectra.svd import singular_values

_EMBEDDING_MARKS = ("embed", "wte", "wpe")
_CONV1D_MODEL_TYPES = ("gpt2",)
_CONV1D_KINDS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj", "attn.q_attn")


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


def _model_type(files: list[Path]) -> str:
    config = files[0].parent / "config.json"
    try:
        return json.loads(config.read_text()).get("model_type", "") if config.exists() else ""
    except (OSError, json.JSONDecodeError):
        return ""


def stream_matrices(path: str | Path) -> Iterator[WeightMatrix]:
    """Yield every 2-D ``*.weight`` tensor as a :class:`WeightMatrix`, reading one at a time."""
    files = safetensors_files(path)
    conv1d = _model_type(files) in _CONV1D_MODEL_TYPES
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                if not key.endswith(".weight") or len(f.get_slice(key).get_shape()) != 2:
                    continue
                name = key.removesuffix(".weight")
                layer, kind = split_name(name)
                tensor = f.get_tensor(key)
                is_embedding = any(mark in name.rsplit(".", 1)[-1] for mark in _EMBEDDING_MARKS)
                module_type = "Embedding" if is_embedding else "Linear"
                shape = tuple(tensor.shape)
                if conv1d and kind in _CONV1D_KINDS:
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
