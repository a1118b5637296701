"""The README's Python examples run as written: every ```python block, in order, in one namespace.

The blocks are read from README.md itself, so an example that drifts from the API fails here.
Only the model changes: where the README loads the built-in ``smollm2-135m``, the test loads
the tiny random ``tiny-llama`` (same architecture family, seconds instead of minutes). Files
the examples write (``out/...``) go to a temporary folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BUILTIN, TINY = '"smollm2-135m"', '"tiny-llama"'


def readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_readme_has_python_examples_on_the_builtin_model():
    blocks = readme_python_blocks()
    assert len(blocks) >= 5
    assert sum(BUILTIN in block for block in blocks) >= 4  # the substitution below has work to do


@pytest.fixture
def one_torch_thread():
    """Torch on one thread while the examples run: on a busy two-core machine two threads wait on
    each other (a LoRA step takes ten times as long), and the suite's other workers hold a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_the_readme_python_examples_run(tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_examples"}
    for i, block in enumerate(readme_python_blocks(), start=1):
        code = compile(block.replace(BUILTIN, TINY), f"README.md, python block {i}", "exec")
        exec(code, namespace)  # noqa: S102 - the README's own examples, read from the repository

    # What the examples say they did, checked.
    out = tmp_path / "out"
    assert (out / "smollm2-80" / "model.safetensors").exists() and (out / "smol-lowrank.zip").exists()
    assert (out / "adapter" / "adapter_config.json").exists() and (out / "rank_pattern.json").exists()
    reloaded, model, loaded = namespace["reloaded"], namespace["model"], namespace["loaded"]
    assert reloaded.plan and reloaded.model.config.architectures == ["LlamaForCausalLM"]
    ids = torch.arange(16).unsqueeze(0)  # (1, 16)
    with torch.no_grad():
        diff = model.float()(input_ids=ids).logits - namespace["compressed"].model(input_ids=ids).logits
    assert diff.abs().max().item() < 0.05  # saved in float16: the same logits up to its rounding
    assert loaded.title == "smol-lowrank (compressed)"
