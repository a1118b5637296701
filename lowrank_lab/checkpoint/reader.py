"""Reading a compressed checkpoint folder: rebuild from config, swap in the factors, load strictly.

Every check runs before a model is returned, so a bad checkpoint raises
:class:`~lowrank_lab.errors.CheckpointError` naming the file and the problem and never
yields a half-loaded model. Nothing is downloaded and no remote code runs. The one public way
to open a checkpoint (folder, file or zip, with its tokenizer) is
:func:`lowrank_lab.models.load_compressed`, which reads it through :func:`load_checkpoint`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file
from torch import nn

from lowrank_lab.checkpoint.format import (
    CONFIG_FILE,
    INDEX_FILE,
    SECTION,
    WEIGHTS_FILE,
    LowrankSection,
    alias_map,
    factor_names,
    unique_state_dict,
)
from lowrank_lab.checkpoint.safetensors_file import tensor_shapes
from lowrank_lab.errors import CheckpointError
from lowrank_lab.layers import linear_dims
from lowrank_lab.lowrank import LowRankLinear, set_submodule


def read_section(folder: Path) -> tuple[dict, LowrankSection]:
    """Read ``config.json`` and its ``lowrank`` section.

    Raises:
        CheckpointError: the folder, the file or the section is missing or malformed.
    """
    config_path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder; pass the compressed checkpoint's folder")
    if not config_path.exists():
        raise CheckpointError(f"{config_path} is missing; a compressed checkpoint folder holds config.json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{config_path} is not valid JSON ({err}); export the checkpoint again") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path} does not hold a JSON object")
    return config, LowrankSection.from_config(config, config_path)


def load_checkpoint(folder: Path) -> tuple[nn.Module, LowrankSection]:
    """Load a checkpoint folder; returns the model (in its stored dtype, eval mode) and its section."""
    _, section = read_section(folder)
    files = weight_files(folder)
    weights = files[0] if len(files) == 1 else folder / INDEX_FILE
    shapes = {}
    for path in files:
        shapes.update(tensor_shapes(path))
    check_factor_shapes(section, shapes, weights)
    skeleton = build_model(folder, section)  # on the meta device: checks names and shapes for free
    aliases = alias_map(skeleton.state_dict(keep_vars=True))
    expected = {name: tuple(t.shape) for name, t in unique_state_dict(skeleton).items()}
    check_tensor_names(expected, shapes, weights)
    state = {}
    for path in files:
        try:
            state.update(load_file(str(path)))
        except Exception as err:  # a corrupt payload the header check could not see
            raise CheckpointError(f"{path} cannot be read ({type(err).__name__}: {err}); export it again") from None
    model = build_model(folder, section, materialize=True)
    with torch.no_grad():
        # assign: the model takes the loaded tensors themselves (no second copy in memory).
        model.load_state_dict(state, strict=False, assign=True)
    for alias, first in aliases.items():
        if alias != first:  # a tied name: point it at the tensor stored under the first name
            module, _, attr = alias.rpartition(".")
            source, _, source_attr = first.rpartition(".")
            setattr(model.get_submodule(module), attr, getattr(model.get_submodule(source), source_attr))
    left = [n for n, t in model.state_dict(keep_vars=True).items() if t.is_meta]
    if left:  # cannot happen after the checks above; never hand out a half-built model
        raise CheckpointError(f"{weights} left {', '.join(left[:5])} unloaded")
    model.eval()
    return model, section


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's safetensors files: ``model.safetensors``, or the shards its index lists.

    Raises:
        CheckpointError: the index is malformed or names a shard that is missing.
    """
    index = folder / INDEX_FILE
    if not index.exists():
        return [folder / WEIGHTS_FILE]
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted({str(v) for v in weight_map.values()})
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{index} is not a valid shard index ({err}); export the checkpoint again") from None
    files = [folder / n for n in names]
    bad = [n for n, p in zip(names, files) if p.parent != folder or not p.is_file()]
    if bad or not files:
        raise CheckpointError(f"{index} lists shards that are not in {folder}: {', '.join(bad[:3]) or 'none'}")
    return files


