"""Calibration: token blocks from text, and each linear layer's input statistics on them.

Data-aware compression needs, for every linear layer y = W x + b, the second moment of its
inputs XᵀX (in×in) and their sum Σx, over the tokens of a few calibration blocks. Forward
hooks collect them in float64 in one pass over the model. Layers that read the very same
input tensor (q/k/v read one normed hidden state, gate/up another) share one accumulator, so
smollm2-135m needs 4 Gram matrices per block instead of 7.

The evaluation split is never read here: calibration and every allocation decision use the
calibration split (or the user's text) only.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import torch
import xxhash
from torch import nn

from lowrank_lab.cache import GiB, KeyedCache, model_digest
from lowrank_lab.data.text import builtin_text, token_blocks
from lowrank_lab.errors import ArgumentTypeError, DataError, SettingsError
from lowrank_lab.models import LoadedModel
from lowrank_lab.models.limits import check_seq_len
from lowrank_lab.progress import ProgressFn, report

BUILTIN_SOURCE = "built-in pydoc_data calibration split"
_CHUNK = 256


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
    if loaded.tokenizer is None:
        raise DataError(
            f"{loaded.title} has no tokenizer, so it cannot read calibration text; "
            "use method 'svd' (needs no data) or load a model that ships a tokenizer"
        )
    check_seq_len(loaded.model, settings.seq_len, "the calibration block length seq_len")
    text = settings.text if settings.text is not None else builtin_text("calibration")
    fix = "give more text, or fewer or shorter samples (samples, seq_len; --samples, --seq-len on the command line)"
    return token_blocks(
        loaded.tokenizer,
        text,
        settings.samples,
        settings.seq_len,
        spread=True,
        what=f"the calibration text ({settings.source})",
        fix=fix,
    )


class InputStats:
    """Running sums over a layer's input tokens: XᵀX (in×in) and Σx (in,), float64.

    ``whitening`` holds the Cholesky factor once computed, shared by the layers reading this input.
    """

    def __init__(self, dim: int):
        self.xtx = torch.zeros(dim, dim, dtype=torch.float64)
        self.xsum = torch.zeros(dim, dtype=torch.float64)
        self.count = 0
        self.whitening: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()  # (tokens, in)
        # float32 products over chunks of _CHUNK tokens, summed in float64: half the time of
        # float64 products, and the chunks keep the float32 rounding far below the ridge.
        for start in range(0, x.shape[0], _CHUNK):
            part = x[start : start + _CHUNK]
            self.xtx += (part.T @ part).double()
            self.xsum += part.double().sum(0)
        self.count += x.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        return self.xsum / max(self.count, 1)

    def covariance(self) -> torch.Tensor:
        """Cov(x) = XᵀX/n − μμᵀ, in×in."""
        mu = self.mean
        return self.xtx / max(self.count, 1) - torch.outer(mu, mu)


def collect_input_stats(
    model: nn.Module,
    names: list[str],
    blocks: torch.Tensor,
    progress: ProgressFn | None = None,
    batch_size: int = 4,
) -> dict[str, InputStats]:
    """XᵀX and Σx of the inputs of each named linear layer over ``blocks``.

    Args:
        model: the model (not changed; hooks are removed afterwards).
        names: module names of Linear or Conv1D layers.
        blocks: token ids, (samples, seq_len).
        progress: called after each batch.
        batch_size: blocks per forward pass.

    Returns:
        name → stats; layers reading the same input tensor share one object.
    """
    stats: dict[str, InputStats] = {}
    # The previous hook's input and accumulator. Layers reading one input are called back to
    # back (q, k, v; gate, up), and holding the tensor keeps its memory from being reused, so
    # an identity check cannot mistake a later input for it.
    last: list = [None, None]

    def hook(name):
        def fn(module, inputs, output):
            x = inputs[0]
            if x is last[0]:
                if name not in stats:
                    stats[name] = last[1]
                if stats[name] is last[1]:
                    return  # shares its input with the layer just counted
            if name not in stats:
                stats[name] = InputStats(x.shape[-1])
            stats[name].add(x.detach())
            last[:] = [x, stats[name]]

        return fn

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        n = blocks.shape[0]
        with torch.no_grad():
            for start in range(0, n, batch_size):
                last[:] = [None, None]
                model(input_ids=blocks[start : start + batch_size])  # (B, T)
                report(progress, min(start + batch_size, n), n, "calibration statistics")
    finally:
        for h in handles:
            h.remove()
        last[:] = [None, None]
    return stats


# What calibration computes (statistics, whitened decompositions, loss gradients), kept for the
# command line and scripts; the app passes its own cache (see lowrank_lab.ui.cache).
CALIBRATION_CACHE = KeyedCache(max_bytes=4 * GiB, name="calibration")


def layer_input_stats(
    loaded: LoadedModel,
    names: list[str],
    settings: CalibrationSettings,
    progress: ProgressFn | None = None,
    cache: KeyedCache | None = None,
) -> dict[str, InputStats]:
    """Input statistics of the named layers of the shared model, from the cache when it has them.

    The hooks go on a copy, so other users of the shared model never run them.

    Args:
        loaded: the model (not changed).
        names: the layers, as ``named_modules()`` gives them.
        settings: the calibration text and sizes.
        progress: called as ``progress(done, total, message)`` while collecting.
        cache: where computed statistics are kept (default: :data:`CALIBRATION_CACHE`).

    Raises:
        DataError: no tokenizer, or the calibration text is too short.
    """
    blocks = calibration_blocks(loaded, settings)
    key = calibration_key(loaded, "input_stats", settings, tuple(names))
    store = CALIBRATION_CACHE if cache is None else cache
    return store.get_or_compute(key, lambda: collect_input_stats(loaded.copy(), names, blocks, progress))


def calibration_key(loaded: LoadedModel, what: str, settings: CalibrationSettings, *extra: Hashable) -> tuple:
    """The cache key of something computed from ``loaded`` on ``settings``: the model by its content."""
    return (model_digest(loaded.model), what, settings.key(), *extra)
