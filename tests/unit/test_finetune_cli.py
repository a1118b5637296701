"""``python -m lowrank_lab finetune``: figures in the JSON line, a PEFT adapter on disk, healing from a checkpoint."""

from __future__ import annotations

import json

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer

from lowrank_lab import load_compressed, load_model, save_compressed
from lowrank_lab.cli import main
from tests.unit.export_support import compressed_model, logits

FAST = ["--steps", "4", "--max-seq-len", "32", "--r", "4", "--lr", "1e-2", "--eval-every", "2", "--json"]


def _run(capsys, *argv) -> tuple[int, dict]:
    code = main(["finetune", *argv])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_finetune_writes_a_peft_adapter_and_prints_the_figures(tmp_path, capsys, tiny_llama):
    code, out = _run(capsys, "--model", "tiny-llama", "--out", str(tmp_path / "a"), *FAST)
    assert code == 0 and out["ok"] and out["command"] == "finetune" and out["base"] == "original"
    assert out["steps_done"] == 4 and out["tokens"] == 4 * 4 * 32 and out["tokens_per_s"] > 0
    assert out["val_loss_after"] < out["val_loss_before"]
    assert out["settings"]["r"] == 4 and out["data"] == "domain-text"
    reloaded = PeftModel.from_pretrained(load_model("tiny-llama").copy(), out["out"])
    assert not torch.allclose(logits(reloaded), logits(tiny_llama.model), atol=1e-4)


def test_finetune_heals_a_compressed_checkpoint_and_reads_an_uploaded_file(tmp_path, capsys, tiny_llama):
    folder = save_compressed(compressed_model(tiny_llama, keep=0.5), tmp_path / "ckpt")
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"Say {i}", "response": f"{i}"}) for i in range(30)), "utf-8")
    code, out = _run(
        capsys,
        "--model",
        "tiny-llama",
        "--compressed",
        str(folder),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "h"),
        *FAST,
    )
    assert code == 0 and out["base"] == "compressed" and out["data"] == "qa.jsonl"
    assert out["train_examples"] == 27 and out["validation_examples"] == 3
    base = load_compressed(tmp_path / "h" / "base").model
    reloaded = PeftModel.from_pretrained(base, out["out"])
    adapted = [name for name, m in reloaded.named_modules() if isinstance(m, LoraLayer)]
    assert adapted and all(name.endswith((".A", ".B")) for name in adapted)


def test_finetune_bad_input_exits_2_and_trains_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops}\n', encoding="utf-8")
    code, out = _run(capsys, "--model", "tiny-llama", "--data", str(bad), "--out", str(tmp_path / "x"), *FAST)
    assert code == 2 and not out["ok"] and "bad.jsonl, line 2: not valid JSON" in out["error"]
    assert not (tmp_path / "x").exists()
    code, out = _run(capsys, "--model", "tiny-llama", "--r", "0", "--json")
    assert code == 2 and "--r 0 is too small" in out["error"]
