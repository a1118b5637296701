"""Bad checkpoints and bad export settings: a clear CheckpointError naming the file, never a half-loaded model."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest
from safetensors.torch import load_file, save_file

from lowrank_lab import CheckpointError, LowrankLabError, load_compressed, load_model, save_compressed
from lowrank_lab.checkpoint.unzip import extract_zip, safe_member_name
from lowrank_lab.export import safe_folder_name, save_dense
from tests.unit.export_support import compressed_model

Q = "model.layers.0.self_attn.q_proj"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_llama):
    compressed = compressed_model(tiny_llama, keep=0.5)
    return save_compressed(compressed, tmp_path_factory.mktemp("good") / "ckpt")


@pytest.fixture
def broken(tmp_path, checkpoint):
    """A fresh copy of the good checkpoint, to break."""
    return shutil.copytree(checkpoint, tmp_path / "ckpt")


def _edit_config(folder, change):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def _edit_tensors(folder, change):
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))


def _truncate(folder):
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _drop_section(folder):
    _edit_config(folder, lambda c: c.pop("lowrank"))


def _wrong_rank(folder):
    _edit_config(folder, lambda c: c["lowrank"]["ranks"].update({Q: c["lowrank"]["ranks"][Q] + 3}))


def _unknown_module(folder):
    _edit_config(folder, lambda c: c["lowrank"]["ranks"].update({"model.layers.0.self_attn.nope": 4}))


def _bad_rank_value(folder):
    _edit_config(folder, lambda c: c["lowrank"]["ranks"].update({Q: "16"}))


def _newer_format(folder):
    _edit_config(folder, lambda c: c["lowrank"].update(format_version=99))


def _unknown_architecture(folder):
    _edit_config(folder, lambda c: c["lowrank"].update(architecture="EvilForCausalLM"))


def _drop_dense_tensor(folder):
    _edit_tensors(folder, lambda t: t.pop("model.layers.1.post_attention_layernorm.weight"))


def _drop_factor(folder):
    _edit_tensors(folder, lambda t: t.pop(f"{Q}.B.weight"))


def _extra_tensor(folder):
    _edit_tensors(folder, lambda t: t.update({f"{Q}.weight": t[f"{Q}.A.weight"].clone()}))


def _wrong_dense_shape(folder):
    _edit_tensors(folder, lambda t: t.update({"model.norm.weight": t["model.norm.weight"][:32].clone()}))


def _config_not_json(folder):
    (folder / "config.json").write_text('{"lowrank": ')


def _no_weights(folder):
    (folder / "model.safetensors").unlink()


def _garbage_header(folder):
    (folder / "model.safetensors").write_bytes((40).to_bytes(8, "little") + b"not json at all, not json at all, nope!!")


CASES = [
    (_truncate, "model.safetensors", "truncated"),
    (_garbage_header, "model.safetensors", "header cannot be read"),
    (_no_weights, "model.safetensors", "is missing"),
    (_drop_section, "config.json", "no 'lowrank' section"),
    (_config_not_json, "config.json", "not valid JSON"),
    (_wrong_rank, "model.safetensors", f"contradicts config.json: the lowrank section gives {Q} rank"),
    (_unknown_module, "model.safetensors", "lacks the tensor model.layers.0.self_attn.nope.A.weight"),
    (_bad_rank_value, "config.json", "ranks must be positive integers"),
    (_newer_format, "config.json", "format version 99"),
    (_unknown_architecture, "config.json", "'EvilForCausalLM' is not a transformers model class"),
    (
        _drop_dense_tensor,
        "model.safetensors",
        "missing 1 tensor(s) the model needs: model.layers.1.post_attention_layernorm",
    ),
    (_drop_factor, "model.safetensors", f"lacks the tensor {Q}.B.weight"),
    (_extra_tensor, "model.safetensors", f"tensor(s) the model does not have: {Q}.weight"),
    (_wrong_dense_shape, "model.safetensors", "model.norm.weight has shape [32]"),
]


@pytest.mark.parametrize(("damage", "file", "problem"), CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_a_damaged_checkpoint_is_refused_naming_the_file_and_problem(broken, damage, file, problem):
    damage(broken)
    with pytest.raises(CheckpointError) as err:
        load_compressed(broken)
    message = str(err.value)
    assert str(broken / file) in message
    assert problem in message


def test_load_model_refuses_a_damaged_checkpoint_with_the_same_message(broken):
    _wrong_rank(broken)
    with pytest.raises(LowrankLabError, match="contradicts config.json"):
        load_model(str(broken))


def test_a_folder_that_is_not_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="is not a folder"):
        load_compressed(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_compressed(tmp_path)


@pytest.mark.parametrize("dtype", ["int8", "float64", "fp8", "", None])
def test_an_unknown_export_dtype_is_refused_and_nothing_is_written(tmp_path, tiny_llama, dtype):
    compressed = compressed_model(tiny_llama, keep=0.5)
    for save in (save_compressed, save_dense):
        with pytest.raises(CheckpointError, match=r"dtype .* must be one of float32, float16, bfloat16") as err:
            save(compressed, tmp_path / "out", dtype=dtype)
        assert str(tmp_path / "out") in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_zip_with_unsafe_names_is_not_extracted(tmp_path):
    bad = tmp_path / "evil.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("ckpt/config.json", "{}")
        zf.writestr("../../outside.txt", "gotcha")
    with pytest.raises(CheckpointError, match="unsafe file names"):
        load_compressed(bad)
    assert not (tmp_path.parent / "outside.txt").exists()
    not_zip = tmp_path / "fake.zip"
    not_zip.write_bytes(b"PK not really")
    with pytest.raises(CheckpointError, match="not a valid zip"):
        extract_zip(not_zip, tmp_path / "x")


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("ckpt/config.json", "ckpt/config.json"),
        ("/etc/passwd", "etc/passwd"),
        ("a/../../b", "a/b"),
        ("..\\..\\windows\\x.dll", "windows/x.dll"),
        ("C:/Users/x", "Users/x"),
        ("./a/./b", "a/b"),
    ],
)
def test_zip_member_names_are_sanitised(name, safe):
    assert safe_member_name(name) == safe


@pytest.mark.parametrize(
    ("name", "safe"),
    [("smollm2-135m", "smollm2-135m"), ("/home/me/My Model", "My-Model"), ("../x", "x"), ("a b:c*", "a-b-c")],
)
def test_folder_names_are_sanitised(name, safe):
    assert safe_folder_name(name) == safe


@pytest.mark.parametrize("name", ["", "..", "///", "../..", "***"])
def test_unusable_names_are_refused(name):
    with pytest.raises(CheckpointError):
        safe_folder_name(name)
