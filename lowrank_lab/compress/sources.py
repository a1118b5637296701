"""Where the engine reads a model's weights from: a loaded model, or a folder's safetensors shards.

Both hand out one stored tensor at a time by its state-dict name, so the engine holds one
block in memory whatever the source. The model itself is a skeleton: built from the config
with its parameters on the meta device (no memory) and its buffers real (rotary frequencies,
position ids are computed by the model's own constructor), then filled module by module.
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import torch
from torch import nn

from lowrank_lab.allocator import page_out
from lowrank_lab.checkpoint.format import INDEX_FILE, SAFETENSORS_DTYPES, WEIGHTS_FILE, alias_map
from lowrank_lab.checkpoint.safetensors_file import check_safetensors
from lowrank_lab.errors import ModelLoadError, NonFiniteError
from lowrank_lab.models import LoadedModel


class MemorySource:
    """Weights of a loaded model (read, never changed; tensors are copied when materialised).

    Args:
        loaded: the shared model.
    """

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.config = loaded.config
        self.architecture = type(loaded.model)
        self._state = loaded.model.state_dict(keep_vars=True)
        self.dtype = next(loaded.model.parameters()).dtype

    def names(self) -> set[str]:
        return set(self._state)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._state[name].shape)

    def tensor(self, name: str) -> torch.Tensor:
        """The stored tensor itself (not a copy): callers copy before changing it."""
        return self._state[name].detach()

    def done(self, name: str) -> None:
        """The engine holds its copy of ``name``: where the model is a mapped file, its pages go
        back to the kernel (:func:`~lowrank_lab.allocator.page_out`; the values never change), so
        a walk keeps one block of the shared model resident, not every block it has read."""
        page_out(self._state[name])


class FolderSource:
    """Weights of a Hugging Face folder, read tensor by tensor from its safetensors shards.

    A folder holds ``model.safetensors``, or shards listed by ``model.safetensors.index.json``.
    Tensors are read in the dtype they are stored in (bf16 stays bf16 until the engine casts
    one block to float32).

    Args:
        folder: the model folder (with config.json).

    Raises:
        ModelLoadError: no config, no safetensors weights, a broken index, or a corrupt shard.
    """

    def __init__(self, folder: Path):
        from safetensors import safe_open
        from transformers import AutoConfig

        self.folder = Path(folder)
        if not (self.folder / "config.json").exists():
            raise ModelLoadError(f"{self.folder} has no config.json, so it is not a Hugging Face model folder")
        self.config = AutoConfig.from_pretrained(str(self.folder), local_files_only=True, trust_remote_code=False)
        self.architecture = _architecture(self.config, self.folder)
        files = self._weight_files()
        self._where: dict[str, Path] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        dtypes = set()
        for path in files:
            check_safetensors(path)
            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():
                    sl = f.get_slice(name)
                    self._where[name] = path
                    self._shapes[name] = tuple(sl.get_shape())
                    dtypes.add(sl.get_dtype())
        floating = [d for d in dtypes if d in _SAFETENSORS_DTYPES]
        self.dtype = _SAFETENSORS_DTYPES[sorted(floating)[0]] if floating else torch.float32

    def _weight_files(self) -> list[Path]:
        index = self.folder / INDEX_FILE
        if index.exists():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                files = sorted({self.folder / str(v) for v in weight_map.values()})
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                raise ModelLoadError(
                    f"{index} is not a valid safetensors index ({err}); copy the model again"
                ) from None
            missing = [p.name for p in files if not p.exists() or p.parent != self.folder]
            if missing:
                raise ModelLoadError(f"{index} lists shards that are not in the folder: {', '.join(missing[:3])}")
            return files
        if (self.folder / WEIGHTS_FILE).exists():
            return [self.folder / WEIGHTS_FILE]
        files = sorted(self.folder.glob("*.safetensors"))
        if not files:
            raise ModelLoadError(
                f"{self.folder} has no safetensors weights; block-by-block compression reads only safetensors "
                "(convert pytorch_model.bin with transformers' save_pretrained(safe_serialization=True))"
            )
        return files

    def names(self) -> set[str]:
        return set(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def tensor(self, name: str) -> torch.Tensor:
        """Read one tensor from its shard, in its stored dtype; the shard is closed again.

        The shard is opened for each read: an open handle keeps its file mapped, and every page
        read through it stays in this process's resident memory — a 7B run from a folder grew by
        the size of each block it read (peak 9.9 GiB with 8 blocks against 8.0 GiB with 2). The
        tensor itself may still be backed by its region of the file until it is dropped
        (:func:`materialize` copies it into the skeleton and drops it).
        """
        from safetensors import safe_open

        with safe_open(str(self._where[name]), framework="pt") as handle:
            return handle.get_tensor(name)

    def done(self, name: str) -> None:
        """Nothing to hand back: each read opened and closed its shard (see :meth:`tensor`)."""


# The floating dtypes a folder's weights are read in, by their safetensors names.
_SAFETENSORS_DTYPES = {SAFETENSORS_DTYPES[d]: d for d in (torch.bfloat16, torch.float16, torch.float32)}


def _architecture(config, folder: Path):
    import transformers

    archs = getattr(config, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise ModelLoadError(
            f"{folder / 'config.json'} names architecture {archs[0] if archs else None!r}, which is not a "
            "transformers model class; block-by-block compression never runs a model's own code"
        )
    return cls


def skeleton(source) -> nn.Module:
    """The model built from the source's config: parameters on the meta device, buffers real.

    The skeleton remembers which names share one tensor (a head tied to the embedding), read
    while everything is still on the meta device, so ties survive filling it piece by piece.
    """
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = source.architecture(source.config)
    if hasattr(model, "tie_weights"):
        model.tie_weights()  # the constructor leaves ties to from_pretrained; the walk needs them now
    model.eval()
    model.requires_grad_(False)
    _ALIASES[model] = alias_map(model.state_dict(keep_vars=True))
    return model


_ALIASES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def aliases_of(model: nn.Module) -> dict[str, str]:
    """Each state-dict name → the first name holding the same tensor, as the skeleton was built."""
    if model not in _ALIASES:
        _ALIASES[model] = alias_map(model.state_dict(keep_vars=True))
    return _ALIASES[model]


def check_names(model: nn.Module, source) -> None:
    """Check the source stores every tensor the skeleton needs, with the same shapes.

    Raises:
        ModelLoadError: a tensor is missing or has another shape.
    """
    aliases = aliases_of(model)
    state = model.state_dict(keep_vars=True)
    have = source.names()
    missing = [n for n, first in aliases.items() if n == first and _stored_name(n, aliases, have) is None]
    if missing:
        raise ModelLoadError(
            f"the weights lack {len(missing)} tensor(s) the architecture needs: {', '.join(missing[:5])}; "
            "the folder's safetensors do not match its config.json"
        )
    wrong = [n for n, t in state.items() if n in have and tuple(t.shape) != source.shape(n)]
    if wrong:
        n = wrong[0]
        raise ModelLoadError(
            f"{n} is stored with shape {list(source.shape(n))} but the config needs {list(state[n].shape)}"
        )


def materialize(model: nn.Module, prefix: str, source, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Fill the submodule ``prefix`` ("" for the whole model) with the source's tensors, in ``dtype``.

    The tensors are copies (a loaded model's own tensors are never handed out to be changed);
    each one read is reported to ``source.done`` once copied.
    A tied tensor is filled once, under its first name, and every other name points at it.
    """
    aliases = aliases_of(model)
    module = model.get_submodule(prefix) if prefix else model
    have = source.names()
    head = f"{prefix}." if prefix else ""
    for rel in module.state_dict(keep_vars=True):
        first = aliases.get(head + rel, head + rel)
        owner_name, _, attr = first.rpartition(".")
        owner = model.get_submodule(owner_name)
        current = getattr(owner, attr)
        if current is not None and not current.is_meta:
            continue  # filled already (a tie) or a buffer the constructor computed
        stored = _stored_name(first, aliases, have)
        if stored is None:
            continue
        value = source.tensor(stored)
        if value.is_floating_point():
            _check_finite(stored, value)
        value = value.to(dtype, copy=True) if value.is_floating_point() else value.clone()
        if attr in owner._parameters:
            owner._parameters[attr] = nn.Parameter(value, requires_grad=False)
        else:
            owner._buffers[attr] = value
        source.done(stored)
    _retie(model, aliases)
    return module


