"""Progress reporting for long work.

The core never prints. A long function takes ``progress: ProgressFn | None`` and calls it as
``progress(done, total, message)``; the page binds it to ``st.progress`` and the command line
to a progress bar.
"""

from __future__ import annotations

from typing import Protocol


class ProgressFn(Protocol):
    """Called with the units done so far, the total, and a short message."""

    def __call__(self, done: int, total: int, message: str) -> None: ...


def report(progress: ProgressFn | None, done: int, total: int, message: str = "") -> None:
    """Call ``progress`` if one was given."""
    if progress is not None:
        progress(done, total, message)
