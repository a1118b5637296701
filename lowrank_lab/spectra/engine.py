"""The spectrum engine: singular values and metrics for every weight matrix of a model."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lowrank_lab import outputs, strict_json
from lowrank_lab.checks import check_device, require
from lowrank_lab.errors import NonFiniteError, OutputError, SettingsError
from lowrank_lab.matrices import WeightMatrix, weight_matrices
from lowrank_lab.progress import ProgressFn, report
from lowrank_lab.spectra.cache import SpectrumCache, weight_digest
from lowrank_lab.spectra.heavy_tail import HeavyTailMetrics, heavy_tail_metrics
from lowrank_lab.spectra.metrics import SpectrumMetrics, spectrum_metrics
from lowrank_lab.spectra.svd import singular_values_many


@dataclass(frozen=True, eq=False)
class LayerSpectrum:
    """Singular values and metrics of one weight matrix.

    Attributes:
        name, kind, layer, shape, module_type, is_embedding: as in :class:`WeightMatrix`.
        s: singular values, float64, descending, length ``min(shape)``.
        metrics: what they say (norms, ranks, Marchenko–Pastur edge).
        digest: the content hash of the weight these values belong to.
    """

    name: str
    kind: str
    layer: int | None
    shape: tuple[int, int]
    module_type: str
    is_embedding: bool
    s: np.ndarray = field(repr=False)
    metrics: SpectrumMetrics
    digest: str = ""

    @property
    def full_rank(self) -> int:
        return min(self.shape)

    @property
    def params(self) -> int:
        return self.shape[0] * self.shape[1]

    @cached_property
    def heavy_tail(self) -> HeavyTailMetrics:
        """Power-law α of the eigenvalue density's tail and WeightWatcher's norm metrics, fitted once
        (the first time it is asked for) from these singular values."""
        return heavy_tail_metrics(self)

    def cumulative_energy(self) -> np.ndarray:
        """Fraction of Σσᵢ² kept by ranks 1..full_rank, shape (full_rank,)."""
        e = np.cumsum(np.square(self.s))
        return e / e[-1] if e.size and e[-1] > 0 else np.zeros_like(e)

    def as_record(self) -> dict:
        """One flat row: identity, shape and every metric (no singular values)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "layer": self.layer,
            "rows": self.shape[0],
            "cols": self.shape[1],
            "module_type": self.module_type,
            "is_embedding": self.is_embedding,
            "full_rank": self.full_rank,
            **self.metrics.as_dict(),
        }


def check_finite(matrix: WeightMatrix) -> None:
    """Refuse a matrix holding NaN or infinity: it has no spectrum, and LAPACK would fail on it.

    Raises:
        NonFiniteError: naming the matrix and how many of its values are bad.
    """
    w = matrix.weight.detach()
    finite = torch.isfinite(w)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise NonFiniteError(
            f"{matrix.name} holds {bad:,} NaN or infinite value(s) of {w.numel():,}, so it cannot be analysed or compressed; "
            "the model's weights are damaged (a diverged training run or a bad conversion): load a good copy"
        )


def spectrum_of(matrix: WeightMatrix, s: np.ndarray, digest: str = "") -> LayerSpectrum:
    """Wrap singular values of ``matrix`` into a :class:`LayerSpectrum` with its metrics."""
    eps = float(torch.finfo(matrix.weight.dtype).eps) if matrix.weight is not None else float(np.finfo(np.float32).eps)
    return LayerSpectrum(
        name=matrix.name,
        kind=matrix.kind,
        layer=matrix.layer,
        shape=matrix.shape,
        module_type=matrix.module_type,
        is_embedding=matrix.is_embedding,
        s=s,
        metrics=spectrum_metrics(s, matrix.shape, eps=eps),
        digest=digest,
    )


