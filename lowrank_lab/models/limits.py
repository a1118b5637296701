"""What a model can read: how many positions, checked before text is fed to it."""

from __future__ import annotations

from lowrank_lab.errors import SettingsError

_POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length")


def max_positions(config) -> int | None:
    """The number of positions a config gives (``max_position_embeddings``, GPT-2's ``n_positions``), or None.

    Args:
        config: a transformers config or its ``to_dict()``.
    """
    if config is None:
        return None
    get = config.get if isinstance(config, dict) else (lambda key: getattr(config, key, None))
    for key in _POSITION_KEYS:
        value = get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_seq_len(model, seq_len: int, what: str = "seq_len") -> None:
    """Refuse a sequence longer than the model's positions (GPT-2 would fail deep inside with an IndexError).

    Raises:
        SettingsError: naming the length, the model's limit and the setting to change.
    """
    from lowrank_lab.checks import require

    require(seq_len, int, what)
    limit = max_positions(getattr(model, "config", None))
    if limit is not None and seq_len > limit:
        name = type(model).__name__
        raise SettingsError(f"{what} {seq_len} is longer than {name} can read ({limit} positions); use {limit} or less")