def _check_finite(name: str, value: torch.Tensor) -> None:
    """Refuse a weight holding NaN or infinity as it is read (a folder is read block by block,
    so a damaged tensor in a late block is found there; the staged output is then discarded).

    Raises:
        NonFiniteError: naming the tensor and how many of its values are bad.
    """
    finite = torch.isfinite(value)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise NonFiniteError(
            f"{name} holds {bad:,} NaN or infinite value(s) of {value.numel():,}, so it cannot be compressed; "
            "the model's weights are damaged (a diverged training run or a bad conversion): load a good copy"
        )


def _stored_name(name: str, aliases: dict[str, str], have: set[str]) -> str | None:
    """The name a tensor is stored under: its own, or that of any name tied to it."""
    if name in have:
        return name
    first = aliases.get(name, name)
    for other, f in aliases.items():
        if f == first and other in have:
            return other
    return None


def _retie(model: nn.Module, aliases: dict[str, str]) -> None:
    """Point every tied name at the tensor now held under its first name."""
    for alias, first in aliases.items():
        if alias == first:
            continue
        module, _, attr = alias.rpartition(".")
        source, _, source_attr = first.rpartition(".")
        tensor = getattr(model.get_submodule(source), source_attr)
        if not tensor.is_meta and getattr(model.get_submodule(module), attr) is not tensor:
            setattr(model.get_submodule(module), attr, tensor)


def release(model: nn.Module, prefix: str) -> None:
    """Put a submodule's parameters back on the meta device (frees their memory)."""
    _to_meta(model.get_submodule(prefix).modules())


def release_outside(model: nn.Module, block_prefix: str) -> None:
    """Put the parameters outside the blocks (embeddings, final norm, head) back on the meta device.

    Ties stay (a tied head and embedding become one meta tensor), so :func:`materialize_outside`
    fills them again as one tensor.
    """
    head = block_prefix + "."
    _to_meta(m for n, m in model.named_modules() if n != block_prefix and not n.startswith(head))


def _to_meta(modules) -> None:
    empty: dict[int, nn.Parameter] = {}
    for module in modules:
        for key, param in list(module._parameters.items()):
            if param is not None and not param.is_meta:
                if id(param) not in empty:  # a shared tensor stays shared
                    empty[id(param)] = nn.Parameter(torch.empty_like(param, device="meta"), requires_grad=False)
                module._parameters[key] = empty[id(param)]


def materialize_outside(model: nn.Module, block_prefix: str, source, dtype: torch.dtype = torch.float32) -> None:
    """Fill every tensor that lies outside the blocks (embeddings, final norm, head)."""
    head = block_prefix + "."
    owners = set()
    for name in model.state_dict(keep_vars=True):
        if not name.startswith(head):
            owners.add(name.rpartition(".")[0])
    for owner in sorted(owners):
        materialize(model, owner, source, dtype)
