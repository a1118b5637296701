"""The whole flow in a real browser on tiny-llama: `make app`, Debian's chromium driven by playwright.

load → Spectra (click a heatmap cell) → Ranks (a slider, a preset, the plan downloaded and
uploaded back) → compress → LoRA (a 2-step run on the compressed model, then a long run
stopped) → Export (the zip downloaded) → the zip loaded by its own load_lowrank.py in a process
where lowrank_lab cannot be imported, its logits compared with the same compression made here
→ Compare (the compressed model against the original: every factorized matrix changed; a heatmap
cell opens its matrix; a LoRA extracted from the change and downloaded). Then two browser contexts at once, one training and one moving sliders, with no cross-talk.
Screenshots of every page go to ``$LOWRANK_LAB_SCREENSHOTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    as_int,
    metric_value,
    open_page,
    serve,
    snap,
    wait_for_metric,
    wait_until_idle,
)

pytestmark = pytest.mark.e2e

MODEL = "tiny-llama"
RANK_STEP = 2 * (64 + 64)  # one rank of self_attn.q_proj (64×64) in each of its 2 layers
JOB_TIMEOUT_MS = 300_000


def wait_text(page, text: str, timeout_ms: int = JOB_TIMEOUT_MS) -> None:
    page.get_by_text(text).first.wait_for(timeout=timeout_ms)


def progress_text(page) -> str:
    """The text of the progress bar on screen, or "" (read in one go: the bar may go at any moment)."""
    return page.evaluate(
        "() => { const p = document.querySelector('[data-testid=stProgress]'); return p ? p.innerText : ''; }"
    )


def wait_for_step(page, step: int) -> None:
    """Wait until the bar reports training step ``step`` (or a later one) done, with its loss."""
    page.wait_for_function(
        "(n) => [...document.querySelectorAll('[data-testid=stProgress]')].some(p => {"
        "  const m = /step (\\d+)\\/\\d+ · loss/.exec(p.innerText); return m && Number(m[1]) >= n; })",
        arg=step,
        timeout=JOB_TIMEOUT_MS,
    )


def set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_until_idle(page)


def moved_slider(page, handle, saved_before: int, rank_before: int, timeout_s: float = 120) -> int:
    """After keyboard moves of the q_proj slider: the savings shown are exactly what its new rank is worth.

    The slider is blurred first (a focused slider may send its old value again when redrawn), then
    the rank the slider shows and the savings on screen are read together until they agree (reruns
    may still be on their way on a busy machine). Returns the slider's new rank.
    """
    handle.evaluate("e => e.blur()")
    wait_until_idle(page)
    deadline = time.monotonic() + timeout_s
    while True:
        rank = int(handle.input_value())
        expected = saved_before + RANK_STEP * (rank_before - rank)
        shown = as_int(metric_value(page, "Parameters saved"))
        if rank != rank_before and shown == expected:
            return rank
        if time.monotonic() > deadline:
            raise AssertionError(
                f"slider at rank {rank} (was {rank_before}): {shown:,} saved shown, {expected:,} expected"
            )
        page.wait_for_timeout(500)


def home(page, shots: Path) -> None:
    """The sidebar names the pages from the first paint (never Streamlit's "app" listing); the model loads."""
    seen = set()
    for _ in range(30):
        nav = page.locator('[data-testid="stSidebarNav"]')
        if nav.count():
            seen.add(nav.inner_text().split()[0])
        page.wait_for_timeout(100)
    assert seen == {"Home"}, seen
    page.get_by_text("Where to go next").wait_for(timeout=120_000)
    wait_until_idle(page)
    assert metric_value(page, "Weight matrices") == "15"
    snap(page, shots / "walk_home.png")


def spectra(page, shots: Path) -> None:
    open_page(page, "Spectra", "Heatmap metric")
    page.locator(".js-plotly-plot").nth(1).wait_for()
    # The cell of layer 1's mlp.down_proj in a grid of 7 kinds × 2 layers.
    area = page.locator(".js-plotly-plot").first.locator(".nsewdrag").first.bounding_box()
    page.mouse.click(area["x"] + area["width"] * 6.5 / 7, area["y"] + area["height"] * 1.5 / 2)
    wait_for_metric(page, "Shape (out×in)", "64×160")
    wait_until_idle(page)
    assert page.get_by_role("combobox", name="Matrix").input_value().startswith("model.layers.1.mlp.down_proj")
    snap(page, shots / "walk_spectra.png")


def ranks(page, shots: Path, tmp: Path) -> Path:
    """A slider moved by exactly one rank's worth, a preset applied, the plan downloaded and loaded back."""
    open_page(page, "Ranks", "Rank per kind")
    before = as_int(metric_value(page, "Parameters saved"))
    handle = page.locator('[data-testid="stSlider"]').first.locator('input[type="range"]')
    rank = int(handle.input_value())
    handle.focus()
    handle.press("ArrowLeft")
    moved_slider(page, handle, before, rank)
    page.get_by_role("button", name="Apply").first.click()
    wait_text(page, "Applied “", 30_000)
    wait_until_idle(page)
    saved = metric_value(page, "Parameters saved")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download plan JSON").click()
    plan_file = tmp / "plan.json"
    download.value.save_as(plan_file)
    plan = json.loads(plan_file.read_text())
    assert plan["model"] == MODEL and plan["ranks"]
    # Move a slider away (one rank more of q_proj), then load the file: the plan comes back.
    rank = int(handle.input_value())
    handle.focus()
    handle.press("ArrowRight")
    assert moved_slider(page, handle, as_int(saved), rank) == rank + 1
    uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="Load a plan")
    uploader.locator('input[type="file"]').set_input_files(str(plan_file))
    wait_text(page, f"Loaded plan.json: {len(plan['ranks'])} ranks", 30_000)
    wait_for_metric(page, "Parameters saved", saved)
    snap(page, shots / "walk_ranks.png")
    return plan_file


