"""The fixed mmap threshold returns a large freed tensor to the system (glibc), measured in fresh processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from lowrank_lab.allocator import release_large_blocks

CHURN = textwrap.dedent(
    """
    import sys, torch
    from lowrank_lab.allocator import release_large_blocks
    if sys.argv[1] == "fixed":
        assert release_large_blocks()
    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    first = torch.ones(5_000_000)  # 20 MB, a mapping of its own
    del first  # freeing a mapping raises glibc's own threshold to 20 MB
    base = rss_mb()
    second = torch.ones(5_000_000)  # from the heap once the threshold rose
    pin = torch.ones(1000)  # allocated after it: the heap cannot shrink below it
    del second
    print(rss_mb() - base)
    """
)


def _kept(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_freed_large_tensor_goes_back_to_the_system_with_the_fixed_threshold():
    assert release_large_blocks()
    dynamic, fixed = _kept("dynamic"), _kept("fixed")
    assert fixed < 2, f"{fixed:.0f} MB still resident after freeing a 20 MB tensor"
    assert dynamic > 15, f"glibc's own threshold kept only {dynamic:.0f} MB: this test no longer shows the difference"
