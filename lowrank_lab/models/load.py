"""Loading a model: ModelSpec → LoadedModel (model + tokenizer + what we know about them).

The loaded model is meant to be shared read-only (the app caches one per spec for every
session): it is put in eval mode with gradients off. Work that changes weights takes
:meth:`LoadedModel.copy` first.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from lowrank_lab.checkpoint.format import SECTION
from lowrank_lab.checkpoint.safetensors_file import check_safetensors
from lowrank_lab.errors import ArgumentTypeError, ModelLoadError
from lowrank_lab.models import builtin
from lowrank_lab.models.compressed import open_compressed_folder
from lowrank_lab.models.spec import BUILTIN_MODELS, TINY_MODELS, ModelSpec
from lowrank_lab.models.tiny import tiny_model, tiny_tokenizer
from lowrank_lab.models.tokenizer import tokenizer_and_note
from lowrank_lab.progress import ProgressFn, report
from lowrank_lab.tasks import Task, auto_model_class, task_of_config

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_HOST = ("huggingface.co", 443)
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A loaded model with its tokenizer and a description.

    Attributes:
        spec: what was asked for.
        model: the torch module, in eval mode, gradients off. Treat it as read-only.
        tokenizer: its tokenizer, or None when the source has none.
        task: ``causal-lm`` (predicts the next token) or ``encoder`` (hidden states only).
        title: a short human name.
        notes: facts a user should know (e.g. that weights were dequantized from 4-bit).
        load_seconds: wall time the load took.
    """

    spec: ModelSpec
    model: nn.Module
    tokenizer: object | None
    task: Task
    title: str
    notes: tuple[str, ...] = ()
    load_seconds: float = field(default=0.0, compare=False)

    @property
    def config(self):
        return self.model.config

    @property
    def architecture(self) -> str:
        archs = getattr(self.model.config, "architectures", None) or [type(self.model).__name__]
        return archs[0]

    @property
    def n_params(self) -> int:
        """Parameters, counting tied tensors once."""
        return sum(p.numel() for p in self.model.parameters())

    @property
    def n_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def copy(self) -> nn.Module:
        """Return a deep copy of the model that may be changed freely (ties kept)."""
        return copy.deepcopy(self.model)


def load_model(spec: ModelSpec | str, progress: ProgressFn | None = None) -> LoadedModel:
    """Load a model and its tokenizer.

    Args:
        spec: a :class:`ModelSpec`, or its ``source`` string.
        progress: called as ``progress(done, total, message)`` while loading.

    Returns:
        The loaded model, in eval mode with gradients off.

    Raises:
        ArgumentTypeError: ``spec`` is neither a ModelSpec nor a str/path, or ``progress`` is
            not callable.
        ModelLoadError: unknown name, missing path, a folder with no config or no weights,
            a corrupt file, a pickle file, or a hub id that cannot be reached.
        CheckpointError: a compressed checkpoint (folder or .zip) that is damaged.
    """
    if isinstance(spec, (str, os.PathLike)):
        spec = ModelSpec(os.fspath(spec))
    if not isinstance(spec, ModelSpec):
        raise ArgumentTypeError(
            f"load_model takes a ModelSpec or a model name or path (str), got {type(spec).__name__} {spec!r}"
        )
    if progress is not None and not callable(progress):
        raise ArgumentTypeError(f"progress must be a function (done, total, message), got {type(progress).__name__}")
    start = time.perf_counter()
    if spec.is_tiny:
        loaded = _load_tiny(spec)
    elif spec.is_builtin:
        loaded = _load_builtin(spec, progress)
    else:
        path = Path(spec.source).expanduser()
        try:
            exists = path.exists()
        except OSError as err:  # e.g. a name longer than the file system allows
            shown = spec.source if len(spec.source) <= 80 else spec.source[:40] + "…" + spec.source[-30:]
            raise ModelLoadError(
                f"{shown!r} cannot be a path here ({err.strerror}); give a shorter path or a model name"
            ) from None
        if exists:
            loaded = _load_local(spec, path)
        elif _HUB_ID.match(spec.source) and not spec.source.startswith((".", "/", "~")):
            loaded = _load_hub(spec)
        else:
            raise ModelLoadError(
                f"no model named {spec.source!r}: it is not a built-in "
                f"({', '.join(BUILTIN_MODELS)}), not a tiny test model ({', '.join(TINY_MODELS)}), "
                "not an existing path, and not a hub id of the form org/name"
            )
    model = loaded.model
    target_dtype = getattr(torch, spec.dtype)
    if next(model.parameters()).dtype != target_dtype:
        model.to(target_dtype)
    model.eval()
    model.requires_grad_(False)
    report(progress, 1, 1, "loaded")
    object.__setattr__(loaded, "load_seconds", time.perf_counter() - start)
    return loaded


