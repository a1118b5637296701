"""The block-sequential compression engine: one block in memory, inputs through the compressed blocks.

For each block k, in order:

1. its weights are materialised (float32) from the source;
2. the dense block runs on the *dense stream* (what the dense blocks 0..k−1 produce): its output
   is the next dense stream, and the inputs of its linear layers are kept as refit targets;
3. its linear layers are compressed group by group in the order the forward calls them (q/k/v,
   then o, then gate/up, then down): each group's inputs are collected on the *shifted stream*
   (what the compressed blocks 0..k−1, and the groups of block k already compressed, produce),
   and each layer gets the rank-r weight closest to the dense layer's outputs on the dense
   stream (:mod:`lowrank_lab.compress.refit`: closed form, exact);
4. the compressed block runs on the shifted stream: its output is the next shifted stream;
5. the block is handed to the sink (kept in memory, or written out and freed).

Linear layers outside the blocks (an untied output head) are compressed last, on the shifted
stream through the model's own final norm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lowrank_lab.compress.blocks import (
    BlockInputs,
    BlockLayout,
    _Stop,
    capture_block_inputs,
    linear_call_groups,
    replayed_blocks,
    run_block,
)
from lowrank_lab.compress.factorize import lapack_thread, pca_factors, svd_decomposition
from lowrank_lab.compress.refit import PairStats, anchored_decomposition, output_decomposition
from lowrank_lab.compress.sources import materialize, materialize_outside, release_outside
from lowrank_lab.errors import SettingsError
from lowrank_lab.layers import is_linear, weight_out_in
from lowrank_lab.lowrank import LowRankLinear, set_submodule
from lowrank_lab.progress import ProgressFn, report


@dataclass(frozen=True)
class EngineSettings:
    """How the walk calibrates each layer (the defaults are what the benchmark found to pay).

    Attributes:
        sequential: calibrate block k on what the compressed blocks before it produce (else
            on the dense model's activations, like a whole-model pass).
        anchored: match each layer's outputs to the dense layer's outputs on the dense stream
            (else to the dense layer's outputs on the shifted inputs).
        within_block: compress a block's layer groups one after the other, each on the outputs
            of the groups compressed before it (else all groups on the block's dense internals).
        residual: the block's last layer (down_proj) is fitted so that the whole shifted block's
            output matches the dense block's output (it absorbs the drift the residual stream
            carries), where the block adds that layer's output to its residual.
        ridge: λ of the refit's X̃ᵀX̃ + λI, as a multiple of its mean diagonal (0.1: on
            smollm2-135m at 40% removed, perplexity 42.9 against 45.0 with 0.01 and 45.5 with 0.3).
        refine_steps: Adam steps on each block's factors against the dense block's outputs
            (0: none).
        refine_lr: their learning rate.
        batch_size: calibration blocks per forward pass.
    """

    sequential: bool = True
    anchored: bool = True
    within_block: bool = True
    residual: bool = False
    ridge: float = 1e-1
    refine_steps: int = 0
    refine_lr: float = 1e-4
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not 0 <= self.ridge < 10:
            raise SettingsError(f"the refit ridge must lie in [0, 10), got {self.ridge!r}")
        if self.refine_steps < 0 or self.batch_size < 1:
            raise SettingsError(
                f"refine_steps must be ≥ 0 and batch_size ≥ 1, got {self.refine_steps}, {self.batch_size}"
            )


BlockSink = Callable[[nn.Module, str], None]


def _decompose(
    module: nn.Module, weight: torch.Tensor, method: str, stats: PairStats | None, ridge: float
) -> Callable[[int], LowRankLinear]:
    """One layer's ordered decomposition, as a function rank → its rank-r :class:`LowRankLinear`.

    The decomposition does not depend on the rank (``pca`` projects on the top r components of
    one eigendecomposition), so plans that differ only in ranks share it.
    """
    bias = None if module.bias is None else module.bias.detach()
    dtype, device = module.weight.dtype, module.weight.device
    decomposition = None
    if method != "pca":
        with lapack_thread():
            if method == "svd":
                decomposition = svd_decomposition(weight)
            else:
                decomposition = anchored_decomposition(weight, stats, ridge)

    def layer(rank: int) -> LowRankLinear:
        new_bias = bias
        with lapack_thread():
            if decomposition is None:
                b, a, new_bias = pca_factors(weight, bias, stats, rank)
            else:
                b, a = decomposition.factors(rank)
        return LowRankLinear.from_factors(
            b.to(dtype=dtype, device=device),
            a.to(dtype=dtype, device=device),
            None if new_bias is None else new_bias.to(dtype=dtype, device=device),
        )

    return layer


class Walk:
    """One block-sequential compression of a model from a weight source.

    Args:
        model: the skeleton (parameters on meta) this walk fills and compresses; it becomes the
            compressed model when every block is kept.
        layout: where its blocks are.
        source: where weights come from.
        ranks: module name → rank, only the layers to factorize.
        method: ``svd``, ``whitened`` or ``pca``.
        settings: how to calibrate.
        device: where the block work runs.
        variants: other (skeleton, ranks) pairs compressed in the same walk, each layer's
            decomposition computed once for all of them; only with ``settings.sequential`` off
            (every plan then sees the same dense activations). The sink is called for each.
        free_outside: free the tensors outside the blocks (embeddings, final norm, head) once the
            block inputs are captured and read them again from the source after the last block,
            so the block work runs without them (for a 7B model, 1 GiB of float32).
    """

    def __init__(
        self,
        model,
        layout: BlockLayout,
        source,
        ranks: dict[str, int],
        method: str,
        settings,
        device,
        variants: Sequence[tuple[nn.Module, dict[str, int]]] = (),
        free_outside: bool = False,
    ):
        self.model = model
        self.layout = layout
        self.source = source
        self.ranks = ranks
        self.method = method
        self.settings = settings
        self.device = torch.device(device)
        # A walk with nothing to factorize (every rank at break-even, a budget of 100%) needs no
        # calibration stream, whatever the method: its blocks are only copied.
        self.data_aware = method != "svd" and bool(ranks or any(r for _, r in variants))
        self.anchored = settings.anchored and settings.sequential and method == "whitened"
        if variants and settings.sequential:
            raise SettingsError("other plans can share a walk only on the dense model's activations (sequential off)")
        self.variants = list(variants)
        if free_outside and variants:
            raise SettingsError("the tensors outside the blocks can be freed during a walk of one plan only")
        self.free_outside = free_outside

    def run(self, batches: list[torch.Tensor], sink: BlockSink | None, progress: ProgressFn | None) -> None:
        """Compress every block in order (then the layers outside the blocks), calling ``sink`` per block."""
        n = self.layout.count
        total = n + 1
        dense = shifted = None
        if self.data_aware:
            stem = capture_block_inputs(self.model, self.layout, batches, self.device)
            dense = stem.hidden
            shifted = [h.clone() for h in dense] if self.settings.sequential else None
            kwargs = stem.kwargs
        if self.free_outside:  # the blocks need only their inputs; the stem and tail come back at the end
            release_outside(self.model, self.layout.prefix)
        for k in range(n):
            name = self.layout.name(k)
            materialize(self.model, name, self.source)
            block = self.model.get_submodule(name).to(self.device)
            others = []
            for model, _ in self.variants:
                materialize(model, name, self.source)
                others.append(model.get_submodule(name).to(self.device))
            step = f"block {k + 1}/{n}"
            if self.data_aware:
                dense, shifted = self._block(
                    block, name, BlockInputs(dense, kwargs), shifted, progress, step, k, total, others
                )
            else:
                self._factor_plain(block, name, others)
            if sink is not None:
                sink(self.model, name)
                for model, _ in self.variants:
                    sink(model, name)
            report(progress, k + 1, total, f"{step}: done")
        if self.free_outside:
            materialize_outside(self.model, self.layout.prefix, self.source)
            move_outside_blocks(self.model, self.layout, self.device)
        self._outside(batches, dense, shifted)
        report(progress, total, total, "done")

    # -- one block -------------------------------------------------------------------------

    def _planned(self, block: nn.Module, prefix: str, ranks: dict[str, int] | None = None) -> dict[str, int]:
        ranks = self.ranks if ranks is None else ranks
        out = {}
        for rel, module in block.named_modules():
            full = f"{prefix}.{rel}"
            if rel and is_linear(module) and full in ranks:
                out[rel] = ranks[full]
        return out

    def _all_planned(self, block: nn.Module, prefix: str) -> list[dict[str, int]]:
        """The block's planned layers (relative name → rank) of this walk's plan, then of each variant."""
        return [self._planned(block, prefix)] + [self._planned(block, prefix, r) for _, r in self.variants]

    def _factor_plain(self, block: nn.Module, prefix: str, others=()) -> None:
        plans = self._all_planned(block, prefix)
        for rel in dict.fromkeys(rel for plan in plans for rel in plan):
            module = block.get_submodule(rel)
            layer_of = _decompose(module, weight_out_in(module).float(), "svd", None, 0.0)
            for target, plan in zip([block, *others], plans):
                if rel in plan:
                    set_submodule(target, rel, layer_of(plan[rel]))

    def _block(self, block, prefix, inputs: BlockInputs, shifted, progress, step, k, total, others=()):
        kwargs = inputs.kwargs
        if not self.settings.sequential:  # on the dense model's activations: one pass, each layer
            plans = self._all_planned(block, prefix)  # decomposed once for this plan and every variant's
            union = {rel for plan in plans for rel in plan}
            groups = [[r for r in g if r in union] for g in linear_call_groups(block, inputs.hidden[0], kwargs[0])]
            groups = [g for g in groups if g]
            captured, dense_next = self._run_capturing(block, inputs.hidden, kwargs, groups, False)
            for gi, group in enumerate(groups):
                self._factor_group(block, group, plans[0], captured[gi], None, others, plans[1:])
            return dense_next, None
        planned = self._planned(block, prefix)
        groups = [[rel for rel in g if rel in planned] for g in linear_call_groups(block, inputs.hidden[0], kwargs[0])]
        groups = [g for g in groups if g]
        # Dense pass: the next dense stream, and (when anchored) each group's dense inputs.
        captured, dense_next = self._run_capturing(block, inputs.hidden, kwargs, groups if self.anchored else [], False)
        if self.settings.within_block:
            for gi, group in enumerate(groups):
                report(progress, k, total, f"{step}: {', '.join(r.rsplit('.', 1)[-1] for r in group)}")
                last = gi == len(groups) - 1
                if last and self.anchored and self.settings.residual and len(group) == 1:
                    if self._residual_fit(block, group[0], planned[group[0]], shifted, kwargs, dense_next):
                        continue
                shifted_in, _ = self._run_capturing(block, shifted, kwargs, [group], True)
                self._factor_group(block, group, planned, shifted_in[0], captured[gi] if self.anchored else None)
        else:
            shifted_in, _ = self._run_capturing(block, shifted, kwargs, groups, True)
            for gi, group in enumerate(groups):
                self._factor_group(block, group, planned, shifted_in[gi], captured[gi] if self.anchored else None)
        if self.settings.refine_steps:
            self._refine(block, shifted, kwargs, dense_next)
        with torch.no_grad():
            shifted_next = [run_block(block, h, kw) for h, kw in zip(shifted, kwargs)]
        return dense_next, shifted_next

    def _run_capturing(self, block, hidden, kwargs, groups, stop_early):
        """Run ``block`` on each batch; keep the input of each group's first layer per batch.

        With ``stop_early`` the pass ends once the last group's input is seen (no output).
        """
        captured: list[list[torch.Tensor]] = [[] for _ in groups]
        handles = []
        for gi, group in enumerate(groups):
            last = gi == len(groups) - 1

            def hook(module, args, gi=gi, last=last):
                captured[gi].append(args[0].detach().float())
                if stop_early and last:
                    raise _Stop

            handles.append(block.get_submodule(group[0]).register_forward_pre_hook(hook))
        outputs = []
        try:
            with torch.no_grad():
                for h, kw in zip(hidden, kwargs):
                    try:
                        outputs.append(run_block(block, h, kw))
                    except _Stop:
                        pass
        finally:
            for h in handles:
                h.remove()
        return captured, outputs

    def _factor_group(self, block, group, planned, shifted_in, dense_in, others=(), other_plans=()) -> None:
        stats = None
        if self.method != "svd":
            stats = PairStats(shifted_in[0].shape[-1], cross=dense_in is not None, device=shifted_in[0].device)
            for i, x in enumerate(shifted_in):
                stats.add(x, None if dense_in is None else dense_in[i])
        targets, plans = [block, *others], [planned, *other_plans]
        for rel in group:
            module = block.get_submodule(rel)
            layer_of = _decompose(module, weight_out_in(module).float(), self.method, stats, self.settings.ridge)
            for target, plan in zip(targets, plans):
                if rel in plan:
                    set_submodule(target, rel, layer_of(plan[rel]))

    def _residual_fit(self, block, rel, rank, shifted, kwargs, dense_next) -> bool:
        """Fit the block's last layer to (dense block output − the rest of the shifted block's output).

        Returns False (nothing done) when the block does not simply add that layer's output.
        """
        module = block.get_submodule(rel)
        seen: dict = {}

        def pre(m, args):
            seen["x"] = args[0].detach().float()

        def post(m, args, output):
            seen["y"] = output.detach().float()
            if seen.get("double"):
                return output * 2

        handles = [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
        try:
            with torch.no_grad():
                out = run_block(block, shifted[0], kwargs[0])
                seen["double"] = True
                out2 = run_block(block, shifted[0], kwargs[0])
                seen["double"] = False
                if not torch.allclose(out2 - out, seen["y"], rtol=1e-3, atol=1e-4 * float(out.abs().max())):
                    return False
                dim_in = seen["x"].shape[-1]
                stats = PairStats(dim_in, cross=False, device=seen["x"].device)
                w = weight_out_in(module).float()
                bias = None if module.bias is None else module.bias.detach().float()
                cross = torch.zeros(w.shape[0], dim_in, dtype=torch.float64, device=w.device)
                for h, kw, target in zip(shifted, kwargs, dense_next):
                    out = run_block(block, h, kw)
                    x, y = seen["x"], seen["y"]
                    want = target - (out - y)  # what the layer must add: dense output minus the rest
                    if bias is not None:
                        want = want - bias
                    stats.add(x)
                    xs = x.reshape(-1, dim_in)
                    ws = want.reshape(-1, want.shape[-1])
                    for start in range(0, xs.shape[0], 256):
                        cross += (ws[start : start + 256].T @ xs[start : start + 256]).double()
        finally:
            for h in handles:
                h.remove()
        with lapack_thread():
            b, a = output_decomposition(w, cross, stats, self.settings.ridge).factors(rank)
        dtype, device = module.weight.dtype, module.weight.device
        layer = LowRankLinear.from_factors(
            b.to(dtype=dtype, device=device),
            a.to(dtype=dtype, device=device),
            None if bias is None else module.bias.detach().to(dtype=dtype, device=device),
        )
        set_submodule(block, rel, layer)
        return True

    def _refine(self, block, shifted, kwargs, dense_next) -> None:
        params = [p for m in block.modules() if isinstance(m, LowRankLinear) for p in (m.A.weight, m.B.weight)]
        if not params:
            return
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=self.settings.refine_lr)
        try:
            with torch.enable_grad():
                for step in range(self.settings.refine_steps):
                    i = step % len(shifted)
                    out = run_block(block, shifted[i], kwargs[i])
                    loss = (out - dense_next[i]).square().mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        finally:
            for p in params:
                p.requires_grad_(False)

    # -- layers outside the blocks -----------------------------------------------------------

    def _outside(self, batches, dense, shifted) -> None:
        """Linear layers outside the blocks (an untied head), on the shifted stream through the tail."""
        models = [self.model, *(m for m, _ in self.variants)]
        plans = [
            {n: r for n, r in ranks.items() if self.layout.block_of(n) is None and is_linear(model.get_submodule(n))}
            for model, ranks in zip(models, [self.ranks, *(r for _, r in self.variants)])
        ]
        names = list(dict.fromkeys(n for plan in plans for n in plan))
        if not names:
            return
        for model in models:
            for name in names:
                if model.get_submodule(name).weight.is_meta:
                    materialize(model, name, self.source)
        dense_in = shifted_in = None
        if self.data_aware:
            dense_in = self._tail_inputs(batches, dense, names) if self.anchored else None
            shifted_in = self._tail_inputs(batches, shifted if shifted is not None else dense, names)
        for name in names:
            module = self.model.get_submodule(name)
            stats = None
            if self.data_aware:
                stats = PairStats(
                    module.weight.shape[-1] if isinstance(module, nn.Linear) else module.weight.shape[0],
                    cross=dense_in is not None,
                    device=self.device,
                )
                for i, x in enumerate(shifted_in[name]):
                    stats.add(x, None if dense_in is None else dense_in[name][i])
            method = self.method if self.data_aware else "svd"
            layer_of = _decompose(module, weight_out_in(module).float(), method, stats, self.settings.ridge)
            for model, plan in zip(models, plans):
                if name in plan:
                    set_submodule(model, name, layer_of(plan[name]))

    def _tail_inputs(self, batches, hidden, names) -> dict[str, list[torch.Tensor]]:
        captured: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        handles = []
        for n in names:

            def hook(module, args, n=n):
                captured[n].append(args[0].detach().float())
                if n == names[-1]:
                    raise _Stop

            handles.append(self.model.get_submodule(n).register_forward_pre_hook(hook))
        try:
            with torch.no_grad(), replayed_blocks(self.model, self.layout) as replay:
                for ids, h in zip(batches, hidden):
                    replay(h)
                    try:
                        self.model(input_ids=ids.to(self.device), use_cache=False)
                    except _Stop:
                        pass
        finally:
            for h in handles:
                h.remove()
        return captured


def move_outside_blocks(model: nn.Module, layout: BlockLayout, device: torch.device) -> None:
    """Move every real (not meta) tensor outside the blocks to ``device``: the stem and tail run there."""
    head = layout.prefix + "."
    for name, module in model.named_modules():
        if name == layout.prefix or name.startswith(head):
            continue
        for param in module._parameters.values():
            if param is not None and not param.is_meta and param.device != device:
                param.data = param.data.to(device)  # in place: a tied parameter stays one object
        for key, buf in list(module._buffers.items()):
            if buf is not None and not buf.is_meta and buf.device != device:
                module._buffers[key] = buf.to(device)
