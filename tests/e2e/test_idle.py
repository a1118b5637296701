"""An idle server idles: `make app` (the README's way), every page visited, then its CPU over a few seconds.

The CPU time comes from /proc (utime + stime of every process in the server's process group),
so it measures the server's own work, not how busy the machine is. Target: under 2% of one
core while a browser tab stays open on the app and nobody does anything.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, open_page, serve, wait_until_idle

pytestmark = pytest.mark.e2e
tomllib = pytest.importorskip("tomllib")  # Python 3.11+

IDLE_SECONDS = 6.0
TARGET = 0.02  # of one core
PAGES = (
    ("Spectra", "Heatmap metric"),
    ("Ranks", "Rank per kind"),
    ("LoRA", "LoRA fine-tune"),
    ("Export", "Download what you made"),
    ("Compare", "Take a second model"),
)


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process whose process group is ``pgid``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[2]) == pgid:  # field 5 of stat: the process group
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15: utime, stime
    return total / tick


def test_config_turns_the_watcher_and_usage_stats_off():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["fileWatcherType"] == "none"
    assert config["server"]["runOnSave"] is False
    assert config["server"]["address"] == "localhost"
    assert config["browser"]["gatherUsageStats"] is False


def test_idle_server_uses_under_two_percent_of_a_core(chromium, tmp_path):
    with serve("tiny-llama", tmp_path / "streamlit.log") as server:
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server.url)
        page.get_by_text("Where to go next").wait_for(timeout=120_000)
        wait_until_idle(page)
        for name, marker in PAGES:
            open_page(page, name, marker)
        page.wait_for_timeout(2000)  # let the last rerun and its messages settle
        before, start = group_cpu_seconds(server.proc.pid), time.monotonic()
        time.sleep(IDLE_SECONDS)
        used, elapsed = group_cpu_seconds(server.proc.pid) - before, time.monotonic() - start
        share = used / elapsed
        print(f"\nidle server CPU: {used:.3f} s over {elapsed:.1f} s = {100 * share:.2f}% of one core "
              f"(target < {100 * TARGET:.0f}%)")  # fmt: skip
        log = server.log.read_text()
        assert "Inotify" not in log and "Watching" not in log, log[-2000:]
        assert share < TARGET, f"the idle server used {100 * share:.2f}% of a core"
