"""Long work in a background thread, with one progress model: the step, one bar, the time left, Stop.

A :class:`Job` runs ``work(job)`` in a daemon thread. The work reports through
``job.stage(name)`` (a :data:`~lowrank_lab.progress.ProgressFn` per stage of
:class:`~lowrank_lab.progress.Stages`), so the page always knows the current step, the share
of the whole job done and an estimate of the time left (a :class:`ProgressEvent`). ``stop()``
can be pressed from the first second: while the job is cancellable the next progress report
raises :class:`~lowrank_lab.errors.Cancelled`, which ends the work the way any error would
(hooks removed, nothing half-done cached); work that can stop more gently (a fine-tune keeps
the steps it took) registers ``on_stop`` and turns ``cancellable`` off.

The thread never touches Streamlit: it only sets attributes the page reads on each rerun.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from lowrank_lab.allocator import release_large_blocks
from lowrank_lab.errors import Cancelled, LowrankLabError
from lowrank_lab.progress import ProgressEvent, ProgressFn, Stages

T = TypeVar("T")


class Job(Generic[T]):
    """One long piece of work and what the page shows of it.

    Args:
        title: what the job is, for people ("Compressing", "Training").
        weights: stage name → relative share of the time (see :class:`Stages`).
        work: called in the thread as ``work(job)``; its return value becomes ``result``.

    Attributes:
        event: the latest :class:`ProgressEvent` (the first stage's name until work reports).
        result: what ``work`` returned, once done (None on error or cancel).
        error: the message of the error that ended it, or None.
        cancelled: True when a Stop ended it before it finished.
        cancellable: while True, a Stop ends the work at its next progress report.
        seconds: wall time from start to end (so far, while it runs).
    """

    def __init__(self, title: str, weights: Mapping[str, float], work: Callable[[Job[T]], T]):
        self.title = title
        self._stages = Stages(self._on_event, weights)
        self.event = ProgressEvent(0.0, f"starting: {next(iter(weights))}", None)
        self.result: T | None = None
        self.error: str | None = None
        self.cancelled = False
        self.cancellable = True
        self._work = work
        self._stop = threading.Event()
        self._on_stop: list[Callable[[], None]] = []
        self._done = threading.Event()
        self._started = time.monotonic()
        self._ended: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"lowrank-{title.lower()}", daemon=True)

    def start(self) -> Job[T]:
        release_large_blocks()  # the app's process: a job's large tensors go back to the system when freed
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stage(self, name: str) -> ProgressFn:
        """The progress callback of one stage of this job."""
        return self._stages.stage(name)

    def tell(self, step: str) -> None:
        """Name the step under way without moving the bar (a step that reports nothing itself)."""
        self._on_event(ProgressEvent(self._stages.fraction, step, self.event.eta_s))

    def on_stop(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` when Stop is pressed (e.g. a fine-tune's ``TrainControl.stop``)."""
        self._on_stop.append(fn)

    def stop(self) -> None:
        """Ask the work to stop: at its next progress report while cancellable, else through on_stop."""
        self._stop.set()
        for fn in self._on_stop:
            fn()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def seconds(self) -> float:
        return (self._ended or time.monotonic()) - self._started

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the job (at most ``timeout`` seconds); True when it is done."""
        return self._done.wait(timeout)

    def check(self) -> None:
        """Raise Cancelled if Stop was pressed and the job is cancellable (for loops without progress)."""
        if self.cancellable and self._stop.is_set():
            raise Cancelled(f"{self.title} stopped")

    def _on_event(self, event: ProgressEvent) -> None:
        self.event = event
        self.check()

    def _run(self) -> None:
        try:
            self.result = self._work(self)
        except Cancelled:
            self.cancelled = True
        except LowrankLabError as err:
            self.error = str(err)
        except Exception as err:  # a background thread has no one else to tell: the page shows it
            self.error = f"{self.title.lower()} failed: {type(err).__name__}: {err}"
        finally:
            self._ended = time.monotonic()
            self._done.set()


def eta_text(event: ProgressEvent) -> str:
    """``about 40 s left``, ``about 3 min left``, or that it is still estimating."""
    if event.eta_s is None:
        return "estimating the time left…"
    if event.eta_s < 90:
        return f"about {max(1, round(event.eta_s))} s left"
    return f"about {round(event.eta_s / 60)} min left"
