"""What every subcommand checks before it loads a model or starts work.

Each check raises a :class:`~lowrank_lab.errors.LowrankLabError` whose message names the
option, the value and the fix, so the command line prints one line and exits 2. The
model-dependent checks (sequence lengths within the model's positions) run twice: on the
config read from disk before loading when it is at hand (:func:`peek_config`), and on the
loaded model's config before any work.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

from lowrank_lab.errors import CheckpointError, DataError, InvalidRankPlan, SettingsError
from lowrank_lab.models.limits import max_positions

MAX_PLAN_BYTES = 16 * 2**20


def integer(value: int, option: str, minimum: int, maximum: int | None = None, example: int | None = None) -> int:
    """``value`` when ``minimum ≤ value ≤ maximum``, else a SettingsError naming ``option``."""
    hint = f"; use e.g. {example}" if example is not None else ""
    if value < minimum:
        raise SettingsError(f"{option} {value} is too small: use {option} {minimum} or more{hint}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{option} {value} is too large: use {option} {maximum} or less{hint}")
    return value


def number(
    value: float,
    option: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    example: str = "",
) -> float:
    """``value`` when it is finite and in the range (open or closed ends), else a SettingsError naming ``option``."""
    hint = f"; use e.g. {example}" if example else ""
    if not math.isfinite(value):
        raise SettingsError(f"{option} {value}: not a finite number{hint}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        right = ")" if high is None else right
        span = f"{left}{'-∞' if low is None else f'{low:g}'}, {'∞' if high is None else f'{high:g}'}{right}"
        raise SettingsError(f"{option} {value:g} is outside {span}{hint}")
    return value


def needs(args, requires: str, *names: str) -> None:
    """Refuse options given without the option they only work with (``--zip`` without ``--out``)."""
    for name in names:
        value = getattr(args, name, None)
        if value not in (None, False):
            flag = "--" + name.replace("_", "-")
            raise SettingsError(f"{flag} only applies with {requires}; add {requires} or drop {flag}")


def exclusive(args, first: str, *others: str) -> None:
    """Refuse any of ``others`` given together with ``first`` (options whose default is None/False)."""
    if getattr(args, first, None) in (None, False):
        return
    for name in others:
        if getattr(args, name, None) not in (None, False):
            a, b = "--" + first.replace("_", "-"), "--" + name.replace("_", "-")
            raise SettingsError(f"{a} and {b} cannot be used together; give one of them")


def dtype(value: str, option: str = "--dtype") -> str:
    """The canonical dtype name (``float32``, ``float16``, ``bfloat16``) for ``value``."""
    from lowrank_lab.dtypes import ALIASES

    name = str(value).strip().lower().removeprefix("torch.")
    if name not in ALIASES:
        raise SettingsError(f"{option} {value!r}: use float32, float16 or bfloat16 (or fp32, fp16, bf16)")
    return ALIASES[name]


def device(value: str | None, option: str = "--device") -> str | None:
    """``value`` when that device exists here (``cpu``, ``cuda``, ``cuda:N``, ``mps``), else a clear error."""
    from lowrank_lab.checks import check_device

    if value is None:
        return None
    try:
        return str(check_device(value.strip().lower()))
    except SettingsError as err:
        raise SettingsError(str(err).replace(f"device {value.strip().lower()!r}", f"{option} {value}")) from None


# -- the model's config, before and after loading --------------------------------------------------


def peek_config(source: str) -> dict | None:
    """The model's config as a dict when it can be read without loading weights, else None.

    Tiny models build theirs in milliseconds; a local folder, a ``.safetensors`` file with its
    config beside it, or a ``.zip`` checkpoint hold a config.json; the built-in smollm2-135m
    has one once converted. A hub id is not looked up.
    """
    from lowrank_lab.models.spec import TINY_MODELS

    if source in TINY_MODELS:
        from lowrank_lab.models.tiny import tiny_model

        return tiny_model(source).config.to_dict()
    if source == "smollm2-135m":
        from lowrank_lab.paths import cache_dir

        found = sorted(cache_dir("models").glob("smollm2-135m-*/config.json"))
        return _json_file(found[-1]) if found else None
    path = Path(source).expanduser()
    try:
        if path.is_dir():
            return _json_file(path / "config.json")
        if path.is_file() and path.suffix == ".safetensors":
            return _json_file(path.parent / "config.json")
        if path.is_file() and path.suffix.lower() == ".zip":
            return _zip_config(path)
    except OSError:
        return None
    return None


def _json_file(path: Path) -> dict | None:
    try:
        if not path.is_file() or path.stat().st_size > MAX_PLAN_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None  # the loader says what is wrong with it
    return data if isinstance(data, dict) else None


def _zip_config(path: Path) -> dict | None:
    try:
        with zipfile.ZipFile(path) as zf:
            names = sorted((n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "config.json"), key=len)
            if not names or zf.getinfo(names[0]).file_size > MAX_PLAN_BYTES:
                return None
            data = json.loads(zf.read(names[0]).decode("utf-8"))
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, ValueError, RecursionError, KeyError):
        return None
    return data if isinstance(data, dict) else None


def fits_positions(value: int, option: str, config: dict | None, model: str) -> None:
    """Refuse a sequence length longer than the model's positions."""
    limit = max_positions(config)
    if limit is not None and value > limit:
        raise SettingsError(
            f"{option} {value} is longer than {model} can read ({limit} positions); use {option} {limit} or less"
        )


