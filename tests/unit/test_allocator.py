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


def _written_back(path) -> None:
    """A file just written has dirty pages, which the kernel reclaims only once they are on disk."""
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mapped_rss_kb(path) -> int:
    """Resident kB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, current = 0, None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's header line
                current = fields[5] if len(fields) > 5 else ""
            elif fields[0] == "Rss:" and current == str(path):
                total += int(fields[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc/self/smaps")
def test_page_out_hands_back_a_mapped_file_s_pages_and_keeps_its_values(tmp_path):
    import torch

    from lowrank_lab.allocator import page_out

    path = tmp_path / "weights.bin"
    values = torch.randn(2_000_000)  # 8 MB
    path.write_bytes(values.numpy().tobytes())
    _written_back(path)
    mapped = torch.from_file(str(path), shared=False, size=2_000_000, dtype=torch.float32)  # a private mapping
    assert torch.equal(mapped, values)  # every page read: resident
    assert _mapped_rss_kb(path) > 7000
    assert page_out(mapped)
    assert _mapped_rss_kb(path) < 100
    assert torch.equal(mapped, values)  # read again from the file
    assert not page_out(torch.randn(2_000_000))  # anonymous memory is left alone
    assert not page_out(mapped[:10])  # less than a page


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc/self/smaps")
def test_the_engine_keeps_one_block_of_a_mapped_model_resident(tiny_llama, tmp_path):
    import torch

    from lowrank_lab import load_model
    from lowrank_lab.allocator import page_out_module
    from lowrank_lab.compress.blocks import block_layout
    from lowrank_lab.compress.sources import MemorySource, materialize, materialize_outside, release, skeleton

    tiny_llama.model.save_pretrained(tmp_path)  # a folder of this test's own: no other process maps it
    tiny_llama.tokenizer.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    _written_back(weights)
    loaded = load_model(str(tmp_path))
    state = {n: t.detach().clone() for n, t in loaded.model.state_dict().items()}
    read = _mapped_rss_kb(weights)
    assert read > 0, "the loaded model is not a mapping of its file; this test shows nothing"
    source = MemorySource(loaded)
    model = skeleton(source)
    layout = block_layout(model)
    for k in range(layout.count):
        block = materialize(model, layout.name(k), source)
        assert any(p.abs().sum() > 0 for p in block.parameters())
        release(model, layout.name(k))
    materialize_outside(model, layout.prefix, source)
    assert _mapped_rss_kb(weights) < read / 2
    assert all(torch.equal(t, state[n]) for n, t in loaded.model.state_dict().items())  # nothing changed
    # The whole model at once (what compare() does once the dense model is measured).
    assert _mapped_rss_kb(weights) >= read  # read again by the comparison above
    assert page_out_module(loaded.model) > 0
    assert _mapped_rss_kb(weights) < read / 2
