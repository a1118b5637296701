"""A model's prediction basis: whitened spectra, loss costs and the dense perplexity, from calibration.

This is the slow part, done once per (model, calibration): a calibration pass, a whitened SVD
per matrix and one forward and backward pass for the loss costs (all cached by
:mod:`lowrank_lab.compress`), and one perplexity pass of the dense model. Nothing here changes
the shared model.
"""

from __future__ import annotations

from lowrank_lab.cache import KeyedCache
from lowrank_lab.comparison import EvalSettings
from lowrank_lab.compress import CalibrationSettings, whitened_spectra
from lowrank_lab.compress.auto import component_costs
from lowrank_lab.evaluate import perplexity
from lowrank_lab.models import LoadedModel
from lowrank_lab.prediction.basis import PredictionBasis, loss_scale
from lowrank_lab.prediction.fit import LossFit
from lowrank_lab.progress import ProgressFn, report


def dense_perplexity(loaded: LoadedModel, evaluation: EvalSettings | None = None) -> float | None:
    """The dense model's perplexity on the evaluation text, the one a compression's comparison uses.

    Returns:
        The perplexity, or None for a model without a language-model loss (an encoder).

    Raises:
        DataError: the evaluation text is shorter than one block.
    """
    if loaded.task != "causal-lm" or loaded.tokenizer is None:
        return None
    settings = evaluation or EvalSettings()
    return perplexity(
        loaded.model, loaded.tokenizer, settings.eval_text(), seq_len=settings.seq_len, max_blocks=settings.max_blocks
    )


def prediction_basis(
    loaded: LoadedModel,
    calibration: CalibrationSettings | None = None,
    evaluation: EvalSettings | None = None,
    fit: LossFit | None = None,
    progress: ProgressFn | None = None,
    dense: float | None = None,
    measure_dense: bool = True,
    cache: KeyedCache | None = None,
) -> PredictionBasis:
    """Everything a slider move needs to predict a plan's error and loss for ``loaded``.

    Args:
        loaded: the shared model (read-only: calibration hooks go on copies).
        calibration: the calibration text and sizes (default: the built-in split, 32 × 256).
        evaluation: the text whose perplexity is predicted (default: the built-in evaluation split).
        fit: how raw predictions map to measured ones (default: the prior).
        progress: called as ``progress(done, total, message)`` over the three steps.
        dense: the dense perplexity on ``evaluation`` when already measured (a comparison
            measures it).
        measure_dense: without ``dense``, measure it here (else predict the loss increase only).
        cache: where the calibration statistics, decompositions and costs are kept (default: the
            process's :data:`~lowrank_lab.compress.calibration.CALIBRATION_CACHE`; the app passes its own).

    Raises:
        DataError: no tokenizer, or too little calibration or evaluation text.
    """
    calibration = calibration or CalibrationSettings()
    causal = loaded.task == "causal-lm"
    steps = 3 if causal else 1
    whitened = whitened_spectra(loaded, calibration, progress=_part(progress, 0, steps, "whitening"), cache=cache)
    costs = None
    if not causal:  # an encoder has no next-token loss to weigh components by
        dense = None
    else:
        costs = component_costs(loaded, calibration, _part(progress, 1, steps, "loss gradients"), cache=cache)
        if dense is None and measure_dense:
            report(progress, 2, steps, "dense perplexity")
            dense = dense_perplexity(loaded, evaluation)
        report(progress, 3, steps, "dense perplexity")
    scale = loss_scale(calibration.samples, calibration.seq_len)
    return PredictionBasis(whitened, costs, scale, dense, fit, calibration.describe())


def _part(progress: ProgressFn | None, step: int, steps: int, what: str) -> ProgressFn | None:
    """Progress inside one of ``steps`` equal steps, mapped onto the whole."""
    if progress is None:
        return None

    def fn(done: int, total: int, message: str) -> None:
        progress(step * max(total, 1) + done, steps * max(total, 1), f"{what}: {message}" if message else what)

    return fn
