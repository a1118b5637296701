"""A compressed model: what compression produces, the Export step writes, and a checkpoint opens as.

It holds its own model object, never the shared one: compression works on a copy of the
loaded model. :func:`load_compressed` is the one way to open a compressed checkpoint (a folder,
a file in it, or the zip the Export page downloads); :func:`lowrank_lab.load_model` reads a
checkpoint folder through it too.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from torch import nn

from lowrank_lab.checkpoint.format import LowrankSection, factorized_modules
from lowrank_lab.checkpoint.reader import load_checkpoint
from lowrank_lab.checkpoint.unzip import extract_zip
from lowrank_lab.dtypes import normalize_dtype, torch_dtype
from lowrank_lab.errors import ArgumentTypeError, CheckpointError
from lowrank_lab.models.spec import ModelSpec
from lowrank_lab.models.tokenizer import load_tokenizer
from lowrank_lab.plan.rank_plan import RankPlan
from lowrank_lab.tasks import Task, task_of_model

Method = Literal["svd", "whitened", "pca"]
METHODS: tuple[Method, ...] = ("svd", "whitened", "pca")


@dataclass(frozen=True)
class ParamCounts:
    """Parameters of the dense source and of the compressed model, tied tensors counted once.

    Attributes:
        dense, compressed: the whole model's parameters, before and after.
        linear_dense, linear_compressed: the linear layers' weights before and after (factors
            included, embeddings and tied heads not); None where they were not counted.
    """

    dense: int
    compressed: int
    linear_dense: int | None = None
    linear_compressed: int | None = None

    @classmethod
    def of_model(cls, model: nn.Module) -> ParamCounts:
        """The whole-model counts read off a compressed model: now, and with every factorized layer multiplied back."""
        now = sum(p.numel() for p in model.parameters())
        dense = now + sum(
            m.out_features * m.in_features - m.rank * (m.in_features + m.out_features)
            for m in factorized_modules(model).values()
        )
        return cls(dense, now)

    def as_dict(self) -> dict[str, int]:
        """The counts under the keys the command line's JSON uses (uncounted ones left out)."""
        out = {"params_dense": self.dense, "params_compressed": self.compressed}
        if self.linear_dense is not None and self.linear_compressed is not None:
            out |= {"linear_params_dense": self.linear_dense, "linear_params_compressed": self.linear_compressed}
        return out


@dataclass(frozen=True, eq=False)
class CompressedModel:
    """A model whose planned Linear layers are :class:`~lowrank_lab.lowrank.LowRankLinear`.

    Attributes:
        model: the compressed copy (the shared model is untouched).
        tokenizer: the source model's tokenizer (may be None).
        source: the spec of the model it was made from.
        plan: the ranks actually factorized (module name → rank); other layers are dense.
        method: ``svd``, ``whitened`` or ``pca``.
        calibration: how it was calibrated, in words and numbers (e.g. ``{"text": "built-in
            pydoc_data calibration split", "samples": 32, "seq_len": 256}``); empty for ``svd``.
        params: parameter counts before and after; when not given, the whole-model counts are
            read off ``model`` (the linear-layer counts are then unknown).

    What a comparison with the dense model measured is a separate
    :class:`~lowrank_lab.comparison.Comparison`, not part of the model.
    """

    model: nn.Module
    tokenizer: object | None
    source: ModelSpec
    plan: RankPlan
    method: Method
    calibration: dict = field(default_factory=dict)
    params: ParamCounts | None = None

    def __post_init__(self) -> None:
        if self.params is None:
            object.__setattr__(self, "params", ParamCounts.of_model(self.model))

    @property
    def task(self) -> Task:
        """``causal-lm`` or ``encoder``, as the source model's."""
        return task_of_model(self.model)


def factorized_plan(model: nn.Module) -> RankPlan:
    """The ranks the model really has: every :class:`LowRankLinear`, by module name."""
    return RankPlan({name: m.rank for name, m in factorized_modules(model).items()})


def open_compressed_folder(folder: Path) -> tuple[CompressedModel, LowrankSection]:
    """A checkpoint folder as a :class:`CompressedModel` (stored dtype, eval mode) and its ``lowrank`` section.

    Raises:
        CheckpointError: the checkpoint is incomplete, corrupt or contradicts its config.
    """
    model, section = load_checkpoint(folder)
    compressed = CompressedModel(
        model=model,
        tokenizer=load_tokenizer(folder),
        source=ModelSpec(section.source or str(folder)),
        plan=RankPlan(section.ranks),
        method=section.method,
        calibration=dict(section.calibration),
    )
    return compressed, section


def load_compressed(path: str | Path, dtype: str | None = None) -> CompressedModel:
    """Open a compressed checkpoint written by :func:`~lowrank_lab.export.save_compressed`.

    Args:
        path: the checkpoint folder, its ``config.json`` or ``model.safetensors``, or a
            ``.zip`` of it (as the Export page downloads).
        dtype: the dtype to return the model in; default: the dtype it was stored in.

    Returns:
        The :class:`CompressedModel`: its ``.model`` (eval mode) has :class:`LowRankLinear` at
        every factorized module and gives the outputs of the compressed model that was saved;
        its ``plan``, ``method`` and ``calibration`` are the checkpoint's, ``source`` the model
        it was made from. ``save_compressed`` takes it back.

    Raises:
        CheckpointError: a missing or malformed config or ``lowrank`` section, a truncated
            or corrupt safetensors file, missing or unexpected tensors, or a rank that does
            not match its factor's shape.
    """
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"load_compressed takes a path (str or pathlib.Path), got {type(path).__name__}")
    if dtype is not None:  # refused before anything is read
        try:
            dtype = normalize_dtype(dtype)
        except CheckpointError:
            raise CheckpointError(f"cannot load in dtype {dtype!r}; use float32, float16 or bfloat16") from None
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"{path} is not a folder or a .zip (it does not exist); pass a compressed checkpoint folder or its .zip"
        )
    if path.is_file() and path.suffix.lower() == ".zip":
        with tempfile.TemporaryDirectory(prefix="lowrank-") as tmp:
            return load_compressed(extract_zip(path, Path(tmp)), dtype)
    if path.is_file():
        path = path.parent
    compressed, _ = open_compressed_folder(path)
    if dtype is not None:
        compressed.model.to(torch_dtype(dtype))
    return compressed
