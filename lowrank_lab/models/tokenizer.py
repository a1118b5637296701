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


NO_TOKENIZER = "No tokenizer was found, so text-based evaluation is off."


def load_tokenizer(source: str | Path, local_only: bool = True, trust_remote_code: bool = False):
    """The tokenizer at ``source`` (a folder or a hub id), or None when there is none.

    Args:
        source: a local folder or a hub id.
        local_only: never download.
        trust_remote_code: let the tokenizer run its own code (off unless the user turned it on).
    """
    return tokenizer_and_note(source, local_only, trust_remote_code)[0]


def tokenizer_and_note(
    source: str | Path, local_only: bool = True, trust_remote_code: bool = False
) -> tuple[object | None, str]:
    """The tokenizer at ``source``, and "" — or None and a note saying why there is none.

    A tokenizer that needs its own Python code (an ``auto_map`` in tokenizer_config.json) is
    not run unless ``trust_remote_code``; the note says so, rather than "no tokenizer".
    """
    folder = Path(str(source))
    if folder.is_dir() and not any((folder / f).exists() for f in _TOKENIZER_FILES):
        return None, NO_TOKENIZER  # transformers would otherwise build an empty tokenizer from defaults
    from transformers import AutoTokenizer  # heavy: imported on first use, not with lowrank_lab

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(source), local_files_only=local_only, trust_remote_code=trust_remote_code
        )
        return tokenizer, ""
    except Exception as err:  # many model folders ship no tokenizer: say so rather than fail
        if "trust_remote_code" in str(err) or "custom code" in str(err):
            return None, (
                f"The tokenizer of {source} needs its own Python code (an auto_map in tokenizer_config.json), "
                "which lowrank_lab does not run by default, so there is no tokenizer and text-based evaluation "
                "is off. Read that code, then load with ModelSpec(..., trust_remote_code=True)."
            )
        return (
            None,
            f"The tokenizer files of {source} could not be read ({type(err).__name__}), so text-based evaluation is off.",
        )
