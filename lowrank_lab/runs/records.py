"""What the run store holds: one record per compression, fine-tune, extraction or export.

:class:`RunRecord` is what a caller records (validated on creation); :class:`RunRow` is a
stored run as a list shows it (scalar columns only, cheap for thousands of runs) and
:class:`Run` one run in full (plan, settings, figures, prediction, stage report).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from lowrank_lab.errors import SettingsError
from lowrank_lab.plan import RankPlan

RunKind = Literal["compression", "finetune", "extraction", "export"]
KINDS: tuple[RunKind, ...] = ("compression", "finetune", "extraction", "export")
ORIGINS = ("app", "cli", "bench", "api")


@dataclass(frozen=True)
class Artifact:
    """A file or folder a run produced.

    Attributes:
        role: what it is, e.g. ``checkpoint`` (a compressed checkpoint folder) or ``adapter``
            (a PEFT adapter folder); one artifact per role and run.
        path: where it is, absolute.
        owned: True when lowrank_lab wrote it into the store's own folder for this run, so
            deleting the run deletes it; False for a folder the user asked for (``--out``),
            which deleting the run leaves alone.
    """

    role: str
    path: str
    owned: bool = True

    def __post_init__(self):
        if not isinstance(self.role, str) or not self.role.strip():
            raise SettingsError(
                f"an artifact's role must be a non-empty string such as 'checkpoint', got {self.role!r}"
            )
        if not isinstance(self.path, str) or not self.path.strip():
            raise SettingsError(f"the {self.role} artifact needs a path, got {self.path!r}")


def plan_digest(plan: RankPlan | Mapping[str, int] | None) -> str | None:
    """A short content hash of a plan's ranks (None for no plan), to find runs of the same plan."""
    if plan is None:
        return None
    ranks = plan.as_dict() if isinstance(plan, RankPlan) else dict(plan)
    text = json.dumps(sorted(ranks.items()), separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def clean_json(value, where: str):
    """``value`` with tuples as lists, NumPy numbers as Python numbers and non-finite floats as None.

    Strict JSON has no NaN or infinity: a perplexity that overflowed is recorded as not measured.

    Raises:
        SettingsError: a value JSON cannot hold (naming where it is).
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Mapping):
        return {str(k): clean_json(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise SettingsError(
        f"{where} holds a {type(value).__name__}, which a run record cannot store; give numbers, text, lists or dicts"
    )


def _number(value, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(f"{what} must be a number or None, got {value!r}")
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class RunRecord:
    """One run to record.

    Attributes:
        kind: ``compression``, ``finetune``, ``extraction`` or ``export``.
        model: the source model as a :class:`~lowrank_lab.models.ModelSpec` names it.
        model_digest: a content hash of the source model's weights (None if unknown).
        method: the compression method, LoRA init, export format, ...
        allocation: where the ranks came from (``uniform``, ``auto``, ``plan``, a file name).
        keep: the budget, the fraction of linear-layer parameters kept (None without one).
        plan: the ranks factorized (compressions) or extracted.
        settings: calibration, evaluation and training settings, as JSON-able values.
        figures: what was measured (parameter counts, perplexity dense and after, ...).
        prediction: what was predicted before measuring (see :mod:`lowrank_lab.predict`).
        stages: the stage report, one mapping per stage (e.g. perplexity after each).
        artifacts: files and folders it produced.
        origin: ``app``, ``cli``, ``bench`` or ``api``.
        parent: the id of the run this one builds on (a fine-tune's compressed base).
        created: seconds since the epoch.
        uid: a random id; names the run's folder of artifacts.

    Raises:
        SettingsError: an unknown kind or origin, an empty model, a budget outside (0, 1], or
            a value JSON cannot hold.
    """

    kind: RunKind
    model: str
    model_digest: str | None = None
    method: str | None = None
    allocation: str | None = None
    keep: float | None = None
    plan: RankPlan | None = None
    settings: Mapping = field(default_factory=dict)
    figures: Mapping = field(default_factory=dict)
    prediction: Mapping = field(default_factory=dict)
    stages: tuple[Mapping, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    origin: str = "api"
    parent: int | None = None
    created: float = field(default_factory=time.time)
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def __post_init__(self):
        if self.kind not in KINDS:
            raise SettingsError(f"unknown run kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.origin not in ORIGINS:
            raise SettingsError(f"unknown run origin {self.origin!r}; use one of {', '.join(ORIGINS)}")
        if not isinstance(self.model, str) or not self.model.strip():
            raise SettingsError(f"a run needs the model it was made from, got {self.model!r}")
        keep = _number(self.keep, "the budget keep")
        if keep is not None and not 0 < keep <= 1:
            raise SettingsError(f"the budget keep={self.keep!r} must be a fraction in (0, 1]")
        if self.plan is not None and not isinstance(self.plan, RankPlan):
            object.__setattr__(self, "plan", RankPlan(self.plan))
        if self.parent is not None and (isinstance(self.parent, bool) or not isinstance(self.parent, int)):
            raise SettingsError(f"parent must be a run id (an integer), got {self.parent!r}")
        roles = [a.role for a in self.artifacts]
        if len(set(roles)) != len(roles):
            raise SettingsError(f"a run holds one artifact per role, got roles {roles}")
        for name in ("settings", "figures", "prediction"):
            object.__setattr__(self, name, clean_json(getattr(self, name), name))
        object.__setattr__(self, "stages", tuple(clean_json(list(self.stages), "stages")))


@dataclass(frozen=True)
class RunRow:
    """A stored run as the list shows it.

    Attributes:
        id: the store's id (increasing with time of recording).
        perplexity: measured after the run (compressed model; fine-tuned model's validation).
        perplexity_dense: the source model's on the same text.
        predicted_perplexity, predicted_low, predicted_high: the prediction and its range.
        predicted_loss_raw: the uncalibrated predicted loss increase D.
        predicted_loss_anchored: D anchored on the uniform plan of the same size (what the fit
            learns from; None for runs recorded before lowrank_lab anchored, whose fit uses D).
        params_kept, params_dense: whole-model parameters after and before.
        linear_kept: linear-layer parameters kept, as a fraction.
        artifacts: what the run produced; ``missing`` the roles whose path is gone.
    """

    id: int
    uid: str
    kind: str
    created: float
    model: str
    model_digest: str | None
    method: str | None
    allocation: str | None
    keep: float | None
    params_kept: int | None
    params_dense: int | None
    linear_kept: float | None
    perplexity: float | None
    perplexity_dense: float | None
    predicted_perplexity: float | None
    predicted_low: float | None
    predicted_high: float | None
    predicted_loss_raw: float | None
    predicted_loss_anchored: float | None
    plan_digest: str | None
    origin: str
    parent: int | None
    artifacts: tuple[Artifact, ...] = ()
    missing: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        """``missing`` when an artifact was removed by hand, ``ok`` when all are there, ``no files`` without any."""
        if self.missing:
            return "missing"
        return "ok" if self.artifacts else "no files"

    def artifact(self, role: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.role == role), None)


@dataclass(frozen=True)
class Run:
    """One stored run in full: its row and everything recorded with it."""

    row: RunRow
    plan: RankPlan | None
    settings: dict
    figures: dict
    prediction: dict
    stages: tuple[dict, ...]
