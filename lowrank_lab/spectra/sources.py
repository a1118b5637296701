"""One model's weights by name, read one tensor at a time: from a module in memory or from safetensors.

Comparing two models walks their matrices pair by pair, so neither side hands out more than
the tensor asked for. A :class:`ModuleSource` reads a model already in memory (a factorized
layer's matrix is its product B·A, so a compressed checkpoint compares with its dense
original); a :class:`SafetensorsSource` reads a folder's shards lazily, so two models on disk
are compared with one pair of matrices in memory at a time.

Every source lists its matrices (name, kind, layer, shape out×in, module type) as
:class:`~lowrank_lab.matrices.WeightMatrix` entries without their tensors, its other
parameters (norms, biases: ``"module.param"`` → shape), and the facts that must agree for a
comparison (architecture, model type, vocabulary size).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from lowrank_lab.errors import ModelLoadError
from lowrank_lab.lowrank import LowRankLinear
from lowrank_lab.matrices import WeightMatrix, split_name, weight_matrices
from lowrank_lab.models import BUILTIN_MODELS, builtin, load_model
from lowrank_lab.models.tokenizer import load_tokenizer
from lowrank_lab.spectra.stream import EMBEDDING_MARKS, architecture_layers, safetensors_files


@dataclass(frozen=True)
class ModelFacts:
    """What must agree between two models before their weights can be compared.

    Attributes:
        architecture: the config's first ``architectures`` entry (or the module's class name).
        model_type: the config's ``model_type`` ("" when unknown).
        vocab_size: the config's ``vocab_size`` (None when it has none).
    """

    architecture: str
    model_type: str
    vocab_size: int | None


def _facts_of_config(config: dict, fallback: str) -> ModelFacts:
    archs = config.get("architectures") or [fallback]
    vocab = config.get("vocab_size")
    return ModelFacts(str(archs[0]), str(config.get("model_type") or ""), int(vocab) if vocab is not None else None)


class WeightSource:
    """The interface both sources share (see the module docstring)."""

    label: str
    facts: ModelFacts

    def matrices(self) -> list[WeightMatrix]:
        """Every matrix, in model order, without its tensor (``weight`` is None)."""
        raise NotImplementedError

    def matrix(self, name: str) -> torch.Tensor:
        """The matrix ``name`` as an out×in tensor (read now; a view where possible)."""
        raise NotImplementedError

    def vectors(self) -> dict[str, tuple[int, ...]]:
        """Every parameter that is not a matrix (``"module.param"`` → shape), in model order."""
        raise NotImplementedError

    def vector(self, name: str) -> torch.Tensor:
        raise NotImplementedError

    def vocabulary(self) -> dict[str, int] | None:
        """The tokenizer's vocabulary (token → id), or None when the source has no tokenizer."""
        raise NotImplementedError


class ModuleSource(WeightSource):
    """The weights of a model in memory; nothing is copied until a tensor is asked for.

    Args:
        model: the model (not changed).
        tokenizer: its tokenizer, or None.
        label: how messages name it (e.g. the model's source).
    """

    def __init__(self, model: nn.Module, tokenizer=None, label: str = "model"):
        self.model, self.tokenizer, self.label = model, tokenizer, label
        config = getattr(model, "config", None)
        self.facts = _facts_of_config(config.to_dict() if config is not None else {}, type(model).__name__)
        self._entries, self._tensors, self._vectors = self._walk(model)

    @staticmethod
    def _walk(model: nn.Module):
        lowrank = {name: m for name, m in model.named_modules() if isinstance(m, LowRankLinear)}
        inner = {f"{name}.{part}" for name in lowrank for part in ("A", "B")}
        entries, tensors = [], {}
        for wm in weight_matrices(model):
            owner = wm.name.rpartition(".")[0]
            if wm.name in inner:
                if wm.name.endswith(".A"):  # the factorized layer stands where its A is listed
                    layer, kind = split_name(owner)
                    module = lowrank[owner]
                    shape = (module.out_features, module.in_features)
                    entries.append(WeightMatrix(owner, kind, layer, shape, "Linear", False))
                    tensors[owner] = module
                continue
            entries.append(replace(wm, weight=None))
            tensors[wm.name] = wm
        taken = {id(p) for m in lowrank.values() for p in (m.A.weight, m.B.weight)}
        taken |= {id(wm.weight) for wm in tensors.values() if isinstance(wm, WeightMatrix)}
        vectors = {}
        for name, p in model.named_parameters():
            if id(p) in taken:
                continue
            owner, _, param = name.rpartition(".")
            if owner.endswith(".B") and owner[:-2] in lowrank:
                name = f"{owner[:-2]}.{param}"  # a factorized layer's bias lives on its B
            vectors[name] = p
        return entries, tensors, vectors

    def matrices(self) -> list[WeightMatrix]:
        return list(self._entries)

    def matrix(self, name: str) -> torch.Tensor:
        held = self._tensors[name]
        with torch.no_grad():
            return held.dense_weight() if isinstance(held, LowRankLinear) else held.matrix()

    def vectors(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(p.shape) for name, p in self._vectors.items()}

    def vector(self, name: str) -> torch.Tensor:
        return self._vectors[name].detach()

    def vocabulary(self) -> dict[str, int] | None:
        return _vocab_of(self.tokenizer)


