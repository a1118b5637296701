"""Writing a compressed checkpoint block by block: safetensors shards and their index.

The engine hands over each block's tensors as soon as the block is compressed; they are cast
to the output dtype and gathered into a shard, which is written once it passes the target
size, so memory holds at most one shard's worth. At the end the shards get Hugging Face's
names (``model-00001-of-00004.safetensors``) and ``model.safetensors.index.json`` maps each
tensor to its shard; a checkpoint that fits one shard is a single ``model.safetensors``, as
:func:`~lowrank_lab.export.save_compressed` writes it.

The folder given is the staged (temporary) folder of an export: nothing here decides where the
checkpoint finally goes or whether an existing one may be replaced.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from lowrank_lab.checkpoint.format import FORMAT, INDEX_FILE, WEIGHTS_FILE
from lowrank_lab.errors import CheckpointError

DEFAULT_SHARD_BYTES = 512 * 2**20
MAX_SHARD_BYTES = 2 * 2**30


class ShardWriter:
    """Gathers tensors into shards of about ``shard_bytes`` and writes them.

    Args:
        folder: an existing, empty folder (the staged export).
        dtype: floating tensors are stored in this dtype.
        shard_bytes: a shard is written once its tensors pass this size (≤ 2 GiB).

    Raises:
        CheckpointError: ``shard_bytes`` out of range.
    """

    def __init__(self, folder: Path, dtype: torch.dtype, shard_bytes: int = DEFAULT_SHARD_BYTES):
        if not 0 < shard_bytes <= MAX_SHARD_BYTES:
            raise CheckpointError(f"a shard must hold between 1 byte and 2 GiB, got shard_bytes={shard_bytes}")
        self.folder = Path(folder)
        self.dtype = dtype
        self.shard_bytes = shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[tuple[Path, list[str]]] = []
        self._names: set[str] = set()
        self.total_bytes = 0

    def add(self, tensors: dict[str, torch.Tensor]) -> None:
        """Queue tensors under their checkpoint names; writes a shard when enough are queued.

        Raises:
            CheckpointError: a name was written before.
        """
        for name, tensor in tensors.items():
            if name in self._names:
                raise CheckpointError(f"the tensor {name} was written twice; this is a bug in the engine")
            t = tensor.detach().to("cpu")
            if t.is_floating_point():
                t = t.to(self.dtype)
            t = t.contiguous()
            self._names.add(name)
            self._pending[name] = t
            self._pending_bytes += t.numel() * t.element_size()
        if self._pending_bytes >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the queued tensors as one shard."""
        if not self._pending:
            return
        path = self.folder / f".shard-{len(self._shards) + 1:05d}.safetensors"
        save_file(self._pending, str(path), metadata={"format": "pt", "lowrank_lab": FORMAT})
        self._shards.append((path, list(self._pending)))
        self.total_bytes += self._pending_bytes
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> list[Path]:
        """Write what is left, name the shards and write the index; returns the shard files."""
        self.flush()
        if not self._shards:
            raise CheckpointError("no tensors were written; the checkpoint would be empty")
        if len(self._shards) == 1:
            path, _ = self._shards[0]
            final = self.folder / WEIGHTS_FILE
            path.rename(final)
            return [final]
        n = len(self._shards)
        weight_map, files = {}, []
        for i, (path, names) in enumerate(self._shards, start=1):
            final = self.folder / f"model-{i:05d}-of-{n:05d}.safetensors"
            path.rename(final)
            files.append(final)
            weight_map.update({name: final.name for name in names})
        index = {"metadata": {"total_size": self.total_bytes, "format": FORMAT}, "weight_map": weight_map}
        (self.folder / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return files
