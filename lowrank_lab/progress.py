"""Progress reporting for long work.

The core never prints. A long function takes ``progress: ProgressFn | None`` and calls it as
``progress(done, total, message)``; the page binds it to ``st.progress`` and the command line
to a progress bar.

A job made of several steps (allocate, then compress block by block, then evaluate) reports
through :class:`Stages`: each stage has a relative weight, hands out an ordinary
:data:`ProgressFn`, and the job's sink receives one :class:`ProgressEvent` per call: the
fraction of the whole job (never going back), the step in words and an estimate of the
seconds left.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from lowrank_lab.errors import SettingsError


class ProgressFn(Protocol):
    """Called with the units done so far, the total, and a short message."""

    def __call__(self, done: int, total: int, message: str) -> None: ...


def report(progress: ProgressFn | None, done: int, total: int, message: str = "") -> None:
    """Call ``progress`` if one was given."""
    if progress is not None:
        progress(done, total, message)


@dataclass(frozen=True)
class ProgressEvent:
    """Where a whole job stands.

    Attributes:
        fraction: the share of the whole job done, in [0, 1]; never goes back.
        step: the current step in words, e.g. ``"block 7/30: whitening q/k/v"``.
        eta_s: seconds left for the whole job, or None until it can be estimated.
    """

    fraction: float
    step: str
    eta_s: float | None

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0 or math.isnan(self.fraction):
            raise SettingsError(f"a progress fraction must lie in [0, 1], got {self.fraction!r}")
        if self.eta_s is not None and (self.eta_s < 0 or not math.isfinite(self.eta_s)):
            raise SettingsError(f"a time left must be a finite number of seconds ≥ 0, got {self.eta_s!r}")


ProgressSink = Callable[[ProgressEvent], None]

# No estimate before this share of the job is done: the first seconds (imports, a model
# load) say little about the rate of the rest.
_ETA_AFTER = 0.02


class Stages:
    """One job split into named stages with relative weights; each stage hands out a ProgressFn.

    A stage's ``progress(done, total, message)`` maps ``done/total`` into that stage's slice of
    the job. The fraction sent to the sink never goes back (a stage that restarts its count, or
    a stage skipped, cannot move the bar backwards), and the time left is the elapsed time
    scaled by the share still to do. Stages may be entered in any order and skipped; calling
    :meth:`finish` sends 1.0.

    Args:
        sink: receives every :class:`ProgressEvent`; None discards them.
        weights: stage name → relative weight (> 0). Their order is the job's order.
        clock: seconds, monotonic (for tests).

    Raises:
        SettingsError: no stages, or a weight that is not a positive finite number.
    """

    def __init__(
        self,
        sink: ProgressSink | None,
        weights: Mapping[str, float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not weights:
            raise SettingsError("a job needs at least one stage with a weight")
        for name, w in weights.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
                raise SettingsError(f"the weight of stage {name!r} must be a positive number, got {w!r}")
        total = float(sum(weights.values()))
        self._sink = sink
        self._clock = clock
        self._start = clock()
        self._lock = threading.Lock()
        self._fraction = 0.0
        self._offsets: dict[str, tuple[float, float]] = {}
        at = 0.0
        for name, w in weights.items():
            self._offsets[name] = (at, w / total)
            at += w / total

    @property
    def fraction(self) -> float:
        """The share of the job reported so far."""
        return self._fraction

    def stage(self, name: str) -> ProgressFn:
        """The progress callback of one stage.

        Raises:
            SettingsError: ``name`` is not one of the stages.
        """
        if name not in self._offsets:
            raise SettingsError(f"unknown stage {name!r}; the job's stages are {', '.join(self._offsets)}")
        start, width = self._offsets[name]

        def fn(done: int, total: int, message: str) -> None:
            share = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
            self._emit(start + width * share, message or name)

        return fn

    def finish(self, message: str = "done") -> None:
        """Report the whole job done."""
        self._emit(1.0, message)

    def _emit(self, fraction: float, step: str) -> None:
        with self._lock:
            fraction = min(max(fraction, self._fraction), 1.0)
            self._fraction = fraction
            elapsed = self._clock() - self._start
            eta = None
            if fraction >= 1.0:
                eta = 0.0
            elif fraction >= _ETA_AFTER and elapsed > 0:
                eta = elapsed * (1.0 - fraction) / fraction
            event = ProgressEvent(fraction, step, eta)
        if self._sink is not None:
            self._sink(event)
