"""Benchmark: LoRA extraction from a fine-tune of smollm2-135m, against mergekit's method, in one run.

    python bench/extract_lora.py [--steps 12] [--r 8] [--energy 0.9 0.99] [--repeats 3]

The pair: the built-in smollm2-135m (its converted safetensors folder) and a copy fine-tuned by
lowrank_lab's LoRA loop (``--r`` on every linear layer, ``--steps`` steps of the built-in domain
text) and merged (``merge_and_unload``), saved as safetensors (made once, then cached).

For each ``--energy`` e:
  * lowrank_lab: ``extract-lora``'s work without the writing — ΔW spectra of every matched pair
    streamed from the two folders (``model_delta``), ranks keeping e of each ΔW's energy, the
    top-r factors of each (``extract_lora``). "cold": an empty spectrum cache; "warm": the cache
    the cold run filled (what a second extraction of the same pair costs, e.g. at another e).
  * mergekit's method, written out (``mergekit-extract-lora``: for each matrix that changed, a
    float32 ``torch.linalg.svd`` of ΔW = W_tuned − W_base, keep the top r, split √σ over the two
    factors), with the same rank per matrix as ours and the same streamed reading.
The ways run interleaved, each ``--repeats`` times. Prints the median times and their ratio (target ≤ 1×), both stacked relative errors
‖ΔW − B·A‖_F/‖ΔW‖_F and the worst per-matrix difference (target: equal within 1%), and the
time to write the adapter; then loads it with PEFT on the base and compares its logits with
the tuned model's on 2×128 tokens of the built-in evaluation text.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lowrank_lab import load_model  # noqa: E402
from lowrank_lab.data import builtin_source, builtin_text, prepare  # noqa: E402
from lowrank_lab.export.adapter import merge_adapter  # noqa: E402
from lowrank_lab.extraction import ExtractionSettings, extract_lora  # noqa: E402
from lowrank_lab.finetune import LoraSettings, finetune  # noqa: E402
from lowrank_lab.models import builtin  # noqa: E402
from lowrank_lab.paths import cache_dir  # noqa: E402
from lowrank_lab.spectra import SpectrumCache  # noqa: E402
from lowrank_lab.spectra.delta import model_delta  # noqa: E402
from lowrank_lab.spectra.sources import SafetensorsSource  # noqa: E402


def tuned_folder(r: int, steps: int) -> Path:
    """smollm2-135m with a rank-r LoRA fine-tune merged in, saved once under the cache."""
    folder = cache_dir("bench") / f"smollm2-135m-lora-r{r}-steps{steps}"
    if (folder / "model.safetensors").exists():
        return folder
    loaded = load_model("smollm2-135m")
    settings = LoraSettings(r=r, alpha=2 * r, steps=steps, batch_size=4, max_seq_len=128, eval_examples=4)
    data = prepare(builtin_source("domain-text"), loaded.tokenizer, settings.max_seq_len)
    print(f"fine-tuning smollm2-135m: LoRA r={r} on every linear layer, {steps} steps (once) …", flush=True)
    merged = merge_adapter(finetune(loaded, data, settings))
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        merged.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        Path(tmp).rename(folder)
    return folder


def ours(base: Path, tuned: Path, energy: float, cache: SpectrumCache):
    b, t = SafetensorsSource(base, "smollm2-135m"), SafetensorsSource(tuned, "tuned")
    delta = model_delta(b, t, cache=cache)
    return extract_lora(b, t, delta, ExtractionSettings("energy", energy))


def mergekit_method(base: Path, tuned: Path, ranks: dict[str, int]) -> dict[str, tuple[float, float]]:
    """mergekit-extract-lora's decomposition, per changed matrix: float32 SVD of ΔW, top r, √σ split.

    Returns each matrix's (‖ΔW − B·A‖_F, ‖ΔW‖_F), measured in float64.
    """
    b, t = SafetensorsSource(base, "base"), SafetensorsSource(tuned, "tuned")
    errors = {}
    for entry in b.matrices():
        w1, w2 = b.matrix(entry.name), t.matrix(entry.name)
        if torch.equal(w1, w2) or entry.name not in ranks:
            continue
        delta = (w2.float() - w1.float()).contiguous()
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        r = ranks[entry.name]
        root = torch.sqrt(s[:r])
        lora_b = u[:, :r] * root  # (m, r)
        lora_a = root[:, None] * vh[:r]  # (r, n)
        exact = w2.double() - w1.double()
        residual = float(torch.linalg.vector_norm(exact - lora_b.double() @ lora_a.double()))
        errors[entry.name] = (residual, float(torch.linalg.vector_norm(exact)))
    return errors


def compare_errors(ours: dict[str, float], theirs: dict[str, tuple[float, float]]) -> tuple[float, float, float, float]:
    """Stacked relative errors (ours, theirs), the worst per-matrix relative difference where a real
    truncation happened (their error ≥ 1e-3), and the largest error elsewhere (rounding only)."""
    total = sum(n**2 for _, n in theirs.values())
    stacked_ours = math.sqrt(sum((ours[k] * n) ** 2 for k, (_, n) in theirs.items()) / total)
    stacked_theirs = math.sqrt(sum(e**2 for e, _ in theirs.values()) / total)
    truncated = [abs(ours[k] - e / n) / (e / n) for k, (e, n) in theirs.items() if e / n >= 1e-3]
    rounding = [max(ours[k], e / n) for k, (e, n) in theirs.items() if e / n < 1e-3]
    return stacked_ours, stacked_theirs, max(truncated, default=0.0), max(rounding, default=0.0)


def logits_check(base: Path, tuned: Path, adapter: Path) -> tuple[float, float]:
    """Relative logit error of base + adapter against the tuned model, and of the base alone."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tok = load_model("smollm2-135m").tokenizer
    ids = tok(builtin_text("evaluation")[:4000], return_tensors="pt").input_ids[:, :256].reshape(2, 128)
    with torch.no_grad():
        l_base = AutoModelForCausalLM.from_pretrained(str(base))(ids).logits.double()
        l_tuned = AutoModelForCausalLM.from_pretrained(str(tuned))(ids).logits.double()
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(adapter))
        l_adapted = model(ids).logits.double()
    change = float((l_tuned - l_base).norm())
    return float((l_adapted - l_tuned).norm()) / change, float((l_adapted - l_tuned).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--energy", type=float, nargs="+", default=[0.9, 0.99])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    base = builtin.smollm2_folder()
    tuned = tuned_folder(args.r, args.steps)
    print(f"base {base}\ntuned {tuned}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    for energy in args.energy:
        # Interleaved (ours cold, mergekit, ours warm; again and again), so a load that drifts on
        # this shared machine falls on both ways alike.
        cold_times, warm_times, mk_times, result, mk = [], [], [], None, None
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as d:
                start = time.perf_counter()
                result = ours(base, tuned, energy, SpectrumCache(d))
                cold_times.append(time.perf_counter() - start)
                ranks = result.plan.as_dict()
                start = time.perf_counter()
                mk = mergekit_method(base, tuned, ranks)
                mk_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                ours(base, tuned, energy, SpectrumCache(d))  # the same pair again: ΔW spectra cached
                warm_times.append(time.perf_counter() - start)
        t_cold, t_warm, t_mk = (statistics.median(t) for t in (cold_times, warm_times, mk_times))
        ranks = result.plan.as_dict()
        our_err = {m.name: m.measured_error for m in result.matrices if m.rank is not None}
        stacked_ours, stacked_mk, worst, rounding = compare_errors(our_err, mk)
        with tempfile.TemporaryDirectory() as d:
            b, t = SafetensorsSource(base, "smollm2-135m"), SafetensorsSource(tuned, "tuned")
            delta = model_delta(b, t, cache=SpectrumCache())
            start = time.perf_counter()
            written = extract_lora(b, t, delta, ExtractionSettings("energy", energy), folder=Path(d) / "adapter")
            t_write = time.perf_counter() - start
            logit_rel, logit_max = logits_check(base, tuned, Path(d) / "adapter")
        rank_values = sorted(set(ranks.values()))
        print(f"energy {energy}: {len(ranks)} matrices as LoRA (ranks {rank_values[0]}..{rank_values[-1]}, "
              f"{written.estimate.adapter_params:,} parameters), {len(written.whole_modules)} whole")  # fmt: skip
        print(f"  {'way':40} {'median s':>9}  ratio")
        print(f"  {'mergekit method (float32 SVD, top r)':40} {t_mk:9.3f}  1")
        print(f"  {'lowrank_lab cold (empty cache)':40} {t_cold:9.3f}  {t_cold / t_mk:.2f}x   (target <= 1x)")
        print(f"  {'lowrank_lab warm (ΔW spectra cached)':40} {t_warm:9.3f}  {t_warm / t_mk:.2f}x")
        print(f"  {'lowrank_lab with the adapter written':40} {t_write:9.3f}")
        print(f"  ‖ΔW − B·A‖/‖ΔW‖ stacked: ours {stacked_ours:.6f}, mergekit method {stacked_mk:.6f}, "
              f"predicted from σ {result.estimate.relative_error:.6f}")  # fmt: skip
        print(f"  per matrix: worst relative difference {worst:.2e} where the truncation is real (error ≥ 1e-3; "
              f"target <= 1e-2); elsewhere both errors are rounding, at most {rounding:.1e}")  # fmt: skip
        print(f"  base + adapter vs tuned logits: ‖Δ‖ / ‖tuned − base‖ = {logit_rel:.4f}, max |Δ| {logit_max:.3e}\n")


if __name__ == "__main__":
    main()