def _materialize(model: nn.Module) -> None:
    """Give a meta-device model real (uninitialised) memory, and compute its non-persistent buffers.

    Stored tensors are about to be assigned, so they are marked initialised and skipped; the
    buffers a checkpoint does not hold (rotary frequencies, position ids) are computed by the
    model's own initialisation, exactly as ``from_pretrained`` does it.
    """
    model.to_empty(device="cpu")
    for tensor in model.state_dict(keep_vars=True).values():
        tensor._is_hf_initialized = True
    model.initialize_weights()


def check_factor_shapes(section: LowrankSection, shapes: dict[str, tuple[int, ...]], weights: Path) -> None:
    """Check both factors of every factorized module exist and have the recorded rank.

    Raises:
        CheckpointError: a factor is missing, or its shape contradicts the config's rank.
    """
    for module, rank in section.ranks.items():
        a_name, b_name, bias_name = factor_names(module)
        for name in (a_name, b_name) + ((bias_name,) if module in section.bias else ()):
            if name not in shapes:
                raise CheckpointError(f"{weights} lacks the tensor {name} that config.json's lowrank section needs")
        a, b = shapes[a_name], shapes[b_name]
        if len(a) != 2 or len(b) != 2 or a[0] != rank or b[1] != rank:
            raise CheckpointError(
                f"{weights} contradicts config.json: the lowrank section gives {module} rank {rank}, "
                f"but its factors are {a_name} {list(a)} and {b_name} {list(b)} "
                f"(expected [{rank}, in] and [out, {rank}])"
            )


def check_tensor_names(expected: dict[str, tuple], shapes: dict[str, tuple], weights: Path) -> None:
    """Check the file holds exactly the tensors the rebuilt model stores, with the same shapes."""
    missing = [n for n in expected if n not in shapes]
    unexpected = [n for n in shapes if n not in expected]
    if missing:
        raise CheckpointError(
            f"{weights} is missing {len(missing)} tensor(s) the model needs: {', '.join(missing[:5])}"
            f"{' …' if len(missing) > 5 else ''}; export the checkpoint again"
        )
    if unexpected:
        raise CheckpointError(
            f"{weights} holds {len(unexpected)} tensor(s) the model does not have: {', '.join(unexpected[:5])}; "
            "its config.json does not describe these weights"
        )
    wrong = [(n, list(shapes[n]), list(s)) for n, s in expected.items() if tuple(shapes[n]) != s]
    if wrong:
        name, got, want = wrong[0]
        raise CheckpointError(
            f"{weights} does not match config.json: {name} has shape {got} but the architecture needs {want} "
            f"({len(wrong)} tensor(s) differ)"
        )


def _architecture_class(section: LowrankSection, config_path: Path):
    cls = getattr(transformers, section.architecture, None)
    if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
        return cls
    raise CheckpointError(
        f"{config_path}: architecture {section.architecture!r} is not a transformers model class; "
        "this checkpoint needs a transformers version that has it (remote code is never run)"
    )


def build_model(folder: Path, section: LowrankSection, materialize: bool = False) -> nn.Module:
    """The architecture from ``config.json`` with LowRankLinear at each ranked module.

    Args:
        folder: the checkpoint folder.
        section: its ``lowrank`` section.
        materialize: False: everything on the meta device (no memory; for checks). True: on
            the CPU with uninitialised weights (to be loaded) and computed non-persistent buffers.
    """
    config_path = folder / CONFIG_FILE
    cls = _architecture_class(section, config_path)
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        if hasattr(config, SECTION):
            delattr(config, SECTION)  # a stale section would mark a later dense save as compressed
        with torch.device("meta"):
            model = cls(config)
    except Exception as err:
        raise CheckpointError(
            f"{config_path} cannot build {section.architecture}: {type(err).__name__}: {err}"
        ) from None
    if materialize:
        _materialize(model)  # before the swap: the model's own init knows its own layers only
    for name, rank in section.ranks.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise CheckpointError(
                f"{config_path}: the lowrank section names {name}, which {section.architecture} does not have"
            ) from None
        dims = linear_dims(module)
        if dims is None:
            raise CheckpointError(
                f"{config_path}: {name} is a {type(module).__name__}, not a Linear layer, so it cannot be factorized"
            )
        n_in, n_out, _ = dims
        layer = LowRankLinear(n_in, n_out, rank, bias=name in section.bias, device="meta")
        set_submodule(model, name, layer.to_empty(device="cpu") if materialize else layer)
    return model
