"""A rank plan: module name → rank, and when two thin factors are smaller than the dense matrix.

A :class:`RankPlan` maps module names (exactly as ``model.named_modules()`` gives them, so a
plan maps onto PEFT's ``rank_pattern``) to ranks. A module left out of the plan stays dense,
and so does one whose rank is at or past the break-even rank, where two thin factors
(r·(m+n) parameters) would be no smaller than the dense matrix (m·n).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lowrank_lab.checks import is_positive_int
from lowrank_lab.errors import InvalidRankPlan

PLAN_FORMAT = "lowrank_lab.rank_plan"


def factorizes(rank: int, shape: tuple[int, int]) -> bool:
    """True when rank-r factors (r·(m+n) parameters) are smaller than the dense m×n matrix."""
    m, n = shape
    return rank * (m + n) < m * n


def break_even_rank(shape: tuple[int, int]) -> int:
    """The smallest rank at which factoring saves nothing: r·(m+n) ≥ m·n."""
    m, n = shape
    return math.ceil(m * n / (m + n))


@dataclass(frozen=True)
class RankPlan:
    """Module name → rank. Hashable; build it from any mapping: ``RankPlan({"q_proj": 8})``.

    Raises:
        InvalidRankPlan: a name is not a string or a rank is not a positive integer.
    """

    ranks: tuple[tuple[str, int], ...] = ()

    def __init__(self, ranks: Mapping[str, int] | Iterable[tuple[str, int]] = ()):
        if isinstance(ranks, RankPlan):
            ranks = ranks.ranks
        if isinstance(ranks, (str, bytes)) or not isinstance(ranks, (Mapping, Iterable)):
            raise InvalidRankPlan(
                f"a rank plan is built from a mapping of module name → rank, got {type(ranks).__name__}; "
                'e.g. RankPlan({"model.layers.0.mlp.up_proj": 64})'
            )
        items = list(ranks.items() if isinstance(ranks, Mapping) else ranks)
        if not all(isinstance(item, tuple | list) and len(item) == 2 for item in items):
            raise InvalidRankPlan("a rank plan is built from (module name, rank) pairs or a mapping of them")
        clean = []
        for name, rank in items:
            if not isinstance(name, str) or not name:
                raise InvalidRankPlan(f"module names must be non-empty strings, got {name!r}")
            if not is_positive_int(rank):
                raise InvalidRankPlan(f"the rank of {name!r} must be a positive integer, got {rank!r}")
            clean.append((name, int(rank)))
        object.__setattr__(self, "ranks", tuple(sorted(clean)))

    def as_dict(self) -> dict[str, int]:
        return dict(self.ranks)

    def __len__(self) -> int:
        return len(self.ranks)

    def get(self, name: str, default: int | None = None) -> int | None:
        return self.as_dict().get(name, default)

    def with_rank(self, name: str, rank: int | None) -> RankPlan:
        """A copy with one module's rank set (None removes it: dense)."""
        d = self.as_dict()
        if rank is None:
            d.pop(name, None)
        else:
            d[name] = rank
        return RankPlan(d)

    def validate(self, spectra_or_matrices: Iterable, model=None) -> None:
        """Check every name exists in the model and every rank is within 1..full rank.

        Args:
            spectra_or_matrices: the model's :class:`LayerSpectrum` or ``WeightMatrix`` list.
            model: the model itself, if at hand: a name it has that is no factorizable matrix
                (a norm, a head tied to the embedding) is then named as such.

        Raises:
            InvalidRankPlan: naming the unknown modules or the out-of-range ranks.
        """
        listed = list(spectra_or_matrices)
        shapes = {m.name: m.shape for m in listed}
        for m in listed:
            for tied in getattr(m, "tied_to", ()):
                if self.get(tied) is not None:
                    raise InvalidRankPlan(
                        f"the plan names {tied}, which shares its weight with {m.name} (tied); a tied weight "
                        f"cannot be factorized on one side only. Remove {tied} from the plan"
                    )
        unknown = [n for n, _ in self.ranks if n not in shapes]
        if unknown and model is not None:
            _explain_not_a_matrix(unknown, model)
        if unknown:
            examples = ", ".join(list(shapes)[:3])
            raise InvalidRankPlan(
                f"the plan names {len(unknown)} module(s) this model does not have: "
                f"{', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}. "
                f"Use module names as model.named_modules() gives them, e.g. {examples}"
            )
        bad = [(n, r, min(shapes[n])) for n, r in self.ranks if r > min(shapes[n])]
        if bad:
            n, r, full = bad[0]
            raise InvalidRankPlan(
                f"rank {r} for {n} is above its full rank {full}; "
                f"{len(bad)} module(s) have a rank out of range 1..full rank"
            )

    def to_json(self, model: str | None = None) -> str:
        """The plan as JSON: ``{"format", "version", "model", "ranks": {name: rank}}``."""
        return json.dumps({"format": PLAN_FORMAT, "version": 1, "model": model, "ranks": self.as_dict()}, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> RankPlan:
        """Read a plan written by :meth:`to_json`, or a bare ``{name: rank}`` object.

        Raises:
            InvalidRankPlan: the text is not JSON, not an object, or holds bad entries.
        """
        if isinstance(text, bytearray | memoryview):
            text = bytes(text)
        if not isinstance(text, (str, bytes)):
            raise InvalidRankPlan(f"a rank plan is read from JSON text or bytes, got {type(text).__name__}")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InvalidRankPlan(
                f"the rank plan is not valid JSON ({err}); upload a file saved by lowrank_lab"
            ) from None
        except RecursionError:
            raise InvalidRankPlan(
                'the rank plan nests too deeply to read; a plan is one flat object {"module name": rank}'
            ) from None
        except ValueError:  # an integer with thousands of digits: Python refuses to convert it
            raise InvalidRankPlan(
                "the rank plan holds a number with thousands of digits; ranks are small positive integers such as 64"
            ) from None
        if isinstance(data, dict) and "ranks" in data:
            if data.get("format", PLAN_FORMAT) != PLAN_FORMAT:
                raise InvalidRankPlan(f"the file's format is {data.get('format')!r}, not a lowrank_lab rank plan")
            data = data["ranks"]
        if not isinstance(data, dict):
            raise InvalidRankPlan(
                'a rank plan is a JSON object of module name → rank, e.g. {"model.layers.0.mlp.up_proj": 64}'
            )
        return cls(data)


def _explain_not_a_matrix(names: list[str], model) -> None:
    """Raise a clear InvalidRankPlan for a planned name the model has that is no factorizable matrix."""
    modules = dict(model.named_modules())
    for name in names:
        module = modules.get(name)
        if module is None:
            continue
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        if module is head and embed is not None and getattr(head, "weight", None) is getattr(embed, "weight", 0):
            raise InvalidRankPlan(
                f"{name} is the output head, and it shares its weight with the input embedding (tied), so it "
                "cannot be factorized on its own; remove it from the plan"
            )
        weight = getattr(module, "weight", None)
        shape = "no weight" if weight is None else f"a weight of shape {list(weight.shape)}"
        raise InvalidRankPlan(
            f"{name} is a {type(module).__name__} ({shape}), not a Linear layer with a weight matrix, so it cannot "
            "be factorized; plan only Linear layers such as those model.named_modules() lists as Linear"
        )
