"""Loading a model's tokenizer: from a folder or the hub, or None when the source ships none."""

from __future__ import annotations

from pathlib import Path

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
)


def load_tokenizer(source: str | Path, local_only: bool = True, trust_remote_code: bool = False):
    """The tokenizer at ``source`` (a folder or a hub id), or None when there is none.

    Args:
        source: a local folder or a hub id.
        local_only: never download.
        trust_remote_code: let the tokenizer run its own code (off unless the user turned it on).
    """
    folder = Path(str(source))
    if folder.is_dir() and not any((folder / f).exists() for f in _TOKENIZER_FILES):
        return None  # transformers would otherwise build an empty tokenizer from defaults
    from transformers import AutoTokenizer  # heavy: imported on first use, not with lowrank_lab

    try:
        return AutoTokenizer.from_pretrained(
            str(source), local_files_only=local_only, trust_remote_code=trust_remote_code
        )
    except Exception:  # many model folders ship no tokenizer: say so rather than fail
        return None
