"""Dense against compressed: perplexity, generations, parameters, latency and peak memory, on tiny models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowrank_lab.comparison import EvalSettings, compare
from lowrank_lab.errors import DataError, SettingsError
from lowrank_lab.measure import model_bytes, paired_latency, peak_forward_memory
from tests.unit.export_support import compressed_model

FAST = EvalSettings(
    seq_len=32, max_blocks=4, max_new_tokens=6, latency_tokens=16, latency_repeats=2, prompts=("def f(",)
)


class _EmbedThenLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 1000)
        self.linear = nn.Linear(1000, 1000)

    def forward(self, input_ids):
        return self.linear(self.embed(input_ids))  # (1, 10, 1000) twice: 40,000 bytes each in fp32


def test_peak_memory_counts_weights_and_live_activations():
    net = _EmbedThenLinear()
    ids = torch.arange(10).unsqueeze(0)  # (1, 10)
    extra = peak_forward_memory(net, ids) - model_bytes(net)
    assert model_bytes(net) == (50 * 1000 + 1000 * 1000 + 1000) * 4
    assert 80_000 <= extra <= 200_000  # embedding output and linear output are alive together
    longer = peak_forward_memory(net, torch.arange(40).unsqueeze(0) % 50) - model_bytes(net)
    assert longer >= 4 * 80_000  # activations grow with the sequence


def test_paired_latency_times_both_models():
    net = _EmbedThenLinear()
    latency = paired_latency(net, net, torch.arange(10).unsqueeze(0), repeats=3)
    assert latency.first_ms > 0 and latency.second_ms > 0 and latency.repeats == 3
    assert latency.ratio == pytest.approx(latency.second_ms / latency.first_ms)


def test_compare_half_rank_model(tiny_llama):
    compressed = compressed_model(tiny_llama, keep=0.5)
    before = {k: v.clone() for k, v in tiny_llama.model.state_dict().items()}
    result = compare(tiny_llama, compressed, FAST)
    assert result.compressed.params < result.dense.params
    assert result.compressed.bytes < result.dense.bytes
    assert result.dense.perplexity > 1 and result.compressed.perplexity > 1
    assert result.compressed.perplexity != result.dense.perplexity
    assert result.compressed.peak_memory_bytes > result.compressed.bytes
    assert result.compressed.peak_memory_bytes < result.dense.peak_memory_bytes  # smaller weights, same activations
    assert [g.prompt for g in result.generations] == ["def f("]
    assert result.eval_tokens == 4 * 32
    figures = result.figures()  # compare returns what it measured; the compressed model is not written into
    assert figures["perplexity_dense"] == result.dense.perplexity
    assert figures["params_compressed"] == result.compressed.params == compressed.params.compressed
    assert all(torch.equal(before[k], v) for k, v in tiny_llama.model.state_dict().items())


def test_full_rank_model_generates_what_the_dense_one_does(tiny_llama):
    compressed = compressed_model(tiny_llama, keep=10.0)  # ranks past break-even: every layer at full rank
    result = compare(tiny_llama, compressed, FAST)
    assert result.compressed.perplexity == pytest.approx(result.dense.perplexity, rel=1e-4)
    assert result.generations[0].dense == result.generations[0].compressed


def test_encoder_has_no_perplexity_but_the_rest(tiny_bert):
    compressed = compressed_model(tiny_bert, keep=0.5)
    result = compare(tiny_bert, compressed, FAST)
    assert result.dense.perplexity is None and result.generations == ()
    assert "perplexity_dense" not in result.figures()
    assert result.compressed.params < result.dense.params


def test_bad_settings_and_text(tiny_llama):
    with pytest.raises(SettingsError, match="seq_len=1"):
        EvalSettings(seq_len=1)
    with pytest.raises(SettingsError, match="at least 1"):
        EvalSettings(latency_repeats=0)
    compressed = compressed_model(tiny_llama, keep=0.5)
    with pytest.raises(DataError, match="tokens"):
        compare(tiny_llama, compressed, EvalSettings(text="too short", seq_len=32, max_blocks=2))


def test_dense_figures_are_measured_once_per_model_and_text(tiny_llama):
    from lowrank_lab.cache import KeyedCache
    from lowrank_lab.evaluate import block_perplexity, eval_blocks

    cache = KeyedCache(name="test dense figures")
    first = compare(tiny_llama, compressed_model(tiny_llama, keep=0.5), FAST, cache=cache)
    steps: list[str] = []
    second = compare(tiny_llama, compressed_model(tiny_llama, keep=0.3), FAST, lambda d, t, m: steps.append(m), cache)
    assert len(cache) == 1
    assert not any("dense model" in s or "(dense)" in s for s in steps)  # reused, not measured again
    assert any("compressed model" in s for s in steps)
    assert second.dense.perplexity == first.dense.perplexity
    assert second.generations[0].dense == first.generations[0].dense
    assert second.compressed.perplexity != first.compressed.perplexity
    # The reused figure is the dense model's own, measured as perplexity() would.
    blocks = eval_blocks(tiny_llama.tokenizer, FAST.eval_text(), FAST.seq_len, FAST.max_blocks)
    assert second.dense.perplexity == pytest.approx(block_perplexity(tiny_llama.model, blocks))
    other_text = compare(tiny_llama, compressed_model(tiny_llama, keep=0.5), FAST.__class__(
        **{**FAST.__dict__, "max_blocks": 2}), cache=cache)  # fmt: skip
    assert len(cache) == 2 and other_text.eval_tokens == 2 * 32


def test_compare_names_the_step_under_way_and_never_goes_back(tiny_llama):
    from lowrank_lab.cache import KeyedCache

    events: list[tuple[int, int, str]] = []
    compare(tiny_llama, compressed_model(tiny_llama, keep=0.5), FAST, lambda *e: events.append(e), KeyedCache())
    done = [d for d, _, _ in events]
    assert done == sorted(done) and done[-1] == events[-1][1]
    steps = [m for _, _, m in events]
    for expected in ("perplexity of the dense model: block 4/4", "perplexity of the compressed model: block 4/4",
                     "generating 1/1: def f( (dense)", "latency"):  # fmt: skip
        assert any(s.startswith(expected) for s in steps), (expected, steps)
    # Announced before it starts: the first event of each step comes before its work is done.
    assert steps[0].startswith("perplexity of the dense model: 4 blocks")


def test_a_progress_callback_can_cancel_the_comparison(tiny_llama):
    from lowrank_lab.cache import KeyedCache
    from lowrank_lab.errors import Cancelled

    cache = KeyedCache()

    def stop_at_generation(done, total, step):
        if "generating" in step:
            raise Cancelled("stopped")

    with pytest.raises(Cancelled):
        compare(tiny_llama, compressed_model(tiny_llama, keep=0.5), FAST, stop_at_generation, cache)
    assert len(cache) == 0  # nothing half-measured is kept
    assert not tiny_llama.model.training


def test_the_dense_side_measured_first_is_what_compare_would_measure(tiny_llama):
    from lowrank_lab.cache import KeyedCache
    from lowrank_lab.comparison import measure_dense

    ahead, fresh = KeyedCache(), KeyedCache()
    steps: list[str] = []
    measure_dense(tiny_llama, FAST, lambda d, t, m: steps.append(m), ahead)
    assert len(ahead) == 1 and any(s.startswith("perplexity of the dense model") for s in steps)
    assert not any("compressed" in s for s in steps)
    measure_dense(tiny_llama, FAST, lambda d, t, m: steps.append(f"again {m}"), ahead)  # cached: no work
    assert not any(s.startswith("again") for s in steps)
    compressed = compressed_model(tiny_llama, keep=0.5)
    later: list[str] = []
    reused = compare(tiny_llama, compressed, FAST, lambda d, t, m: later.append(m), ahead)
    assert not any("dense model" in s or "(dense)" in s for s in later)
    whole = compare(tiny_llama, compressed, FAST, cache=fresh)
    assert reused.dense.perplexity == whole.dense.perplexity
    assert reused.generations == whole.generations


def test_a_compression_job_measures_the_dense_model_before_any_compressed_copy_exists(tiny_llama):
    from lowrank_lab.cache import KeyedCache
    from lowrank_lab.compress.calibration import CalibrationSettings
    from lowrank_lab.compress.pipeline import CompressionJob, run_job

    steps: list[str] = []
    job = CompressionJob(keep=0.5, allocation="uniform", calibration=CalibrationSettings(samples=4, seq_len=32),
                         evaluation=FAST)  # fmt: skip
    result = run_job(tiny_llama, job, lambda e: steps.append(e.step), dense_cache=KeyedCache())
    first_dense = next(i for i, s in enumerate(steps) if "dense model" in s)
    first_block = next(i for i, s in enumerate(steps) if "block 1/" in s and "perplexity" not in s)
    assert first_dense < first_block
    assert list(result.seconds)[:2] == ["dense", "allocate"]
    assert result.comparison.dense.perplexity > 0
