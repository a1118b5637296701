"""``python -m lowrank_lab evaluate``: perplexity of any checkpoint on the built-in evaluation text."""

from __future__ import annotations

import json

import pytest

from lowrank_lab import save_compressed
from lowrank_lab.cli import main
from lowrank_lab.data import builtin_text
from lowrank_lab.evaluate import perplexity
from tests.unit.export_support import compressed_model

ARGS = ["--seq-len", "64", "--max-blocks", "2", "--json"]


def _run(capsys, *argv) -> tuple[int, dict]:
    code = main(["evaluate", *argv])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_evaluate_a_compressed_checkpoint_gives_the_in_memory_perplexity(tmp_path, capsys, tiny_llama):
    compressed = compressed_model(tiny_llama, keep=0.5)
    folder = save_compressed(compressed, tmp_path / "ckpt")
    code, out = _run(capsys, "--model", str(folder), *ARGS)
    assert code == 0 and out["ok"] and out["command"] == "evaluate"
    expected = perplexity(compressed.model, compressed.tokenizer, builtin_text("evaluation"), seq_len=64, max_blocks=2)
    assert out["perplexity"] == pytest.approx(expected, rel=1e-6)
    assert out["factorized_layers"] == len(compressed.plan)
    assert out["eval_tokens"] == 128 and out["blocks"] == 2
    assert out["params"] == sum(p.numel() for p in compressed.model.parameters())


def test_evaluate_a_builtin_name_and_a_hugging_face_folder(tmp_path, capsys, tiny_llama):
    code, by_name = _run(capsys, "--model", "tiny-llama", *ARGS)
    assert code == 0 and by_name["factorized_layers"] == 0
    tiny_llama.model.save_pretrained(tmp_path / "hf")
    tiny_llama.tokenizer.save_pretrained(tmp_path / "hf")
    code, by_folder = _run(capsys, "--model", str(tmp_path / "hf"), *ARGS)
    assert code == 0 and by_folder["perplexity"] == pytest.approx(by_name["perplexity"], rel=1e-6)


def test_evaluate_prints_a_readable_line_without_json(capsys):
    assert main(["evaluate", "--model", "tiny-gpt2", "--seq-len", "64", "--max-blocks", "1"]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "dense" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "tiny-bert"], "no language-model head"),
        (["--model", "tiny-llama", "--seq-len", "1"], "--seq-len 2 or more"),
    ],
)
def test_evaluate_bad_input_exits_2_with_the_reason(capsys, argv, message):
    code = main(["evaluate", *argv, "--json"])
    captured = capsys.readouterr()
    assert code == 2
    assert message in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["ok"] is False


def test_evaluate_a_damaged_checkpoint_exits_2(tmp_path, capsys, tiny_llama):
    folder = save_compressed(compressed_model(tiny_llama, keep=0.5), tmp_path / "ckpt")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:1000])
    code = main(["evaluate", "--model", str(folder), "--json"])
    assert code == 2 and "model.safetensors is not a valid safetensors file" in capsys.readouterr().err