def _load_tiny(spec: ModelSpec) -> LoadedModel:
    model = tiny_model(spec.source, seed=spec.seed)
    return LoadedModel(
        spec=spec,
        model=model,
        tokenizer=tiny_tokenizer(),
        task=task_of_config(model.config),
        title=f"{spec.source} (seed {spec.seed})",
        notes=(TINY_MODELS[spec.source] + "; random weights, for tests.",),
    )


def _load_builtin(spec: ModelSpec, progress: ProgressFn | None) -> LoadedModel:
    info = BUILTIN_MODELS[spec.source]
    if spec.source == "smollm2-135m":
        folder = builtin.smollm2_folder(progress)
        notes = (
            "Weights were dequantized from the 4-bit GGUF (Q4_1) this model ships as: the tail of "
            "each spectrum shows that quantization noise floor.",
        )
    else:
        folder = builtin.minilm_folder()
        notes = ("A sentence-embedding encoder: it has no language-model head, so no perplexity.",)
    loaded = _from_folder(spec, folder, trust_remote_code=False)
    return LoadedModel(spec, loaded.model, loaded.tokenizer, loaded.task, info.title, notes)


def _load_local(spec: ModelSpec, path: Path) -> LoadedModel:
    mode = path.stat().st_mode
    if not stat.S_ISDIR(mode) and not stat.S_ISREG(mode):
        raise ModelLoadError(
            f"{path} is not a regular file or folder (a FIFO, device or socket), so it is not read; "
            "pass a Hugging Face model folder, a .safetensors file or a compressed checkpoint .zip"
        )
    if path.is_file():
        if path.suffix == ".safetensors":
            return _from_safetensors_file(spec, path)
        if path.suffix.lower() == ".zip":
            return _from_zip(spec, path)
        if path.suffix in _PICKLE_SUFFIXES:
            raise ModelLoadError(
                f"{path} is a pickle file, which can run code when read, so it is not loaded. "
                "Load the Hugging Face folder it came from, or convert it to .safetensors."
            )
        raise ModelLoadError(
            f"{path} is not a model: pass a Hugging Face folder, a .safetensors file or a compressed checkpoint .zip"
        )
    if not (path / "config.json").exists():
        raise ModelLoadError(
            f"the folder {path} has no config.json, so it is not a Hugging Face model folder; "
            "save the model there with model.save_pretrained(folder), or pick the folder that holds config.json"
        )
    config = _read_json(path / "config.json")
    if SECTION in config:
        return _load_compressed_folder(spec, path)
    weights = sorted(p.name for p in path.iterdir() if p.suffix == ".safetensors")
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES and p.name != "training_args.bin")
    if not weights and pickles:
        raise ModelLoadError(
            f"the folder {path} holds its weights only as {pickles[0]}, a pickle file, which can run code when "
            "read, so lowrank_lab does not load it. Get the model's .safetensors files (most hub models ship "
            "them), or convert it on a machine you trust: load it there with transformers and save it with "
            "model.save_pretrained(folder, safe_serialization=True)"
        )
    if not weights:
        raise ModelLoadError(f"the folder {path} has a config.json but no weights (*.safetensors files)")
    for name in weights:
        check_safetensors(path / name)
    return _from_folder(spec, path, trust_remote_code=spec.trust_remote_code)


def _from_zip(spec: ModelSpec, path: Path) -> LoadedModel:
    """A compressed checkpoint downloaded as a .zip: extracted (with size caps) into a temporary folder and loaded."""
    from lowrank_lab.checkpoint.unzip import extract_zip

    with tempfile.TemporaryDirectory(prefix="lowrank-zip-") as tmp:
        folder = extract_zip(path, Path(tmp))
        if SECTION not in _read_json(folder / "config.json"):
            raise ModelLoadError(
                f"{path} holds a model folder that is not a lowrank_lab compressed checkpoint; extract it and "
                "load the folder"
            )
        loaded = _load_compressed_folder(spec, folder)
    title = f"{path.name} (compressed)"
    return LoadedModel(spec, loaded.model, loaded.tokenizer, loaded.task, title, loaded.notes)


