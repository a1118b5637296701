"""What the pages say when a compressed model is far worse than dense, and what to try.

The threshold is the core's (:func:`lowrank_lab.compress.guards.far_above_dense`); the words
are the app's. The Ranks page's results and the Export page use the same verdict, so a broken
model is never announced in green on one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from lowrank_lab.compress.guards import far_above_dense
from lowrank_lab.ui.formatting import pct, ratio, sig
from lowrank_lab.ui.state import CompressionRun


@dataclass(frozen=True)
class Verdict:
    """How a compression run measured against dense, in words."""

    far_above: bool
    text: str  # "" when nothing was measured


def _advice(run: CompressionRun) -> list[str]:
    """What to try, given how the run was made."""
    compressed = run.compressed
    tips = []
    if run.keep is not None:
        tips.append(f"keep more parameters (the budget kept {pct(run.keep, 0)} of the linear layers)")
    else:
        tips.append("keep more parameters (higher ranks on the sliders, or a preset that keeps more)")
    if compressed.method == "svd":
        tips.append("the whitened method (plain SVD ignores which input directions the model uses)")
    if run.ranks_from != "auto":
        tips.append("auto ranks (they spend the budget where the loss is hurt least)")
    if run.notes:
        tips.append("more calibration tokens (see the note above)")
    tips.append("healing it with a LoRA fine-tune on the LoRA page (choose the compressed model)")
    return tips


def verdict(run: CompressionRun) -> Verdict:
    """The perplexity against dense, and whether it is far above (with what to try)."""
    report = run.comparison
    if report is None or report.dense.perplexity is None or report.compressed.perplexity is None:
        return Verdict(False, "")
    dense, small = report.dense.perplexity, report.compressed.perplexity
    far = far_above_dense(dense, small)
    text = f"perplexity {sig(dense)} → {sig(small)} ({ratio(small / dense)} dense, on {report.eval_source})"
    if far:
        tips = "; ".join(_advice(run))
        text = f"Far above the dense model: {text}. It is too damaged to use as it is. Try {tips}."
    return Verdict(far, text)
