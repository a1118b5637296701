"""The app's long jobs on smollm2-135m, measured as a user sees them in Chromium.

Starts `make app` on the built-in model (a fresh server: no dense figures cached yet) and drives
Debian's chromium through playwright:

1. Compress (Ranks page): whitened, auto, 80% of the linear parameters kept, the default
   calibration (32 × 256 tokens), measured against dense. The progress bar's text is read every
   half second: how often no step was named while the job ran (target: never) and the longest
   time one step name stayed up.
2. Compress again with uniform ranks: the dense model's figures are reused, so the evaluation
   step is shorter (its time against run 1's, both read from the step names on screen).
3. LoRA (original model, the page's defaults: 30 steps of 4 × 128 tokens): the time from
   pressing Train to the first finished step on screen, against the whole run (target ≤ 15%).
   Baseline, timed afterwards in this process on the same model: what the page did before its
   first step until now (greedy samples of the 3 prompts, 32 tokens each, then the validation
   loss on 32 examples) against what it does now (the validation loss on 12 examples).

Usage: python bench/app_walkthrough.py [--steps 30] [--skip-compress] [--compress-timeout 3600]

A compress run that does not end within --compress-timeout seconds (a machine too busy) is
stopped with its Stop button, and what the bar showed until then is reported.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, open_page, serve, wait_until_idle  # noqa: E402

MODEL = "smollm2-135m"
SUFFIX = re.compile(r" · (about [\d,]+ (s|min) left|estimating the time left…) · [\d,]+ s so far$")


# The bar of a job is drawn right above its Stop button; a page may show two jobs' bars (the Ranks
# page's prediction basis waits above the compress panel while a compression runs).
_BAR_BEFORE = """(label) => {
  const bars = [...document.querySelectorAll('[data-testid=stProgress]')];
  const button = label && [...document.querySelectorAll('button')].find(b => b.innerText.trim() === label);
  if (!button) return bars.length ? bars[0].innerText : '';
  const before = bars.filter(p => p.compareDocumentPosition(button) & Node.DOCUMENT_POSITION_FOLLOWING);
  return before.length ? before[before.length - 1].innerText : '';
}"""


def progress_text(page, stop_label: str | None = None) -> str:
    """The text of the progress bar drawn above the button ``stop_label`` (else the first bar)."""
    return page.evaluate(_BAR_BEFORE, stop_label)


def watch(page, stop_label: str, timeout_s: float, period_s: float = 0.5) -> tuple[list[tuple[float, str]], bool]:
    """(seconds since start, progress text) every ``period_s`` while the job's Stop button shows,
    and whether the job ended within ``timeout_s`` (what was seen is reported either way)."""
    samples, start = [], time.monotonic()
    while time.monotonic() - start < timeout_s:
        if not page.get_by_role("button", name=stop_label).count():
            return samples, True
        samples.append((time.monotonic() - start, progress_text(page, stop_label)))
        page.wait_for_timeout(int(period_s * 1000))
    return samples, False


def step_spans(samples: list[tuple[float, str]]) -> list[tuple[str, float]]:
    """Each run of one step name (the text without its time-left suffix) and how long it stayed up."""
    spans: list[tuple[str, float, float]] = []
    for t, text in samples:
        name = SUFFIX.sub("", text.strip())
        if spans and spans[-1][0] == name:
            spans[-1] = (name, spans[-1][1], t)
        else:
            spans.append((name, t, t))
    return [(name, end - begin) for name, begin, end in spans]


def compress(page, ranks: str, timeout_s: float) -> tuple[list[tuple[float, str]], bool]:
    page.get_by_text(ranks, exact=False).first.click()
    page.get_by_role("button", name="Compress and evaluate").click()
    stop = "Stop (keep the last finished model)"
    page.get_by_role("button", name=stop).wait_for(timeout=60_000)
    samples, ended = watch(page, stop, timeout_s)
    if ended:
        page.get_by_text("It is ready for the LoRA and Export pages").wait_for(timeout=60_000)
    else:  # a machine too busy to finish in time: stop it, report what was seen
        page.get_by_role("button", name=stop).click()
        page.get_by_role("button", name="Stopping…").wait_for(state="detached", timeout=600_000)
    wait_until_idle(page)
    return samples, ended


def report_compress(label: str, run: tuple[list[tuple[float, str]], bool]) -> float:
    samples, ended = run
    if not ended:
        label += " — did not end within the time allowed, stopped; what was seen until then"
    unnamed = [t for t, text in samples if not text.strip()]
    spans = step_spans(samples)
    evaluate = sum(d for name, d in spans if name.startswith("measuring against the dense model"))
    total = samples[-1][0] if samples else 0.0
    longest = sorted(spans, key=lambda s: -s[1])[:5]
    print(f"\n{label}: {total:,.0f} s, {len(samples)} samples of the bar every 0.5 s")
    print(f"  samples with no step named while it ran: {len(unnamed)} (target 0)")
    print(f"  distinct step names shown: {len(spans)}; the longest stayed up {longest[0][1]:,.1f} s")
    for name, seconds in longest:
        print(f"    {seconds:7.1f} s  {name[:110]}")
    print(f"  evaluation steps on screen: {evaluate:,.0f} s")
    return evaluate


def lora(page, steps: int) -> tuple[float, float, float]:
    open_page(page, "LoRA", "LoRA fine-tune")
    original = page.locator("[data-testid=stRadioGroup] label").filter(has_text=re.compile("^Original"))
    if original.count():  # the label: Streamlit's radio input itself sits under it and takes no clicks
        original.first.click()
        wait_until_idle(page)
    box = page.get_by_label("Steps", exact=True)
    box.fill(str(steps))
    box.press("Enter")
    wait_until_idle(page)
    page.get_by_role("button", name="Train").click()
    start = time.monotonic()
    first = last = None
    while time.monotonic() - start < 7200:
        text = progress_text(page)
        match = re.search(r"step (\d+)/\d+ · loss", text)
        if match and first is None:
            first = time.monotonic() - start
        if match and int(match.group(1)) == steps and last is None:
            last = time.monotonic() - start
        if page.get_by_text("It is kept for the").count():
            break
        page.wait_for_timeout(500)
    return first, last, time.monotonic() - start


def baseline_before(steps_batch: int = 4) -> tuple[float, float]:
    """The page's work before its first step, the old way and the new way, timed here."""
    from lowrank_lab import load_model
    from lowrank_lab.data import builtin_source, prepare
    from lowrank_lab.finetune import generate
    from lowrank_lab.finetune.train import validation_loss

    loaded = load_model(MODEL)
    data = prepare(builtin_source("domain-text"), loaded.tokenizer, 128)
    start = time.perf_counter()
    generate(loaded.model, loaded.tokenizer, list(data.demo_prompts), False, 32)
    validation_loss(loaded.model, data.validation[:32], steps_batch, data.pad_id)
    old = time.perf_counter() - start
    start = time.perf_counter()
    validation_loss(loaded.model, data.validation[: 3 * steps_batch], steps_batch, data.pad_id)
    return old, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip-compress", action="store_true")
    parser.add_argument("--compress-timeout", type=float, default=3600, help="seconds per compress run")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each figure shows as soon as it is known, even into a file
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, serve(MODEL, Path(tmp) / "streamlit.log") as server:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server.url)
            page.get_by_text("Where to go next").wait_for(timeout=600_000)
            wait_until_idle(page, 600_000)
            if not args.skip_compress:
                open_page(page, "Ranks", "Rank per kind")
                first = report_compress(
                    "compress 1 (auto, whitened, keep 80%)", compress(page, "auto: spend", args.compress_timeout)
                )
                second = report_compress(
                    "compress 2 (uniform, dense figures reused)",
                    compress(page, "uniform: every", args.compress_timeout),
                )
                print(f"\nevaluation on screen: {first:,.0f} s with the dense model measured, {second:,.0f} s "
                      f"reusing its figures ({second / max(first, 1e-9):.2f}×)")  # fmt: skip
            first_step, last_step, whole = lora(page, args.steps)
            browser.close()
    print(f"\nLoRA, {args.steps} steps on {MODEL} (original): first step on screen after {first_step:,.1f} s, "
          f"step {args.steps} after {last_step:,.1f} s, result after {whole:,.1f} s")  # fmt: skip
    print(f"  before the first step: {100 * first_step / whole:.1f}% of the run (target ≤ 15%), "
          f"{first_step / max(last_step - first_step, 1e-9):.2f}× the training that followed")  # fmt: skip
    old, new = baseline_before()
    print(f"  baseline (timed here after the run): old before-phase {old:,.1f} s (3 samples × 32 tokens + "
          f"validation on 32 examples) against {new:,.1f} s now (validation on 12): {old / new:.1f}× shorter")  # fmt: skip


if __name__ == "__main__":
    main()