def compress(page, shots: Path) -> list[str]:
    """Compress with the sliders' plan (whitened, built-in calibration); the step name is always shown."""
    page.get_by_role("button", name="Compress and evaluate").click()
    steps, start = [], time.monotonic()
    while time.monotonic() - start < JOB_TIMEOUT_MS / 1000:
        if page.get_by_text("It is ready for the LoRA and Export pages").count():
            break
        text = progress_text(page)
        if text:
            steps.append(text)
        page.wait_for_timeout(200)
    wait_until_idle(page)
    assert page.get_by_text("It is ready for the LoRA and Export pages").count()
    snap(page, shots / "walk_compressed.png")
    # A download button drawn before the run still serves its file after it (no 404).
    with page.expect_download() as download:
        page.get_by_role("button", name="Download plan JSON").click()
    assert json.loads(Path(download.value.path()).read_text())["model"] == MODEL
    return steps


def lora(page, shots: Path) -> None:
    """Heal the compressed model for 2 steps; then a long run, stopped."""
    open_page(page, "LoRA", "LoRA fine-tune")
    assert page.get_by_role("radio", name="Compressed tiny-llama (heal it)").is_checked()
    set_number(page, "Steps", 2)
    page.get_by_role("button", name="Train").click()
    wait_text(page, "It is kept for the")
    wait_until_idle(page)
    assert metric_value(page, "Steps") == "2/2"
    assert page.get_by_label("Steps", exact=True).input_value() == "2"  # the settings stay as they were used
    snap(page, shots / "walk_lora.png")
    set_number(page, "Steps", 5000)
    page.get_by_role("button", name="Train").click()
    wait_for_step(page, 1)
    snap(page, shots / "walk_lora_running.png")
    page.get_by_role("button", name="Stop (keep the adapter so far)").click()
    wait_text(page, "the adapter keeps them")
    wait_until_idle(page)
    done = as_int(metric_value(page, "Steps").split("/")[0])
    assert 1 <= done < 5000


def export(page, shots: Path, tmp: Path) -> Path:
    open_page(page, "Export", "Download what you made")
    page.get_by_text("Compressed checkpoint (factors in safetensors").click()
    wait_until_idle(page)
    page.get_by_role("button", name="Build the zip").click()
    download_button = page.get_by_role("button", name="Download")
    download_button.wait_for(timeout=JOB_TIMEOUT_MS)
    wait_until_idle(page)
    snap(page, shots / "walk_export.png")
    with page.expect_download() as download:
        download_button.click()
    path = tmp / download.value.suggested_filename
    download.value.save_as(path)
    assert zipfile.is_zipfile(path)
    return path


def compare(page, shots: Path, factorized: int) -> None:
    """Compare the compressed model with the original, then extract a LoRA from the change and download it."""
    open_page(page, "Compare", "Take a second model")
    page.get_by_role("button", name="Compare", exact=True).click()
    wait_for_metric(page, "Matrices changed", f"{factorized} of 15", JOB_TIMEOUT_MS)
    wait_until_idle(page)
    # A heatmap cell opens its matrix: layer 1's mlp.down_proj in a grid of 7 kinds × 2 layers.
    matrix = page.get_by_role("combobox", name="Matrix")
    assert not matrix.input_value().startswith("model.layers.1.mlp.down_proj")
    area = page.locator(".js-plotly-plot").first.locator(".nsewdrag").first.bounding_box()
    page.mouse.click(area["x"] + area["width"] * 6.5 / 7, area["y"] + area["height"] * 1.5 / 2)
    deadline = time.monotonic() + 60
    while not matrix.input_value().startswith("model.layers.1.mlp.down_proj") and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    wait_until_idle(page)
    assert matrix.input_value().startswith("model.layers.1.mlp.down_proj")
    page.get_by_role("button", name="Extract the adapter").click()
    wait_text(page, "Extracted:")
    wait_until_idle(page)
    snap(page, shots / "walk_compare.png")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the adapter (PEFT, zip)").click()
    names = zipfile.ZipFile(download.value.path()).namelist()
    assert any(n.endswith("adapter_model.safetensors") for n in names), names