def _load_hub(spec: ModelSpec) -> LoadedModel:
    try:  # a copy already in the local Hugging Face cache needs no network
        return _from_folder(spec, spec.source, trust_remote_code=spec.trust_remote_code, local_only=True)
    except ModelLoadError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or not _hub_reachable():
        raise ModelLoadError(
            f"cannot reach the Hugging Face Hub to download {spec.source!r} (no network here?). "
            f"On a machine with network run `huggingface-cli download {spec.source} --local-dir DIR`, "
            "copy DIR here and load that folder, or pick a built-in model."
        )
    return _from_folder(spec, spec.source, trust_remote_code=spec.trust_remote_code)


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(_HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path} is not valid JSON ({err}); restore the file from the original model") from None


def _load_compressed_folder(spec: ModelSpec, path: Path) -> LoadedModel:
    """A lowrank_lab compressed checkpoint folder as a LoadedModel (:func:`load_compressed` reads it the same way)."""
    compressed, section = open_compressed_folder(path)
    notes = [
        f"A lowrank_lab compressed checkpoint: {len(section.ranks)} layers stored as rank-r factors "
        f"({section.method}, saved in {section.dtype}) from {section.source}."
    ]
    if compressed.tokenizer is None:
        notes.append(tokenizer_and_note(path)[1])
    title = f"{path.name} (compressed)"
    return LoadedModel(spec, compressed.model, compressed.tokenizer, compressed.task, title, tuple(notes))


def _from_folder(spec: ModelSpec, source, trust_remote_code: bool, local_only: bool = False) -> LoadedModel:
    from transformers import AutoConfig  # heavy: imported on first use, not with lowrank_lab

    is_local = not isinstance(source, str) or Path(source).exists()
    try:
        config = AutoConfig.from_pretrained(
            str(source),
            revision=None if is_local else spec.revision,
            local_files_only=local_only or is_local,
            trust_remote_code=trust_remote_code,
        )
        task = task_of_config(config)
        model = auto_model_class(task).from_pretrained(
            str(source),
            config=config,
            revision=None if is_local else spec.revision,
            local_files_only=local_only or is_local,
            trust_remote_code=trust_remote_code,
            dtype=getattr(torch, spec.dtype),
            use_safetensors=True,  # never a pickle (pytorch_model.bin), even one beside the safetensors
        )
    except ModelLoadError:
        raise
    except Exception as err:
        if "trust_remote_code" in str(err):
            raise ModelLoadError(
                f"{source} needs its own Python code to load; lowrank_lab does not run it by default. "
                "Read that code, then pass ModelSpec(..., trust_remote_code=True)."
            ) from None
        raise ModelLoadError(f"could not load the model at {source}: {type(err).__name__}: {err}") from None
    tokenizer, note = tokenizer_and_note(str(source), local_only or is_local, trust_remote_code)
    notes = (note,) if note else ()
    title = Path(str(source)).name if is_local else str(source)
    return LoadedModel(spec, model, tokenizer, task, title, notes)


def _from_safetensors_file(spec: ModelSpec, path: Path) -> LoadedModel:
    """A single .safetensors file whose config.json lies beside it."""
    folder = path.parent
    if not (folder / "config.json").exists():
        raise ModelLoadError(
            f"{path} has no config.json beside it, so its architecture is unknown; "
            "put the model's config.json in the same folder"
        )
    if path.name == "model.safetensors":
        return _load_local(spec, folder)
    check_safetensors(path)
    from transformers import AutoConfig  # heavy: imported on first use, not with lowrank_lab

    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=spec.trust_remote_code)
        task = task_of_config(config)
        model = auto_model_class(task).from_config(config, trust_remote_code=spec.trust_remote_code)
        state = load_file(str(path))
    except Exception as err:
        raise ModelLoadError(f"could not load {path}: {type(err).__name__}: {err}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied weights (e.g. lm_head = embed_tokens) are stored once and may be missing here.
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied and not k.endswith("lm_head.weight")]
    if missing or unexpected:
        raise ModelLoadError(
            f"{path} does not match its config.json: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    tokenizer, note = tokenizer_and_note(str(folder), True, spec.trust_remote_code)
    return LoadedModel(spec, model, tokenizer, task, path.name, (note,) if note else ())
