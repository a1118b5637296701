"""``accelerate launch`` runs the finetune command; under several processes exactly one writes.

These start real launchers and real processes (two CPU processes that train together over
gloo), so they are marked slow.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
FINETUNE = ["-m", "lowrank_lab", "finetune", "--model", "tiny-llama", "--steps", "2", "--eval-every", "0", "--json"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(launcher: list[str], out: Path) -> tuple[list[dict], str]:
    proc = subprocess.run(
        [ACCELERATE, "launch", *launcher, *FINETUNE, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return lines, proc.stderr


def _check_adapter(out: Path) -> None:
    from safetensors import safe_open

    from lowrank_lab.outputs import MANIFEST

    files = ["README.md", "adapter_config.json", "adapter_model.safetensors", MANIFEST]  # written by lowrank_lab
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"
    with safe_open(str(out / "adapter_model.safetensors"), framework="pt") as f:
        assert any("lora_A" in k for k in f.keys())


def test_the_readme_command_writes_one_adapter_and_one_json_line(tmp_path):
    lines, _ = _launch(["--cpu", "--num_processes", "2"], tmp_path / "adapter")
    assert len(lines) == 1 and lines[0]["ok"] and lines[0]["steps_done"] == 2
    assert lines[0]["out"] == str(tmp_path / "adapter")
    _check_adapter(tmp_path / "adapter")


def test_two_processes_train_together_and_only_the_first_writes(tmp_path):
    # --multi_gpu on a machine without one starts two CPU processes (torchrun) that train
    # together over gloo: the finetune loop asks Accelerate for the CPU where CUDA is missing.
    launcher = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launcher += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    lines, _ = _launch(launcher, tmp_path / "adapter")
    assert len(lines) == 1, lines
    assert lines[0]["ok"] and lines[0]["processes"] == 2 and lines[0]["out"] == str(tmp_path / "adapter")
    _check_adapter(tmp_path / "adapter")
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no second, half-written or staged folder