# -- inputs read from files ---------------------------------------------------------------------------


def text_file(path: str | Path, option: str) -> str:
    """A UTF-8 text file given to ``option``, read with every check (regular file, size, encoding)."""
    from lowrank_lab.data.text import read_text_file

    return read_text_file(path, f"{option}")


def plan_file(path: str | Path, option: str = "--plan"):
    """A rank plan JSON file given to ``option``, parsed (not yet checked against a model)."""
    from lowrank_lab.data.files import read_user_file
    from lowrank_lab.plan import RankPlan

    try:
        data = read_user_file(path, f"{option}", MAX_PLAN_BYTES, "give a JSON file of module name → rank")
    except DataError as err:
        raise InvalidRankPlan(str(err)) from None
    try:
        plan = RankPlan.from_json(data)
    except InvalidRankPlan as err:
        raise InvalidRankPlan(f"{option} {path}: {err}") from None
    if not len(plan):
        raise InvalidRankPlan(
            f"{option} {path} names no module, so nothing would be compressed; give module name → rank entries "
            'such as {"model.layers.0.mlp.up_proj": 64}, or use --keep'
        )
    return plan


def require_tokenizer(loaded, what: str) -> None:
    """Refuse work that reads text when the model has no tokenizer, saying why it has none."""
    if loaded.tokenizer is None:
        why = next((n for n in loaded.notes if "tokenizer" in n.lower()), "")
        raise DataError(
            f"{loaded.title} has no tokenizer, so it cannot {what}. {why} Load a model that ships its tokenizer files".replace(
                "  ", " "
            )
        )


def enough_tokens(tokenizer, text: str, need: int, what: str, fix: str) -> None:
    """Refuse a text with fewer than ``need`` tokens, naming the text and the options to change."""
    n = len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    if n < need:
        raise DataError(f"{what} has {n:,} tokens, fewer than the {need:,} needed; {fix}")


def compressed_source(path: str) -> dict:
    """The ``lowrank`` section of a compressed checkpoint (folder or zip) as a dict, read without loading it."""
    from lowrank_lab.data.files import user_path

    p = user_path(path, "--compressed")
    config = peek_config(str(p)) if p.exists() else None
    if not p.exists():
        raise CheckpointError(f"--compressed {path} does not exist; give a compressed checkpoint folder or its .zip")
    if config is None:
        raise CheckpointError(
            f"--compressed {path} holds no readable config.json; give a folder (or .zip) written by "
            "lowrank_lab compress --out"
        )
    section = config.get("lowrank")
    if not isinstance(section, dict):
        raise CheckpointError(
            f"--compressed {path} is not a lowrank_lab compressed checkpoint (its config.json has no 'lowrank' "
            "section); to fine-tune a plain model, pass it as --model"
        )
    return config
