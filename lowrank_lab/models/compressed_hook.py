"""Loading a compressed checkpoint through :func:`load_model`: a folder whose config has a ``lowrank`` section."""

from __future__ import annotations

from pathlib import Path

from lowrank_lab.models.spec import ModelSpec


def load_compressed_folder(spec: ModelSpec, path: Path):
    """Load a lowrank_lab compressed checkpoint folder as a :class:`LoadedModel`.

    The model has :class:`~lowrank_lab.lowrank.LowRankLinear` at every factorized module;
    :func:`load_model` then casts it to ``spec.dtype``.

    Raises:
        CheckpointError: the checkpoint is incomplete, corrupt or contradicts its config.
    """
    from lowrank_lab.export.loader import load_checkpoint
    from lowrank_lab.models.load import LoadedModel, tokenizer_and_note

    model, section = load_checkpoint(Path(path))
    tokenizer, note = tokenizer_and_note(str(path), True, False)
    notes = [
        f"A lowrank_lab compressed checkpoint: {len(section.ranks)} layers stored as rank-r factors "
        f"({section.method}, saved in {section.dtype}) from {section.source}."
    ]
    if note:
        notes.append(note)
    task = "causal-lm" if section.task == "causal-lm" else "encoder"
    return LoadedModel(spec, model, tokenizer, task, f"{Path(path).name} (compressed)", tuple(notes))
