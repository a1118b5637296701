"""The model card (README.md) of a compressed checkpoint: what it is and what was measured.

Figures come from ``CompressedModel.figures`` (filled by evaluation) and from the checkpoint
itself (parameter counts, file sizes); anything not measured says so.
"""

from __future__ import annotations

import statistics

from lowrank_lab.checkpoint.format import LowrankSection
from lowrank_lab.dtypes import BYTES_PER_ELEMENT

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
    return "; ".join(f"{k}: {v}" for k, v in calibration.items())


def figures_table(figures: dict, section: LowrankSection, weights_bytes: int) -> str:
    """A markdown table: parameters, size and perplexity, dense vs compressed."""
    bytes_per = BYTES_PER_ELEMENT[section.dtype]
    dense_params = figures.get("params_dense")
    dense_size = dense_params * bytes_per if isinstance(dense_params, (int, float)) else None
    eval_text = figures.get("eval_text") or "evaluation text not named"
    tokens = figures.get("eval_tokens")
    where = f"{eval_text}, {int(tokens):,} tokens" if isinstance(tokens, (int, float)) else eval_text
    rows = [
        ("parameters", _count(dense_params), _count(figures.get("params_compressed"))),
        (
            "linear-layer parameters",
            _count(figures.get("linear_params_dense")),
            _count(figures.get("linear_params_compressed")),
        ),
        (f"weights on disk ({section.dtype})", human_bytes(dense_size), human_bytes(weights_bytes)),
        (f"perplexity ({where})", _ppl(figures.get("perplexity_dense")), _ppl(figures.get("perplexity_compressed"))),
    ]
    lines = ["| | dense | compressed |", "| --- | --- | --- |"]
    lines += [f"| {name} | {before} | {after} |" for name, before, after in rows]
    return "\n".join(lines)


def model_card(section: LowrankSection, figures: dict, weights_bytes: int, has_tokenizer: bool) -> str:
    """The README.md of a compressed checkpoint.

    Args:
        section: the checkpoint's ``lowrank`` section.
        figures: measured figures (canonical keys of ``CompressedModel.figures``).
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

{figures_table(figures, section, weights_bytes)}

## Loading

With lowrank_lab:

```python
from lowrank_lab import load_compressed
model = load_compressed("path/to/this/folder")
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
