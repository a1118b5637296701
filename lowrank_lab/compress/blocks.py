"""A transformers model seen as a stem, a run of repeated blocks and a tail.

The engine walks the repeated blocks (decoder layers) one at a time, so it needs three things
no transformers class exposes under one name:

- where the blocks are: the ``ModuleList`` whose entries hold the most linear layers
  (``model.layers`` for Llama, ``transformer.h`` for GPT-2, ``encoder.layer`` for BERT);
- what enters block 0: the model's own forward runs up to block 0 and is stopped there by a
  pre-hook that keeps the hidden states and the keyword arguments every block receives
  (rotary position embeddings, the attention mask), so no architecture's stem is rewritten here;
- what the tail does with the last block's output: the blocks are swapped for stand-ins that
  hand back given hidden states, and the model's own forward runs the final norm and the head.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from lowrank_lab.errors import SettingsError
from lowrank_lab.layers import is_linear


@dataclass(frozen=True)
class BlockLayout:
    """Where a model's repeated blocks are.

    Attributes:
        prefix: the ModuleList's name (``model.layers``).
        count: how many blocks it holds.
    """

    prefix: str
    count: int

    def name(self, index: int) -> str:
        """The module name of block ``index`` (``model.layers.3``)."""
        return f"{self.prefix}.{index}"

    def block_of(self, module_name: str) -> int | None:
        """The block a module name lies in, or None for stem and tail modules."""
        head = self.prefix + "."
        if not module_name.startswith(head):
            return None
        index = module_name[len(head) :].split(".", 1)[0]
        return int(index) if index.isdigit() and int(index) < self.count else None


def block_layout(model: nn.Module) -> BlockLayout:
    """Find the repeated blocks: the ModuleList whose entries hold the most linear layers.

    Raises:
        SettingsError: the model has no ModuleList of blocks with linear layers.
    """
    best, best_count = None, 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        n_linear = sum(is_linear(m) for m in module.modules())
        if n_linear > best_count:
            best, best_count = (name, len(module)), n_linear
    if best is None:
        raise SettingsError(
            f"{type(model).__name__} has no list of repeated blocks with linear layers, so it cannot be "
            "compressed block by block; use a transformer model (Llama, GPT-2, BERT, ...)"
        )
    return BlockLayout(*best)


class _Stop(Exception):
    """Raised by the capture hook to end a forward pass at block 0."""


@dataclass
class BlockInputs:
    """What enters block 0 for each calibration batch: hidden states and the blocks' keyword arguments.

    Attributes:
        hidden: per batch, (batch, seq_len, hidden) float32.
        kwargs: per batch, the keyword arguments block 0 received (position embeddings, mask, ...).
    """

    hidden: list[torch.Tensor]
    kwargs: list[dict]


def capture_block_inputs(
    model: nn.Module, layout: BlockLayout, batches: list[torch.Tensor], device: torch.device | str = "cpu"
) -> BlockInputs:
    """Run the model's stem on each batch and keep what enters block 0.

    Args:
        model: the model; only its stem needs real weights (blocks may be on the meta device).
        layout: where its blocks are.
        batches: token ids, each (batch, seq_len) int64.
        device: where the batches run.

    Returns:
        The inputs of block 0, one entry per batch.
    """
    first = model.get_submodule(layout.name(0))
    seen: dict = {}

    def hook(module, args, kwargs):
        seen["hidden"] = args[0] if args else kwargs.pop("hidden_states")
        seen["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Stop

    hidden, kwargs = [], []
    handle = first.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            for ids in batches:
                try:
                    model(input_ids=ids.to(device), use_cache=False)
                except _Stop:
                    pass
                hidden.append(seen["hidden"].float())
                kwargs.append(seen["kwargs"])
    finally:
        handle.remove()
    return BlockInputs(hidden, kwargs)


def run_block(block: nn.Module, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """One block's forward; returns its hidden states (blocks of some models return a tuple)."""
    out = block(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out


class _Replay(nn.Module):
    """A stand-in block that returns given hidden states whatever it receives."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden

    def forward(self, hidden_states=None, *args, **kwargs):
        return self.hidden


class _PassThrough(nn.Module):
    """A stand-in block that returns its input unchanged."""

    def forward(self, hidden_states=None, *args, **kwargs):
        return hidden_states


@contextmanager
def replayed_blocks(model: nn.Module, layout: BlockLayout) -> Iterator:
    """Swap the blocks for stand-ins so the model's forward maps the last block's output to logits.

    Yields a function ``set(hidden)``: the next forward pass (on token ids of the same shape)
    skips every block and feeds ``hidden`` to the tail (final norm, head). The blocks are put
    back on exit. Only for a model the engine owns: never the shared loaded model.
    """
    blocks = model.get_submodule(layout.prefix)
    saved = list(blocks)
    replay = _Replay(torch.empty(0))
    try:
        blocks[0] = replay
        for i in range(1, len(saved)):
            blocks[i] = _PassThrough()

        def set_hidden(hidden: torch.Tensor) -> None:
            replay.hidden = hidden

        yield set_hidden
    finally:
        for i, block in enumerate(saved):
            blocks[i] = block


def linear_call_groups(block: nn.Module, hidden: torch.Tensor, kwargs: dict) -> list[list[str]]:
    """The block's linear layers in the order its forward calls them, grouped by shared input.

    Layers reading the very same input tensor (q/k/v; gate/up) form one group; a later group
    may read what an earlier one produced, so the engine compresses groups in this order.

    Returns:
        Module names relative to the block, e.g. ``[["self_attn.q_proj", "self_attn.k_proj",
        "self_attn.v_proj"], ["self_attn.o_proj"], ...]``.
    """
    order: list[tuple[str, int]] = []
    held: list[torch.Tensor] = []  # keeps inputs alive so their ids stay unique

    def hook(name):
        def fn(module, args):
            x = args[0]
            held.append(x)
            order.append((name, id(x)))

        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in block.named_modules() if is_linear(m)]
    try:
        with torch.no_grad():
            run_block(block, hidden, kwargs)
    finally:
        for h in handles:
            h.remove()
    groups: list[list[str]] = []
    last = None
    for name, key in order:
        if groups and key == last and name not in groups[-1]:
            groups[-1].append(name)
        elif not any(name in g for g in groups):
            groups.append([name])
        last = key
    return groups