STANDALONE = """
import importlib.abc, sys
class _NoLowrankLab(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "lowrank_lab":
            raise ImportError("lowrank_lab is not installed in this process")
        return None
sys.meta_path.insert(0, _NoLowrankLab())
try:
    import lowrank_lab
except ImportError:
    pass
else:
    raise SystemExit("lowrank_lab is importable here")
folder = sys.argv[1]
sys.path.insert(0, folder)
import torch
from safetensors.torch import save_file
from load_lowrank import load
model = load(folder)
ids = torch.arange(2 * 24).reshape(2, 24) % 500 + 4
with torch.no_grad():
    save_file({"logits": model(input_ids=ids).logits.float().contiguous()}, sys.argv[2])
print("standalone ok")
"""


def check_zip_loads_without_lowrank_lab(zip_path: Path, tmp: Path) -> float:
    """The zip's own loader in an isolated process; its logits against the same compression made here."""
    import torch
    from safetensors.torch import load_file

    from lowrank_lab import CalibrationSettings, compress, load_model
    from lowrank_lab.plan import RankPlan

    with zipfile.ZipFile(zip_path) as z:
        z.extractall(tmp / "unzipped")
    (folder,) = [p for p in (tmp / "unzipped").iterdir() if p.is_dir()]
    out = tmp / "logits.safetensors"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run([sys.executable, "-I", "-c", STANDALONE, str(folder), str(out)], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0 and "standalone ok" in done.stdout, done.stderr[-2000:]
    # The app's compression: the plan it wrote, whitened on the default calibration (32 × 256 tokens).
    loaded = load_model(MODEL)
    plan = RankPlan.from_json((folder / "rank_plan.json").read_text())
    mine = compress(loaded, plan, "whitened", CalibrationSettings()).model
    ids = torch.arange(2 * 24).reshape(2, 24) % 500 + 4
    with torch.no_grad():
        expected = mine(input_ids=ids).logits.float()
    diff = (load_file(str(out))["logits"] - expected).abs().max().item()
    assert diff <= 1e-4, diff
    return diff


def two_sessions(browser, url: str, shots: Path) -> None:
    """One session trains while another moves sliders: neither sees the other's state."""
    a = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    b = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    a.goto(url)
    b.goto(url)
    for page in (a, b):
        page.get_by_text("Where to go next").wait_for(timeout=120_000)
        wait_until_idle(page)
    open_page(a, "Ranks", "Rank per kind")
    saved_a = metric_value(a, "Parameters saved")
    open_page(a, "LoRA", "LoRA fine-tune")
    set_number(a, "Steps", 5000)
    a.get_by_role("button", name="Train").click()
    a.get_by_role("button", name="Stop (keep the adapter so far)").wait_for(timeout=60_000)
    open_page(b, "Ranks", "Rank per kind")
    before = as_int(metric_value(b, "Parameters saved"))
    handle = b.locator('[data-testid="stSlider"]').first.locator('input[type="range"]')
    rank = int(handle.input_value())
    handle.focus()
    for _ in range(3):  # quickly, as a held key: each move may go before the last one's run arrives
        handle.press("ArrowLeft")
    moved_slider(b, handle, before, rank)
    # The moves went to the kind: a late report of the one-matrix slider (q_proj of layer 0, the
    # selected matrix) did not make it an override of its own.
    assert "mixed" not in b.locator('[data-testid="stSlider"]').first.inner_text()
    open_page(b, "LoRA", "LoRA fine-tune")
    train = b.get_by_role("button", name="Train")
    train.wait_for(timeout=120_000)  # drawn at the end of the page's run: a busy machine may take a while
    wait_until_idle(b)
    assert train.is_enabled()  # b trains nothing: a's job is a's
    assert not b.get_by_role("button", name="Stop (keep the adapter so far)").count()
    assert not b.locator('[data-testid="stProgress"]').count()
    wait_for_step(a, 2)
    snap(b, shots / "walk_second_session.png")
    a.get_by_role("button", name="Stop (keep the adapter so far)").click()
    wait_text(a, "the adapter keeps them")
    open_page(a, "Ranks", "Rank per kind")
    assert metric_value(a, "Parameters saved") == saved_a  # b's slider did not move a's plan


# The whole flow drives every page and three browser sessions: on two busy cores it may pass the
# suite's 600 s limit for one test without anything being wrong.
@pytest.mark.timeout(1500)
def test_the_whole_flow_on_tiny_llama(chromium, shots, tmp_path):
    with serve(MODEL, tmp_path / "streamlit.log") as server:
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server.url)
        home(page, shots)
        spectra(page, shots)
        ranks(page, shots, tmp_path)
        steps = compress(page, shots)
        assert steps and all(" · " in s for s in steps)  # every sample named a step and the time left
        lora(page, shots)
        zip_path = export(page, shots, tmp_path)
        diff = check_zip_loads_without_lowrank_lab(zip_path, tmp_path)
        print(f"\nstandalone loader vs the same compression here: max abs logit difference {diff:.2e}")
        compare(page, shots, factorized=14)
        two_sessions(chromium, server.url, shots)
        log = server.log.read_text()
        assert "Traceback" not in log, log[-3000:]
