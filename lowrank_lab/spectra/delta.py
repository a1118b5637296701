"""Two models compared matrix by matrix: the spectrum of each change ΔW = W₂ − W₁.

The models must share an architecture, a vocabulary and every matrix's name and shape; the
check runs before any work and lists what differs. Then the matched pairs are walked in order,
two computed at a time while the next is read: each ΔW is formed in float64 (the difference of
two float32 weights is exact there), its singular values come from the same engine and disk
cache as a weight's, and only those few pairs are in memory. A ΔW's spectrum is an ordinary
:class:`LayerSpectrum`, so rank plans, presets and the Eckart–Young summaries work on it
unchanged — which is what LoRA extraction needs.

How low-rank the change is: a LoRA fine-tune of rank r gives every adapted matrix a ΔW of rank
exactly r. "Rank" here counts singular values above the rounding noise of the subtraction,
max(m, n)·ε·σ₁(W) with ε of the stored dtype — noise relative to the weights, not to the
(possibly tiny) change.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from lowrank_lab.errors import ComparisonError
from lowrank_lab.matrices import WeightMatrix
from lowrank_lab.progress import ProgressFn, report
from lowrank_lab.spectra.cache import SpectrumCache, weight_digest
from lowrank_lab.spectra.engine import LayerSpectrum
from lowrank_lab.spectra.metrics import numerical_rank, spectrum_metrics
from lowrank_lab.spectra.sources import WeightSource
from lowrank_lab.spectra.svd import singular_values
from lowrank_lab.threads import ordered_map


@dataclass(frozen=True, eq=False)
class MatrixDelta:
    """The change of one matrix between the two models.

    Attributes:
        spectrum: the spectrum of ΔW = W₂ − W₁ (same name, kind, layer and shape as W₁); its
            ``metrics.numerical_rank`` counts singular values above the subtraction's noise.
        base_frobenius, base_spectral: ‖W₁‖_F and ‖W₁‖₂ (σ₁ of the base matrix; NaN where the
            rank of the change did not need it and W₁'s spectrum is not in the cache — an
            unchanged matrix, or any whose rank is the same for every σ₁ its norm allows).
        tuned_frobenius: ‖W₂‖_F.
    """

    spectrum: LayerSpectrum
    base_frobenius: float
    base_spectral: float
    tuned_frobenius: float

    @property
    def name(self) -> str:
        return self.spectrum.name

    @property
    def changed(self) -> bool:
        return self.spectrum.metrics.frobenius > 0

    @property
    def rank(self) -> int:
        """The rank of ΔW (0 when unchanged)."""
        return self.spectrum.metrics.numerical_rank if self.changed else 0

    @property
    def relative_change(self) -> float:
        """‖ΔW‖_F / ‖W₁‖_F (NaN when W₁ is zero)."""
        return self.spectrum.metrics.frobenius / self.base_frobenius if self.base_frobenius > 0 else math.nan

    @property
    def relative_spectral_change(self) -> float:
        """‖ΔW‖₂ / ‖W₁‖₂ (0 when unchanged, NaN when W₁ is zero)."""
        if not self.changed:
            return 0.0
        return self.spectrum.metrics.spectral / self.base_spectral if self.base_spectral > 0 else math.nan

    def as_record(self) -> dict:
        sp, m = self.spectrum, self.spectrum.metrics
        return {
            "name": sp.name,
            "kind": sp.kind,
            "layer": sp.layer,
            "rows": sp.shape[0],
            "cols": sp.shape[1],
            "changed": self.changed,
            "delta_rank": self.rank,
            "full_rank": sp.full_rank,
            "relative_change": self.relative_change,
            "relative_spectral_change": self.relative_spectral_change,
            "delta_frobenius": m.frobenius,
            "delta_spectral": m.spectral,
            "delta_stable_rank": m.stable_rank,
            "delta_effective_rank": m.effective_rank,
            "delta_energy_rank_90": m.energy_rank_90,
            "delta_energy_rank_95": m.energy_rank_95,
            "delta_energy_rank_99": m.energy_rank_99,
            "base_frobenius": self.base_frobenius,
        }


@dataclass(frozen=True, eq=False)
class ModelDelta:
    """Every matched matrix's change, and which other parameters (norms, biases) changed.

    Attributes:
        base, tuned: the two models' labels.
        matrices: one :class:`MatrixDelta` per matrix, in the base model's order.
        vectors_changed: names of non-matrix parameters whose values differ.
    """

    base: str
    tuned: str
    matrices: tuple[MatrixDelta, ...]
    vectors_changed: tuple[str, ...] = ()

    @cached_property
    def changed(self) -> tuple[MatrixDelta, ...]:
        return tuple(d for d in self.matrices if d.changed)

    def spectra(self, changed_only: bool = True) -> list[LayerSpectrum]:
        """The ΔW spectra (of changed matrices only, by default): input for rank plans."""
        return [d.spectrum for d in (self.changed if changed_only else self.matrices)]

    def get(self, name: str) -> MatrixDelta:
        for d in self.matrices:
            if d.name == name:
                return d
        raise KeyError(name)

    @property
    def relative_change(self) -> float:
        """‖ΔW‖_F / ‖W₁‖_F over all matrices stacked."""
        num = sum(d.spectrum.metrics.frobenius**2 for d in self.matrices)
        den = sum(d.base_frobenius**2 for d in self.matrices)
        return math.sqrt(num / den) if den > 0 else math.nan

    def records(self) -> list[dict]:
        return [d.as_record() for d in self.matrices]


# --- matching -------------------------------------------------------------------------------


def _listing(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_comparable(base: WeightSource, tuned: WeightSource) -> list[tuple[WeightMatrix, WeightMatrix]]:
    """Check that two models can be compared and pair their matrices by name.

    Args:
        base, tuned: the two models' weights (nothing is read but names, shapes and configs).

    Returns:
        (base matrix, tuned matrix) pairs in the base model's order.

    Raises:
        ComparisonError: different architectures or vocabularies, matrices missing on either
            side, or different shapes; the message lists what differs and what to do.
    """
    fb, ft = base.facts, tuned.facts
    if (fb.architecture, fb.model_type) != (ft.architecture, ft.model_type):
        raise ComparisonError(
            f"{base.label} is a {fb.architecture} ({fb.model_type or 'unknown type'}) and {tuned.label} a "
            f"{ft.architecture} ({ft.model_type or 'unknown type'}): compare a model with a fine-tune or "
            "compression of the same architecture"
        )
    if fb.vocab_size != ft.vocab_size:
        raise ComparisonError(
            f"the vocabularies differ: {base.label} has {fb.vocab_size} tokens and {tuned.label} {ft.vocab_size}; "
            "a weight change means nothing across tokenizers — compare models that share one"
        )
    ours, theirs = base.matrices(), {m.name: m for m in tuned.matrices()}
    missing = [m.name for m in ours if m.name not in theirs]
    extra = [n for n in theirs if n not in {m.name for m in ours}]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} matrices of {base.label} are not in {tuned.label} ({_listing(missing)})")
        if extra:
            parts.append(f"{len(extra)} matrices of {tuned.label} are not in {base.label} ({_listing(extra)})")
        raise ComparisonError(
            "the models' matrices do not match by name: " + "; ".join(parts) + ". Compare two models of the "
            "same architecture and size (a model and its fine-tune or compression)"
        )
    shapes = [f"{m.name} {m.shape[0]}×{m.shape[1]} vs {theirs[m.name].shape[0]}×{theirs[m.name].shape[1]}"
              for m in ours if m.shape != theirs[m.name].shape]  # fmt: skip
    if shapes:
        raise ComparisonError(
            f"{len(shapes)} matrices differ in shape between {base.label} and {tuned.label} ({_listing(shapes, 3)}); "
            "compare two models of the same size"
        )
    return [(m, theirs[m.name]) for m in ours]


def check_vocabularies(base: WeightSource, tuned: WeightSource) -> None:
    """Check that both tokenizers (where both models have one) map the same tokens to the same ids.

    Raises:
        ComparisonError: the vocabularies differ, with a few tokens that differ.
    """
    vb, vt = base.vocabulary(), tuned.vocabulary()
    if vb is None or vt is None or vb == vt:
        return
    differ = sorted({t for t in vb.keys() | vt.keys() if vb.get(t) != vt.get(t)})
    raise ComparisonError(
        f"the tokenizers of {base.label} and {tuned.label} differ in {len(differ)} tokens "
        f"({_listing([repr(t) for t in differ], 3)}); compare models that share a tokenizer"
    )


def _finite(t: torch.Tensor, label: str, name: str) -> None:
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ComparisonError(
            f"{name} of {label} holds {bad} non-finite values (NaN or inf); that model is broken — "
            "re-export or re-train it before comparing"
        )


# --- the walk -------------------------------------------------------------------------------


def _top_of(w: torch.Tensor, store: SpectrumCache | None, device, compute: bool = True) -> float:
    """σ₁ of a weight, from the spectrum cache when its values are there (else computed and stored,
    or NaN when ``compute`` is off). A block power iteration for σ₁ alone was measured slower
    than this whole spectrum (a float64 Gram and one eigenvalue solve) at these sizes."""
    if w.numel() == 0:
        return 0.0
    digest = weight_digest(w) if store is not None else ""
    s = store.get(digest) if store is not None else None
    if s is None or s.shape != (min(w.shape),):
        if not compute:
            return math.nan
        s = singular_values(w, device)
        if store is not None:
            store.put(digest, s)
    return float(s[0])


def _eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps) if dtype.is_floating_point else float(np.finfo(np.float32).eps)


def _delta_spectrum(
    entry: WeightMatrix,
    w1: torch.Tensor,
    w2: torch.Tensor,
    labels: tuple[str, str],
    store: SpectrumCache | None,
    device,
) -> tuple[LayerSpectrum, float, float, float]:
    a, b = w1.detach().to("cpu", torch.float64), w2.detach().to("cpu", torch.float64)
    # The float64 norms of float32 (or narrower) values cannot overflow: finite norms, finite weights.
    base_f, tuned_f = float(torch.linalg.vector_norm(a)), float(torch.linalg.vector_norm(b))
    if not math.isfinite(base_f):
        _finite(w1, labels[0], entry.name)
    if not math.isfinite(tuned_f):
        _finite(w2, labels[1], entry.name)
    unchanged = torch.equal(a, b)
    if unchanged:
        s = np.zeros(entry.full_rank)
        digest = ""
    else:
        delta = b - a  # (m, n), exact: two float32 values differ by a float64-representable amount
        digest = weight_digest(delta) if store is not None else ""
        s = store.get(digest) if store is not None else None
        if s is None or s.shape != (entry.full_rank,):
            s = singular_values(delta, device)
            if store is not None:
                store.put(digest, s)
    # Rounding noise of the subtraction scales with the weights, so the rank tolerance
    # max(m, n)·ε·σ₁(W) is passed as an ε relative to σ₁(ΔW); ε of the coarser of the two dtypes
    # (a float32 base against a bfloat16 fine-tune differs by bfloat16 rounding everywhere).
    eps = max(_eps(w1.dtype), _eps(w2.dtype))
    top = float(s[0]) if s.size else 0.0

    def tolerance(base_top: float) -> float:  # max(m, n)·ε·max(σ₁(W₁), σ₁(ΔW)) as an ε relative to σ₁(ΔW)
        return eps * max(base_top, top) / top if top > 0 else eps

    # σ₁(W₁) lies in [‖W₁‖_F/√k, ‖W₁‖_F]. When both ends give ΔW the same rank, σ₁(W₁) changes
    # nothing and W₁'s spectrum (half the work of a cold comparison) is only read if cached
    # (under the digest the Spectra page caches W₁ by); else it is computed.
    base_s1 = _top_of(w1, store, device, compute=False)
    if not unchanged and not math.isfinite(base_s1):
        ends = {numerical_rank(s, entry.shape, tolerance(x)) for x in (base_f / math.sqrt(entry.full_rank), base_f)}
        if len(ends) > 1:
            base_s1 = _top_of(w1, store, device)
    metrics = spectrum_metrics(s, entry.shape, eps=tolerance(base_s1 if math.isfinite(base_s1) else base_f))
    sp = LayerSpectrum(
        entry.name, entry.kind, entry.layer, entry.shape, entry.module_type, entry.is_embedding, s, metrics, digest
    )
    return sp, base_f, base_s1, tuned_f


def model_delta(
    base: WeightSource,
    tuned: WeightSource,
    *,
    progress: ProgressFn | None = None,
    cache: SpectrumCache | bool = True,
    device: str | None = None,
    check_tokenizers: bool = True,
) -> ModelDelta:
    """The spectrum of every matrix's change W₂ − W₁, a few pairs in memory at a time (at most three).

    Args:
        base: the first model W₁ (e.g. the pre-trained one).
        tuned: the second model W₂ (a fine-tune, a merge, a compression of the first).
        progress: called as ``progress(done, total, name)`` after each matrix.
        cache: a :class:`SpectrumCache` for the ΔW singular values, True for the default, False for none.
        device: where the SVDs run (None: the CPU, or CUDA when the tensors are there).
        check_tokenizers: also compare the tokenizers' vocabularies (when both have one).

    Returns:
        The :class:`ModelDelta`.

    Raises:
        ComparisonError: the models do not match (architecture, vocabulary, names, shapes), a
            weight is not finite, or the two models are identical (there is no change to study).
    """
    pairs = check_comparable(base, tuned)
    if check_tokenizers:
        check_vocabularies(base, tuned)
    vec_b, vec_t = base.vectors(), tuned.vectors()
    vector_names = [n for n in vec_b if n in vec_t and vec_b[n] == vec_t[n]]
    store = SpectrumCache() if cache is True else (cache or None)
    total = len(pairs)
    out: list[MatrixDelta] = []
    labels = (base.label, tuned.label)
    # The pairs are read here, in order, and their spectra computed on a small pool, one BLAS
    # thread each (a symmetric eigenvalue solve gains little from more threads but scales with
    # more matrices at once); at most ``workers`` + 1 pairs are in memory.
    on_gpu = device is not None and torch.device(device).type == "cuda"
    calls = (
        (_delta_spectrum, (entry, base.matrix(entry.name), tuned.matrix(entry.name), labels, store, device))
        for entry, _ in pairs
    )
    with torch.no_grad():
        for result in ordered_map(calls, 1 if on_gpu else min(2, os.cpu_count() or 1)):
            out.append(MatrixDelta(*result))
            report(progress, len(out), total, out[-1].name)
        changed_vectors = []
        for name in vector_names:
            v1, v2 = base.vector(name), tuned.vector(name)
            _finite(v1, base.label, name)
            _finite(v2, tuned.label, name)
            if not torch.equal(v1, v2):
                changed_vectors.append(name)
    delta = ModelDelta(base.label, tuned.label, tuple(out), tuple(changed_vectors))
    if not delta.changed and not changed_vectors:
        raise ComparisonError(
            f"{base.label} and {tuned.label} have identical weights: there is no change to look at. "
            "Choose a fine-tuned, merged or compressed model as the second one"
        )
    return delta
