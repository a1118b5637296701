"""Benchmark: LoRA fine-tuning of smollm2-135m — training speed, and healing a compressed model.

    python bench/finetune.py [--part speed|healing|all] [--windows 5] [--window-steps 6] [--threads 1]

(a) speed: tokens/s of lowrank_lab's training loop (``finetune``: PEFT LoRA through Accelerate)
    against a plain Hugging Face ``Trainer`` + PEFT run (baseline) on the same model, data
    (built-in domain text in blocks of 128 tokens), LoRA settings (r=8, alpha=16, every linear
    layer), batch (4), optimizer (AdamW, linear schedule, clip 1.0), in the same process.
    Each run's steps are timed by its own per-step callback (the time between successive
    step ends); the first interval of every run is warm-up and dropped, and a whole warm-up run
    of each goes first. Windows of the two alternate (ABAB…, then BABA…), and the medians of
    the windows' tokens/s are compared. Target: ≥ 0.95× the Trainer's tokens/s.
(b) healing: perplexity on the built-in evaluation text (16 blocks of 256 tokens) of smollm2
    compressed by whitened SVD with 20% of the linear parameters removed (uniform allocation),
    before and after a LoRA fine-tune of ~50k tokens of the built-in domain text; the dense
    model fine-tuned the same way with the same budget is the baseline. Target:
    gap(compressed+LoRA vs dense+LoRA) ≤ half of gap(compressed vs dense) before.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lowrank_lab import load_model  # noqa: E402
from lowrank_lab.data import builtin_source, builtin_text, collate, prepare  # noqa: E402
from lowrank_lab.evaluate import perplexity  # noqa: E402
from lowrank_lab.finetune import LoraSettings, finetune, lora_config  # noqa: E402

SEQ_LEN, BATCH = 128, 4


def speed_settings(steps: int) -> LoraSettings:
    return LoraSettings(
        r=8,
        alpha=16,
        steps=steps,
        batch_size=BATCH,
        max_seq_len=SEQ_LEN,
        learning_rate=1e-3,
        eval_every=0,
        eval_examples=4,
    )


def _tokens_per_s(step_ends: list[float], tokens_per_step: int) -> float:
    intervals = [b - a for a, b in zip(step_ends, step_ends[1:])][1:]  # first interval: warm-up
    return tokens_per_step * len(intervals) / sum(intervals)


def ours(loaded, data, steps: int) -> float:
    ends: list[float] = []
    finetune(loaded, data, speed_settings(steps), on_step=lambda info: ends.append(time.perf_counter()))
    return _tokens_per_s(ends, BATCH * SEQ_LEN)


def trainer(loaded, data, steps: int) -> float:
    from peft import get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    ends: list[float] = []

    class StepEnds(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    settings = speed_settings(steps)
    model = loaded.copy()
    peft_model = get_peft_model(model, lora_config(model, settings))
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            max_steps=steps,
            per_device_train_batch_size=BATCH,
            learning_rate=settings.learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            optim="adamw_torch",
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            report_to=[],
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
            remove_unused_columns=False,
            seed=0,
        )
        collator = partial(collate, pad_id=data.pad_id)
        Trainer(
            model=peft_model, args=args, train_dataset=list(data.train), data_collator=collator, callbacks=[StepEnds()]
        ).train()
    return _tokens_per_s(ends, BATCH * SEQ_LEN)


def speed(loaded, windows: int, window_steps: int) -> dict:
    data = prepare(builtin_source("domain-text"), loaded.tokenizer, SEQ_LEN)
    print(f"speed: {torch.get_num_threads()} threads, batch {BATCH}×{SEQ_LEN} tokens, {window_steps} steps a window")
    ours(loaded, data, 3), trainer(loaded, data, 3)  # warm-up runs, not counted
    results: dict[str, list[float]] = {"lowrank_lab": [], "trainer": []}
    runners = {"lowrank_lab": ours, "trainer": trainer}
    for w in range(windows):
        for name in ("lowrank_lab", "trainer") if w % 2 == 0 else ("trainer", "lowrank_lab"):
            gc.collect()  # the previous run's model and optimizer go before this one starts
            results[name].append(runners[name](loaded, data, window_steps))
            print(f"  window {w + 1} {name:12} {results[name][-1]:8.1f} tokens/s", flush=True)
    ours_median, trainer_median = statistics.median(results["lowrank_lab"]), statistics.median(results["trainer"])
    ratio = ours_median / trainer_median
    # The load of a shared machine drifts between windows; a window's two runs are neighbours in time.
    paired = statistics.median(o / t for o, t in zip(results["lowrank_lab"], results["trainer"]))
    print(f"lowrank_lab finetune   median {ours_median:8.1f} tokens/s")
    print(f"HF Trainer + PEFT      median {trainer_median:8.1f} tokens/s (baseline)")
    print(f"ratio of medians {ratio:.3f}, median of per-window ratios {paired:.3f} (target ≥ 0.95)")
    return {
        "ours_tokens_per_s": results["lowrank_lab"],
        "trainer_tokens_per_s": results["trainer"],
        "ratio": ratio,
        "paired_ratio": paired,
    }


def healing(loaded, tokens: int, keep: float) -> dict:
    from lowrank_lab.compress import allocate, compress

    text = builtin_text("evaluation")
    ppl = partial(perplexity, text=text, seq_len=256, max_blocks=16)
    steps = math.ceil(tokens / (BATCH * SEQ_LEN))
    settings = LoraSettings(
        r=8, alpha=16, steps=steps, batch_size=BATCH, max_seq_len=SEQ_LEN, learning_rate=1e-3, warmup_steps=5,
        eval_every=0, eval_examples=8,
    )  # fmt: skip
    data = prepare(builtin_source("domain-text"), loaded.tokenizer, SEQ_LEN)
    start = time.perf_counter()
    compressed = compress(loaded, allocate(loaded, keep=keep, strategy="uniform"), method="whitened")
    print(f"healing: compressed (whitened, keep {keep}) in {time.perf_counter() - start:.0f} s; LoRA {steps} steps")
    out = {"dense": ppl(loaded.model, loaded.tokenizer), "compressed": ppl(compressed.model, loaded.tokenizer)}
    print(f"  before: dense {out['dense']:.3f}, compressed {out['compressed']:.3f}", flush=True)
    for name, base in (("dense", loaded), ("compressed", compressed)):
        adapter = finetune(base, data, settings)
        out[f"{name}_lora"] = ppl(adapter.model, loaded.tokenizer)
        out[f"{name}_tokens_per_s"] = adapter.report.tokens_per_s
        print(f"  {name} + LoRA: {out[f'{name}_lora']:.3f} ({adapter.report.tokens:,} tokens)", flush=True)
    gap_before = out["compressed"] - out["dense"]
    gap_after = out["compressed_lora"] - out["dense_lora"]
    out.update(
        gap_before=gap_before, gap_after=gap_after, gap_ratio=gap_after / gap_before, tokens=steps * BATCH * SEQ_LEN
    )
    print(f"perplexity gap compressed − dense: before {gap_before:.3f}, after LoRA on both {gap_after:.3f}")
    print(f"gap ratio {gap_after / gap_before:.3f} (target ≤ 0.5)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--part", default="all", choices=["speed", "healing", "all"])
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--window-steps", type=int, default=6)
    parser.add_argument("--heal-tokens", type=int, default=50_000)
    parser.add_argument("--keep", type=float, default=0.8)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: on a shared machine, 2 oversubscribe)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    figures = {"model": args.model}
    if args.part in ("speed", "all"):
        figures["speed"] = speed(loaded, args.windows, args.window_steps)
    if args.part in ("healing", "all"):
        figures["healing"] = healing(loaded, args.heal_tokens, args.keep)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
