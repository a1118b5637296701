"""Calibration: which text, how much of it, and the token blocks cut from it.

Data-aware compression needs each linear layer's input statistics over the tokens of a few
calibration blocks; the engine sums them block by block (:mod:`lowrank_lab.compress.refit`).
What calibration computes for allocation is kept per model content and settings
(:data:`CALIBRATION_CACHE`).

The evaluation split is never read here: calibration and every allocation decision use the
calibration split (or the user's text) only.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import torch
import xxhash

from lowrank_lab.cache import GiB, KeyedCache, model_digest
from lowrank_lab.data.text import builtin_text, token_blocks
from lowrank_lab.errors import ArgumentTypeError, DataError, SettingsError
from lowrank_lab.models import LoadedModel
from lowrank_lab.models.limits import check_seq_len

BUILTIN_SOURCE = "built-in pydoc_data calibration split"


@dataclass(frozen=True)
class CalibrationSettings:
    """What text calibrates a data-aware compression, and how much of it.

    Attributes:
        samples: number of token blocks (at least 1).
        seq_len: tokens per block (at least 2).
        text: the calibration text; None for the built-in calibration split.
        source: a name for the text, shown in reports and the model card.

    Raises:
        SettingsError: ``samples`` or ``seq_len`` out of range.
    """

    samples: int = 32
    seq_len: int = 256
    text: str | None = None
    source: str = BUILTIN_SOURCE

    def __post_init__(self):
        for what, value, low in (("samples", self.samples, 1), ("seq_len", self.seq_len, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SettingsError(f"calibration {what} must be an integer ≥ {low}, got {value!r}")
        if self.text is not None and not isinstance(self.text, str):
            raise ArgumentTypeError(f"calibration text must be a str (or None), got {type(self.text).__name__}")
        if not isinstance(self.source, str):
            raise ArgumentTypeError(f"calibration source must be a str, got {type(self.source).__name__}")
        if self.text is not None and not self.text.strip():
            raise DataError("the calibration text is empty; give some prose, or None for the built-in split")

    def describe(self) -> dict:
        """How the model was calibrated, for ``CompressedModel.calibration`` and the model card."""
        return {"text": self.source, "samples": self.samples, "seq_len": self.seq_len}

    def key(self) -> tuple:
        """A hashable key of the settings (the text by a content hash, not in full)."""
        text = None if self.text is None else xxhash.xxh3_128_hexdigest(self.text.encode())
        return (self.samples, self.seq_len, text, self.source)


def calibration_blocks(loaded: LoadedModel, settings: CalibrationSettings) -> torch.Tensor:
    """Token blocks of the calibration text, shape (samples, seq_len), int64.

    Raises:
        DataError: the model has no tokenizer, or the text is too short for the settings.
    """
    check_seq_len(loaded.model, settings.seq_len, "the calibration block length seq_len")
    return calibration_ids(loaded.tokenizer, settings, loaded.title)


def calibration_ids(tokenizer, settings: CalibrationSettings, title: str) -> torch.Tensor:
    """Token blocks of the calibration text for a model known by its tokenizer (a folder read block by block).

    Raises:
        DataError: no tokenizer, or the text is too short for the settings (naming the options).
    """
    if tokenizer is None:
        raise DataError(
            f"{title} has no tokenizer, so it cannot read calibration text; "
            "use method 'svd' (needs no data) or load a model that ships a tokenizer"
        )
    text = calibration_text(settings)
    fix = "give more text, or fewer or shorter samples (samples, seq_len; --samples, --seq-len on the command line)"
    return token_blocks(
        tokenizer,
        text,
        settings.samples,
        settings.seq_len,
        spread=True,
        what=f"the calibration text ({settings.source})",
        fix=fix,
    )


def calibration_text(settings: CalibrationSettings) -> str:
    """The text the settings name: the user's, or the built-in calibration split."""
    return settings.text if settings.text is not None else builtin_text("calibration")


# What calibration computes for allocation (loss costs, whitened spectra), kept for the command
# line and scripts; the app passes its own cache (see lowrank_lab.ui.cache).
CALIBRATION_CACHE = KeyedCache(max_bytes=4 * GiB, name="calibration")


def calibration_key(loaded: LoadedModel, what: str, settings: CalibrationSettings, *extra: Hashable) -> tuple:
    """The cache key of something computed from ``loaded`` on ``settings``: the model by its content."""
    return (model_digest(loaded.model), what, settings.key(), *extra)
