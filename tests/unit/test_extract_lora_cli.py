"""``python -m lowrank_lab extract-lora``: an adapter from two model folders, and every bad input exits 2, writing nothing."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import PeftModel

from lowrank_lab.cli import main
from lowrank_lab.runs import RunStore
from tests.unit.delta_support import logits, lora_merged


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWRANK_LAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def folders(tiny_llama, tmp_path):
    tuned = lora_merged(tiny_llama.model, 4, ("q_proj", "v_proj", "down_proj"))
    tiny_llama.model.save_pretrained(tmp_path / "base")
    tiny_llama.tokenizer.save_pretrained(tmp_path / "base")
    tuned.save_pretrained(tmp_path / "tuned")
    tiny_llama.tokenizer.save_pretrained(tmp_path / "tuned")
    return tmp_path / "base", tmp_path / "tuned", tuned


def _last(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_extracts_an_adapter_that_peft_loads(tiny_llama, folders, tmp_path, capsys):
    base, tuned_dir, tuned = folders
    out = tmp_path / "adapter"
    args = ["extract-lora", "--base", str(base), "--tuned", str(tuned_dir), "--energy", "0.99", "--out", str(out)]
    assert main([*args, "--json"]) == 0
    result = _last(capsys.readouterr().out)
    assert result["ok"] and result["command"] == "extract-lora"
    assert result["matrices_changed"] == 6 and set(result["ranks"].values()) == {4}
    assert result["measured_relative_error"] < 1e-6 and result["folder"] == str(out)
    model = PeftModel.from_pretrained(tiny_llama.copy(), str(out))
    assert torch.allclose(logits(model), logits(tuned), atol=1e-5)
    # Again with a fixed rank into the same folder: refused without --overwrite, done with it.
    assert main(["extract-lora", "--base", str(base), "--tuned", str(tuned_dir), "--rank", "2", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["extract-lora", "--base", str(base), "--tuned", str(tuned_dir), "--rank", "2", "--out", str(out),
                 "--overwrite"]) == 0  # fmt: skip
    assert "LoRA on 6 matrices (rank 2)" in capsys.readouterr().out
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2


def test_an_extraction_is_recorded_as_a_run_that_does_not_own_the_folder(folders, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LOWRANK_LAB_RUNS", str(tmp_path / "runs.sqlite3"))
    base, tuned_dir, _ = folders
    out = tmp_path / "adapter"
    assert main(["extract-lora", "--base", str(base), "--tuned", str(tuned_dir), "--rank", "4", "--out", str(out),
                 "--json"]) == 0  # fmt: skip
    result = _last(capsys.readouterr().out)
    store = RunStore()
    run = store.get(result["run"])
    assert run.row.kind == "extraction" and run.row.model == str(base)
    assert run.settings["tuned"] == str(tuned_dir) and run.settings["extraction"]["mode"] == "rank"
    assert run.figures["adapter_params"] == result["adapter_params"]
    assert run.plan.as_dict() == result["ranks"]
    [artifact] = run.row.artifacts
    assert artifact.path == str(out.resolve()) and not artifact.owned
    store.delete(run.row.id)  # the user's --out folder is not the run's to delete
    assert (out / "adapter_config.json").is_file()
    assert main(["extract-lora", "--base", str(base), "--tuned", str(tuned_dir), "--rank", "4",
                 "--out", str(tmp_path / "again"), "--no-record", "--json"]) == 0  # fmt: skip
    assert "run" not in _last(capsys.readouterr().out) and len(store.runs()) == 0


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--energy", "0"], "(0, 1]"),
        (["--energy", "1.5"], "(0, 1]"),
        (["--energy", "nan"], "(0, 1]"),
        (["--budget", "0"], "parameter budget"),
        (["--budget", "2"], "parameter budget"),
        (["--rank", "0"], "positive integer"),
        (["--rank", "2.5"], "positive integer"),
        (["--device", "tpu"], "use cpu or cuda"),
    ],
)
def test_bad_settings_exit_2_and_write_nothing(folders, tmp_path, capsys, extra, words):
    base, tuned_dir, _ = folders
    out = tmp_path / "adapter"
    assert (
        main(["extract-lora", "--base", str(base), "--tuned", str(tuned_dir), "--out", str(out), *extra, "--json"]) == 2
    )
    captured = capsys.readouterr()
    assert words in captured.err and _last(captured.out)["ok"] is False
    assert not out.exists()


def test_bad_pairs_exit_2_and_write_nothing(tiny_llama, tiny_gpt2, folders, tmp_path, capsys):
    base, tuned_dir, _ = folders
    out = tmp_path / "adapter"
    tiny_gpt2.model.save_pretrained(tmp_path / "gpt2")
    broken = copy.deepcopy(tiny_llama.model)
    with torch.no_grad():
        broken.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    broken.save_pretrained(tmp_path / "broken")
    cases = [
        ([str(base), str(base)], "both name"),
        ([str(base), str(tmp_path / "gpt2")], "LlamaForCausalLM"),
        ([str(base), str(tmp_path / "broken")], "non-finite"),
        ([str(base), str(tmp_path / "missing")], "no model named"),
        (["tiny-llama", "tiny-llama"], "both name"),
    ]
    for (b, t), words in cases:
        assert main(["extract-lora", "--base", b, "--tuned", t, "--out", str(out)]) == 2, words
        assert words in capsys.readouterr().err
        assert not out.exists()


def test_an_output_folder_that_is_not_ours_is_left_alone(folders, tmp_path, capsys):
    base, tuned_dir, _ = folders
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    for extra in ([], ["--overwrite"]):
        assert main(["extract-lora", "--base", str(base), "--tuned", str(tuned_dir), "--out", str(mine), *extra]) == 2
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert main(["extract-lora", "--base", str(base), "--tuned", str(tuned_dir), "--out", str(base / "x")]) == 2
    assert "lies inside the source model" in capsys.readouterr().err
    assert not (base / "x").exists()
