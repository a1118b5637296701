"""The one exception family of lowrank_lab.

Every error a user can cause derives from :class:`LowrankLabError`. Messages name the bad
value and say how to fix it, so pages can show them as they are (``st.error(str(err))``) and
the command line can print them without a traceback.
"""

from __future__ import annotations


class LowrankLabError(Exception):
    """Base class of every error lowrank_lab raises on bad input."""


class ModelLoadError(LowrankLabError):
    """A model could not be found, read or built."""


class NoWeightMatricesError(LowrankLabError):
    """A model has no 2-D weight matrix to analyse or compress."""


class InvalidRankPlan(LowrankLabError):
    """A rank plan names unknown modules, holds bad ranks or is malformed."""


class DataError(LowrankLabError):
    """Text or a dataset is empty, too short, badly encoded or malformed."""


class SettingsError(LowrankLabError):
    """A configuration value is out of range or inconsistent."""


class CheckpointError(LowrankLabError):
    """A saved checkpoint is incomplete, corrupt or contradicts its config."""


class OutputError(LowrankLabError):
    """An output path is taken by something lowrank_lab did not write, unsafe, or not writable."""


class NonFiniteError(LowrankLabError):
    """A number that must be finite is NaN or infinite (a loss, a perplexity, a weight)."""


class ArgumentTypeError(SettingsError, TypeError):
    """An API function was given a value of the wrong type.

    It is both a :class:`SettingsError` (so pages and the command line show it like any bad
    setting) and a :class:`TypeError` (what Python callers expect for a wrong type).
    """


class ComparisonError(LowrankLabError):
    """Two models cannot be compared: different architectures, vocabularies or shapes, the same
    weights twice, or a non-finite weight."""


class RunStoreError(LowrankLabError):
    """The run store cannot be opened, read or written; the app goes on without it.

    Attributes:
        reason: ``corrupt``, ``newer``, ``read-only``, ``locked`` or ``io``, for callers that
            react differently (the message already says what happened and what to do).
    """

    def __init__(self, message: str, reason: str = "io"):
        super().__init__(message)
        self.reason = reason


class Cancelled(LowrankLabError):
    """Someone stopped a job on purpose (a Stop button): nothing is wrong, nothing was kept.

    A progress callback raises it to end the work at its next report; the work's own
    clean-up (hooks removed, nothing stored in a cache) runs as for any other error.
    """
