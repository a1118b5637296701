"""The model card (README.md) of a compressed checkpoint: what it is and what was measured.

Figures come from the model's :class:`~lowrank_lab.models.ParamCounts`, from a
:class:`~lowrank_lab.comparison.Comparison` with the dense model when one was measured, and
from the checkpoint itself (file sizes); anything not measured says so.
"""

from __future__ import annotations

import statistics

from lowrank_lab.checkpoint.format import LowrankSection
from lowrank_lab.comparison import Comparison
from lowrank_lab.dtypes import BYTES_PER_ELEMENT
from lowrank_lab.models import ParamCounts

NOT_MEASURED = "not measured"


def _count(value) -> str:
    return f"{int(value):,}" if isinstance(value, (int, float)) else NOT_MEASURED


def human_bytes(value) -> str:
    """``1234567`` → ``1.23 MB`` (decimal units, as file managers show them)."""
    if not isinstance(value, (int, float)):
        return NOT_MEASURED
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:,.2f} {unit}"
    return f"{int(value)} B"


def _ppl(value) -> str:
    return f"{float(value):.2f}" if isinstance(value, (int, float)) else NOT_MEASURED


def _calibration_text(calibration: dict, method: str) -> str:
    if not calibration:
        return "none (plain truncated SVD needs no data)" if method == "svd" else NOT_MEASURED
    return "; ".join(f"{k}: {_value(v)}" for k, v in calibration.items())


def _value(value) -> str:
    """A record's value in words (a nested record, such as the distillation's, as ``key value`` pairs)."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def figures_table(
    params: ParamCounts, comparison: Comparison | None, section: LowrankSection, weights_bytes: int
) -> str:
    """A markdown table: parameters, size and perplexity, dense vs compressed."""
    dense_size = params.dense * BYTES_PER_ELEMENT[section.dtype]
    measured = comparison is not None and comparison.dense.perplexity is not None
    where = f"{comparison.eval_source}, {comparison.eval_tokens:,} tokens" if measured else "evaluation text not named"
    ppl_dense, ppl_compressed = (
        (comparison.dense.perplexity, comparison.compressed.perplexity) if measured else (None, None)
    )
    rows = [
        ("parameters", _count(params.dense), _count(params.compressed)),
        ("linear-layer parameters", _count(params.linear_dense), _count(params.linear_compressed)),
        (f"weights on disk ({section.dtype})", human_bytes(dense_size), human_bytes(weights_bytes)),
        (f"perplexity ({where})", _ppl(ppl_dense), _ppl(ppl_compressed)),
    ]
    lines = ["| | dense | compressed |", "| --- | --- | --- |"]
    lines += [f"| {name} | {before} | {after} |" for name, before, after in rows]
    return "\n".join(lines)


def model_card(
    section: LowrankSection,
    params: ParamCounts,
    comparison: Comparison | None,
    weights_bytes: int,
    has_tokenizer: bool,
) -> str:
    """The README.md of a compressed checkpoint.

    Args:
        section: the checkpoint's ``lowrank`` section.
        params: the parameter counts before and after.
        comparison: what was measured against the dense model, or None.
        weights_bytes: the size of model.safetensors as written.
        has_tokenizer: whether tokenizer files were written.
    """
    ranks = list(section.ranks.values())
    rank_line = (
        f"{len(ranks)} modules factorized, ranks {min(ranks)}–{max(ranks)} (median {statistics.median(ranks):g})"
        if ranks
        else "no module factorized (every layer is dense)"
    )
    tokenizer = "included" if has_tokenizer else "not included (the source model had none)"
    return f"""---
library_name: transformers
tags: [lowrank_lab, low-rank, compressed]
---

# {section.source} — low-rank compressed ({section.method}, {section.dtype})

Written by lowrank_lab {section.library_version}. Linear layers listed in `config.json`'s
`lowrank.ranks` are stored as two thin factors, W ≈ B·A: `<module>.A.weight` (rank × in) and
`<module>.B.weight` (out × rank), plus `<module>.B.bias`; every other tensor is stored as is.

- Source model: {section.source}
- Architecture: {section.architecture} ({section.task})
- Method: {section.method}
- Calibration: {_calibration_text(section.calibration, section.method)}
- Ranks: {rank_line}; the full plan is in `rank_plan.json`
- Tokenizer: {tokenizer}

## Measured figures

{figures_table(params, comparison, section, weights_bytes)}

## Loading

With lowrank_lab:

```python
from lowrank_lab import load_compressed
model = load_compressed("path/to/this/folder").model
```

Without lowrank_lab (needs only torch, transformers and safetensors):

```python
import sys; sys.path.insert(0, "path/to/this/folder")
from load_lowrank import load
model = load("path/to/this/folder")
```

or run `python load_lowrank.py` in this folder to load it and generate a few tokens.
The weights are safetensors; nothing here is a pickle.
"""
