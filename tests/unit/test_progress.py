"""The progress model: stages map their own counts into one job fraction that never goes back."""

from __future__ import annotations

import pytest

from lowrank_lab.errors import SettingsError
from lowrank_lab.progress import ProgressEvent, Stages


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_stages_map_into_their_slice_and_never_go_back():
    events: list[ProgressEvent] = []
    clock = Clock()
    job = Stages(events.append, {"allocate": 1, "compress": 3}, clock=clock)
    clock.now = 10
    job.stage("allocate")(1, 2, "gradients")
    assert events[-1].fraction == pytest.approx(0.125)
    assert events[-1].step == "gradients"
    assert events[-1].eta_s == pytest.approx(10 * 0.875 / 0.125)
    clock.now = 20
    job.stage("compress")(0, 30, "block 1/30")
    assert events[-1].fraction == pytest.approx(0.25)
    job.stage("allocate")(0, 2, "restarted")  # an earlier stage cannot pull the bar back
    assert events[-1].fraction == pytest.approx(0.25)
    job.stage("compress")(15, 30, "")
    assert events[-1].fraction == pytest.approx(0.625)
    assert events[-1].step == "compress"  # no message: the stage's name
    job.finish()
    assert events[-1] == ProgressEvent(1.0, "done", 0.0)
    assert [e.fraction for e in events] == sorted(e.fraction for e in events)


def test_no_estimate_at_the_very_start_and_a_zero_total_counts_as_nothing_done():
    events: list[ProgressEvent] = []
    clock = Clock()
    job = Stages(events.append, {"only": 1}, clock=clock)
    clock.now = 5
    job.stage("only")(1, 100, "")
    assert events[-1].eta_s is None
    job.stage("only")(3, 0, "")
    assert events[-1].fraction == pytest.approx(0.01)


def test_a_job_without_a_sink_still_counts():
    job = Stages(None, {"a": 1, "b": 1})
    job.stage("b")(1, 1, "")
    assert job.fraction == pytest.approx(1.0)


@pytest.mark.parametrize(
    "weights, match",
    [({}, "at least one stage"), ({"a": 0}, "'a'"), ({"a": -1.0}, "positive"), ({"a": float("nan")}, "positive")],
)
def test_bad_weights_are_refused(weights, match):
    with pytest.raises(SettingsError, match=match):
        Stages(None, weights)


def test_an_unknown_stage_names_the_known_ones():
    with pytest.raises(SettingsError, match="allocate, compress"):
        Stages(None, {"allocate": 1, "compress": 1}).stage("evaluate")


@pytest.mark.parametrize("fraction, eta", [(-0.1, None), (1.5, None), (0.5, -1.0), (0.5, float("inf"))])
def test_an_event_out_of_range_is_refused(fraction, eta):
    with pytest.raises(SettingsError):
        ProgressEvent(fraction, "x", eta)