def _vocab_of(tokenizer) -> dict[str, int] | None:
    if tokenizer is None or not hasattr(tokenizer, "get_vocab"):
        return None
    return dict(tokenizer.get_vocab())


class SafetensorsSource(WeightSource):
    """The weights in a folder's safetensors shards (or one file), read one tensor at a time.

    What a tensor is follows :mod:`lowrank_lab.spectra.stream`: 2-D ``*.weight`` tensors are
    matrices; which are embeddings and which are GPT-2 ``Conv1D`` weights (stored in×out, read
    out×in) comes from the architecture in the ``config.json`` beside the files (built on the
    meta device), or from the names when it cannot be built.

    Raises:
        ModelLoadError: no readable safetensors file, or a lowrank_lab compressed checkpoint
            (load that with :class:`ModuleSource`, which multiplies its factors).
    """

    def __init__(self, path: str | Path, label: str | None = None):
        path = Path(path).expanduser()
        folder = path if path.is_dir() else path.parent
        config = _read_config(folder)
        if "lowrank" in config:
            raise ModelLoadError(
                f"{folder} is a compressed checkpoint; load it (load_model) to compare its B·A products"
            )
        files = safetensors_files(path)
        self.folder, self.label = folder, label or str(path)
        self.facts = _facts_of_config(config, "unknown")
        layers = architecture_layers(folder)
        self._conv1d, self._embeddings = layers if layers is not None else (frozenset(), None)
        self._where: dict[str, tuple[Path, str, bool]] = {}  # name → (file, key, stored in×out)
        self._entries, self._vectors = [], {}
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                for key in sorted(f.keys(), key=_natural):
                    self._add(file, key, tuple(f.get_slice(key).get_shape()))

    def _add(self, file: Path, key: str, shape: tuple[int, ...]) -> None:
        if not (key.endswith(".weight") and len(shape) == 2):
            self._vectors[key] = shape
            self._where[key] = (file, key, False)
            return
        name = key.removesuffix(".weight")
        layer, kind = split_name(name)
        last = name.rsplit(".", 1)[-1]
        marks = self._embeddings
        is_embedding = last in marks if marks is not None else any(m in last for m in EMBEDDING_MARKS)
        module_type, transposed = ("Embedding" if is_embedding else "Linear"), False
        if kind in self._conv1d:
            module_type, shape, transposed = "Conv1D", shape[::-1], True
        self._entries.append(WeightMatrix(name, kind, layer, shape, module_type, is_embedding))
        self._where[name] = (file, key, transposed)

    def _read(self, name: str) -> torch.Tensor:
        file, key, transposed = self._where[name]
        with safe_open(str(file), framework="pt") as f:
            t = f.get_tensor(key)
        return t.t() if transposed else t

    def matrices(self) -> list[WeightMatrix]:
        return list(self._entries)

    def matrix(self, name: str) -> torch.Tensor:
        return self._read(name)

    def vectors(self) -> dict[str, tuple[int, ...]]:
        return dict(self._vectors)

    def vector(self, name: str) -> torch.Tensor:
        return self._read(name)

    def vocabulary(self) -> dict[str, int] | None:
        return _vocab_of(load_tokenizer(self.folder))  # None for a folder without a tokenizer


def _natural(key: str) -> list:
    # Files list tensors alphabetically; layer 10 should still come after layer 2.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path} is not valid JSON ({err}); restore it from the original model") from None
    return data if isinstance(data, dict) else {}


def open_source(source: str, progress=None) -> WeightSource:
    """The weights of a model named as ``load_model`` takes it, streamed from disk where they are there.

    A built-in model or a Hugging Face folder of safetensors is read lazily, one tensor at a
    time (:class:`SafetensorsSource`); a tiny test model, a hub id, a ``.bin`` folder or a
    compressed checkpoint (whose matrices are products B·A) is loaded (:class:`ModuleSource`).

    Raises:
        ModelLoadError: the model cannot be found or read.
    """
    if source == "smollm2-135m":
        return SafetensorsSource(builtin.smollm2_folder(progress), label=source)
    if source in BUILTIN_MODELS:
        return SafetensorsSource(builtin.minilm_folder(), label=source)
    path = Path(source).expanduser()
    folder = path if path.is_dir() else path.parent
    on_disk = (path.is_dir() and any(path.glob("*.safetensors"))) or path.suffix == ".safetensors"
    if path.exists() and on_disk and "lowrank" not in _read_config(folder):
        return SafetensorsSource(path, label=source)
    loaded = load_model(source, progress=progress)
    return ModuleSource(loaded.model, loaded.tokenizer, label=source)
