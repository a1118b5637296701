"""The compressed checkpoint on disk: its format, checks of its files, and reading it back.

Below :mod:`lowrank_lab.models` (which opens checkpoints) and :mod:`lowrank_lab.export`
(which writes them); it imports neither.
"""

from lowrank_lab.checkpoint.format import FORMAT, FORMAT_VERSION, LowrankSection
from lowrank_lab.checkpoint.reader import load_checkpoint, read_section
from lowrank_lab.checkpoint.safetensors_file import check_safetensors
from lowrank_lab.checkpoint.unzip import extract_zip

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LowrankSection",
    "check_safetensors",
    "extract_zip",
    "load_checkpoint",
    "read_section",
]
