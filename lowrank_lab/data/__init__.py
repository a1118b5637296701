"""Text for calibration, evaluation and fine-tuning."""

from lowrank_lab.data.text import (
    BUILTIN_SPLITS,
    builtin_text,
    builtin_topics,
    decode_text_upload,
    token_blocks,
)

__all__ = ["BUILTIN_SPLITS", "builtin_text", "builtin_topics", "decode_text_upload", "token_blocks"]
