"""Writing a compressed checkpoint block by block: safetensors shards and their index.

The engine hands over each block's tensors as soon as the block is compressed. Each tensor is
cast to the output dtype and its bytes go straight to the open shard's data file, so memory
holds one tensor at a time, whatever the model's size; only names, dtypes, shapes and offsets
stay behind. When a shard passes the target size, its safetensors file is assembled on disk:
the header, then the data copied over in chunks. At the end the shards get Hugging Face's names
(``model-00001-of-00004.safetensors``) and ``model.safetensors.index.json`` maps each tensor to
its shard; a checkpoint that fits one shard is a single ``model.safetensors``, as
:func:`~lowrank_lab.export.save_compressed` writes it.

The folder given is the staged (temporary) folder of an export: nothing here decides where the
checkpoint finally goes or whether an existing one may be replaced.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import BinaryIO

import torch

from lowrank_lab.checkpoint.format import FORMAT, INDEX_FILE, SAFETENSORS_DTYPES, WEIGHTS_FILE
from lowrank_lab.errors import CheckpointError

DEFAULT_SHARD_BYTES = 512 * 2**20
MAX_SHARD_BYTES = 2 * 2**30
_COPY_CHUNK = 16 * 2**20


class ShardWriter:
    """Streams tensors into shards of about ``shard_bytes`` on disk.

    Args:
        folder: an existing, empty folder (the staged export).
        dtype: floating tensors are stored in this dtype.
        shard_bytes: a shard is closed once its tensors pass this size (≤ 2 GiB).

    Raises:
        CheckpointError: ``shard_bytes`` out of range.
    """

    def __init__(self, folder: Path, dtype: torch.dtype, shard_bytes: int = DEFAULT_SHARD_BYTES):
        if not 0 < shard_bytes <= MAX_SHARD_BYTES:
            raise CheckpointError(f"a shard must hold between 1 byte and 2 GiB, got shard_bytes={shard_bytes}")
        self.folder = Path(folder)
        self.dtype = dtype
        self.shard_bytes = shard_bytes
        self._data: BinaryIO | None = None  # the open shard's tensor bytes
        self._entries: dict[str, dict] = {}  # the open shard's header entries
        self._offset = 0
        self._shards: list[tuple[Path, list[str]]] = []
        self._names: set[str] = set()
        self.total_bytes = 0

    def add(self, tensors: dict[str, torch.Tensor]) -> None:
        """Write tensors under their checkpoint names; closes the shard once it passes the target size.

        Raises:
            CheckpointError: a name was written before, or a dtype safetensors cannot store.
        """
        for name, tensor in tensors.items():
            if name in self._names:
                raise CheckpointError(f"the tensor {name} was written twice; this is a bug in the engine")
            t = tensor.detach().to("cpu")
            if t.is_floating_point():
                t = t.to(self.dtype)
            if t.dtype not in SAFETENSORS_DTYPES:
                raise CheckpointError(
                    f"the tensor {name} has dtype {t.dtype}, which a safetensors checkpoint cannot hold"
                )
            t = t.contiguous()
            nbytes = t.numel() * t.element_size()
            if self._data is None:
                self._data = open(self._data_path(len(self._shards) + 1), "wb")  # noqa: SIM115 - closed in flush
            if nbytes:
                self._data.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
            self._names.add(name)
            self._entries[name] = {
                "dtype": SAFETENSORS_DTYPES[t.dtype],
                "shape": list(t.shape),
                "data_offsets": [self._offset, self._offset + nbytes],
            }
            self._offset += nbytes
            del t
        if self._offset >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        """Close the open shard: its safetensors file is the header followed by the data written so far."""
        if self._data is None:
            return
        self._data.close()
        number = len(self._shards) + 1
        data, path = self._data_path(number), self.folder / f".shard-{number:05d}.safetensors"
        header = {"__metadata__": {"format": "pt", "lowrank_lab": FORMAT}, **self._entries}
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        with open(path, "wb") as out, open(data, "rb") as src:
            out.write(struct.pack("<Q", len(encoded)))
            out.write(encoded)
            shutil.copyfileobj(src, out, _COPY_CHUNK)
        data.unlink()
        self._shards.append((path, list(self._entries)))
        self.total_bytes += self._offset
        self._data, self._entries, self._offset = None, {}, 0

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

    def _data_path(self, number: int) -> Path:
        return self.folder / f".shard-{number:05d}.data"