def compute_spectra(
    model: nn.Module | list[WeightMatrix],
    *,
    progress: ProgressFn | None = None,
    cache: SpectrumCache | bool = True,
    device: str | torch.device | None = None,
    include_embeddings: bool = True,
) -> list[LayerSpectrum]:
    """Singular values and metrics of every weight matrix, from the disk cache when it has them.

    Reads the weights only; the model is not changed.

    Args:
        model: a model, or matrices from :func:`weight_matrices`.
        progress: called as ``progress(done, total, name)`` after each matrix.
        cache: a :class:`SpectrumCache`, True for the default one, False for none.
        device: where to run the SVDs; None picks CUDA when present, else the CPU.
        include_embeddings: analyse embedding matrices too.

    Returns:
        One :class:`LayerSpectrum` per matrix, in module order.

    Raises:
        NoWeightMatricesError: the model has no 2-D weight.
    """
    require(model, (nn.Module, list), "compute_spectra's model", "pass loaded.model (not the LoadedModel or a name)")
    matrices = model if isinstance(model, list) else weight_matrices(model, include_embeddings)
    device = check_device(device) or ("cuda" if torch.cuda.is_available() else "cpu")
    store = SpectrumCache() if cache is True else (cache or None)
    total = len(matrices)
    found: dict[int, np.ndarray] = {}
    digests = [""] * total
    with torch.no_grad():
        if store is not None:
            for i, matrix in enumerate(matrices):
                digests[i] = weight_digest(matrix.matrix())
                s = store.get(digests[i])
                if s is not None and s.shape == (matrix.full_rank,):
                    found[i] = s
        missing = [i for i in range(total) if i not in found]
        for i in missing:
            check_finite(matrices[i])
        done = len(found)
        report(progress, done, total, "from cache" if done else "")
        results = singular_values_many((matrices[i].matrix() for i in missing), device=device)
        for i, s in zip(missing, results):
            found[i] = s
            if store is not None:
                store.put(digests[i], s)
            done += 1
            report(progress, done, total, matrices[i].name)
    return [spectrum_of(matrix, found[i], digests[i]) for i, matrix in enumerate(matrices)]


def spectra_records(spectra: list[LayerSpectrum]) -> list[dict]:
    """One flat dict per matrix (see :meth:`LayerSpectrum.as_record`)."""
    return [sp.as_record() for sp in spectra]


SPECTRA_SUFFIXES = (".json", ".csv")


def check_spectra_path(path: str | Path, overwrite: bool = False, protect=()) -> Path:
    """Check, before any work, that spectra may be written to ``path`` (see :mod:`lowrank_lab.outputs`).

    Raises:
        OutputError: a suffix other than ``.json``/``.csv``, or a path that is taken or unsafe.
    """
    where = outputs.as_path(path, "the spectra file")
    if where.suffix.lower() not in SPECTRA_SUFFIXES:
        raise OutputError(f"cannot write spectra to {where.name}: use a file name ending in .json or .csv")
    return outputs.check_output_file(path, overwrite, protect)


def write_spectra(spectra: list[LayerSpectrum], path: str | Path, overwrite: bool = False, protect=()) -> Path:
    """Write the spectra to ``.json`` (metrics and singular values) or ``.csv`` (metrics only).

    The file is written to a temporary sibling and renamed into place; an existing file is
    replaced only with ``overwrite``, and a symbolic link is never written through.

    Raises:
        OutputError: the suffix is neither ``.json`` nor ``.csv``, or the path is taken or unsafe.
        SettingsError: no spectra to write.
    """
    path = check_spectra_path(path, overwrite, protect)
    if not spectra:
        raise SettingsError("there are no spectra to write; compute them first with compute_spectra")
    if path.suffix.lower() == ".json":
        rows = [{**sp.as_record(), "singular_values": sp.s.tolist()} for sp in spectra]
        text = strict_json.dumps({"matrices": rows}, indent=1)
    else:
        records = spectra_records(spectra)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
        text = buf.getvalue()
    return outputs.write_file(path, text, overwrite, protect)
