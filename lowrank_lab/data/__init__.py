"""Text for calibration, evaluation and fine-tuning."""

from lowrank_lab.data.examples import Example, PreparedData, collate, prepare
from lowrank_lab.data.instructions import instruction_pairs, number_in_words
from lowrank_lab.data.sources import (
    BUILTIN_DATASETS,
    Record,
    TrainingSource,
    builtin_source,
    read_upload,
    source_from_name_or_file,
)
from lowrank_lab.data.text import (
    BUILTIN_SPLITS,
    builtin_text,
    builtin_topics,
    decode_text_upload,
    token_blocks,
)

__all__ = [
    "BUILTIN_DATASETS",
    "BUILTIN_SPLITS",
    "Example",
    "PreparedData",
    "Record",
    "TrainingSource",
    "builtin_source",
    "builtin_text",
    "builtin_topics",
    "collate",
    "decode_text_upload",
    "instruction_pairs",
    "number_in_words",
    "prepare",
    "read_upload",
    "source_from_name_or_file",
    "token_blocks",
]
