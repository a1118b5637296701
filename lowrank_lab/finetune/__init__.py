"""LoRA fine-tuning (Hugging Face PEFT + Accelerate) of the original or a compressed model."""

from lowrank_lab.finetune.result import TrainedAdapter
from lowrank_lab.finetune.settings import (
    ALL_LINEAR,
    INITS,
    SCHEDULES,
    LoraSettings,
    StepInfo,
    TrainControl,
    TrainReport,
)
from lowrank_lab.finetune.targets import lora_targets, target_modules
from lowrank_lab.finetune.train import finetune, lora_config, validation_loss
from lowrank_lab.generate import generate

__all__ = [
    "ALL_LINEAR",
    "INITS",
    "SCHEDULES",
    "LoraSettings",
    "StepInfo",
    "TrainControl",
    "TrainReport",
    "TrainedAdapter",
    "finetune",
    "generate",
    "lora_config",
    "lora_targets",
    "target_modules",
    "validation_loss",
]
