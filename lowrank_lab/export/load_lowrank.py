"""Load a lowrank_lab compressed checkpoint with only torch, transformers and safetensors.

lowrank_lab copies this file into every compressed checkpoint, so the checkpoint can be used
without lowrank_lab installed::

    python load_lowrank.py                # load the folder this file is in, generate a few tokens
    python load_lowrank.py --prompt "def fib(n):"

    import sys; sys.path.insert(0, "path/to/checkpoint")
    from load_lowrank import load
    model = load("path/to/checkpoint")    # a transformers model; factorized layers are LowRankLinear

The folder's config.json is the original model's config plus a "lowrank" section whose
"ranks" name every factorized Linear layer; model.safetensors stores each of them as
"<module>.A.weight" (rank x in) and "<module>.B.weight" (out x rank) (+ "<module>.B.bias").
A large checkpoint stores its tensors in shards listed by model.safetensors.index.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file
from torch import nn

SUPPORTED_FORMAT_VERSION = 1


class LowRankLinear(nn.Module):
    """y = B(A(x)): a rank-r stand-in for an out x in Linear layer (W ~ B.weight @ A.weight)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.A = nn.Linear(in_features, rank, bias=False)
        self.B = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.B(self.A(x))  # (..., in) -> (..., r) -> (..., out)


def _dims(module: nn.Module) -> tuple[int, int]:
    """(in, out) of a Linear, or of GPT-2's Conv1D, which stores its weight in x out."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D":
        return module.weight.shape[0], module.weight.shape[1]
    raise ValueError(f"{type(module).__name__} is not a Linear layer and cannot hold factors")


def _unique_names(model: nn.Module) -> list[str]:
    """State-dict names with shared (tied) tensors once, as the checkpoint stores them."""
    seen, names = set(), []
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else name
        if key not in seen:
            seen.add(key)
            names.append(name)
    return names


def load(folder: str | Path | None = None, dtype: torch.dtype | None = None) -> nn.Module:
    """Rebuild the architecture from config.json, put in the factorized layers, load the tensors.

    Args:
        folder: the checkpoint folder (default: the folder this file is in).
        dtype: return the model in this dtype (default: the dtype it was stored in).

    Raises:
        ValueError: the folder is not a compressed checkpoint, or its tensors do not match it.
    """
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parent
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    section = raw.get("lowrank")
    if not isinstance(section, dict) or not isinstance(section.get("ranks"), dict):
        raise ValueError(f"{folder / 'config.json'} has no 'lowrank' section: not a compressed checkpoint")
    if section.get("format_version", 0) > SUPPORTED_FORMAT_VERSION:
        raise ValueError(f"{folder} uses a newer checkpoint format; use the load_lowrank.py it came with")
    config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    if hasattr(config, "lowrank"):
        delattr(config, "lowrank")
    model = getattr(transformers, section["architecture"])(config)
    biased = set(section.get("bias", []))
    for name, rank in section["ranks"].items():
        parent, _, child = name.rpartition(".")
        n_in, n_out = _dims(model.get_submodule(name))
        setattr(
            model.get_submodule(parent) if parent else model, child, LowRankLinear(n_in, n_out, rank, name in biased)
        )
    state = {}
    index = folder / "model.safetensors.index.json"
    if index.exists():  # sharded: the index maps each tensor to its shard
        for shard in sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())):
            state.update(load_file(str(folder / shard)))
    else:
        state = load_file(str(folder / "model.safetensors"))
    expected = _unique_names(model)
    missing = [n for n in expected if n not in state]
    unexpected = [n for n in state if n not in expected]
    if missing or unexpected:
        raise ValueError(f"model.safetensors does not match config.json: missing {missing[:5]}, extra {unexpected[:5]}")
    with torch.no_grad():
        model.load_state_dict(state, strict=False)  # tied names not stored twice share storage already
    model.to(dtype or getattr(torch, section["dtype"]))
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description="Load this compressed checkpoint and generate a few tokens.")
    parser.add_argument("--folder", default=None, help="checkpoint folder (default: this file's folder)")
    parser.add_argument("--prompt", default="The assert statement")
    parser.add_argument("--tokens", type=int, default=20)
    args = parser.parse_args()
    folder = Path(args.folder) if args.folder else Path(__file__).resolve().parent
    model = load(folder, dtype=torch.float32)
    n_low = sum(isinstance(m, LowRankLinear) for m in model.modules())
    print(f"loaded {type(model).__name__} with {n_low} factorized layers")
    if hasattr(model, "generate") and (folder / "tokenizer_config.json").exists():
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
        ids = tokenizer(args.prompt, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=args.tokens, do_sample=False)
        print(tokenizer.decode(out[0], skip_special_tokens=True))


if __name__ == "__main__":
    main()
