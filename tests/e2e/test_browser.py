"""End to end in a real browser: `streamlit run app.py`, Debian's chromium driven by playwright.

Loads the default built-in model (smollm2-135m), opens the Spectra page and clicks a heatmap
cell to open that matrix's spectrum, opens the Ranks page, moves a rank slider with the keyboard and checks that the savings figure changes by what one rank of
that kind is worth. Screenshots of each page go to ``$LOWRANK_LAB_SCREENSHOTS`` (default: the
test's temporary folder) for a person to look at.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.builtin]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
START_TIMEOUT_S = 60
# The first load of the built-in model converts it from GGUF (about 25 s); later loads take seconds.
LOAD_TIMEOUT_MS = 180_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"streamlit was not healthy at {url} after {timeout} s")


@pytest.fixture
def server(tmp_path):
    """A `streamlit run app.py` on a free port; always stopped, with its whole process group."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LOWRANK_LAB_MODEL": "smollm2-135m"}
    log = open(tmp_path / "streamlit.log", "w")
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, START_TIMEOUT_S)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("LOWRANK_LAB_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def metric_value(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has=page.get_by_text(label, exact=True))
    return box.locator('[data-testid="stMetricValue"]').inner_text()


def as_int(text: str) -> int:
    return int(re.sub(r"[^\d-]", "", text))


def snap(page, path: Path) -> None:
    """Screenshot the whole page: Streamlit scrolls inside its own container, so grow the window."""
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], section.main')]"
        ".map(e => e.scrollHeight), document.body.scrollHeight)"
    )
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": min(max(height, size["height"]), 6000)})
    page.wait_for_timeout(500)  # let plotly resize its charts
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


def wait_until_idle(page) -> None:
    """Wait for the app to finish its rerun (the status widget shows while a script runs)."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=LOAD_TIMEOUT_MS)


def wait_for_metric(page, label: str, text: str) -> None:
    """Wait until the metric labelled ``label`` shows ``text``."""
    page.wait_for_function(
        "([label, v]) => [...document.querySelectorAll('[data-testid=stMetric]')].some("
        "m => m.innerText.includes(label) && m.innerText.includes(v))",
        arg=[label, text],
        timeout=30_000,
    )


def open_page(page, name: str, marker: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(name).click()
    page.get_by_text(marker).wait_for(timeout=LOAD_TIMEOUT_MS)
    wait_until_idle(page)


def check_home(page, shots: Path) -> None:
    """The default built-in model loads and is summarised."""
    page.get_by_text("SmolLM2-135M-Instruct").first.wait_for(timeout=LOAD_TIMEOUT_MS)
    page.get_by_text("LlamaForCausalLM").wait_for(timeout=LOAD_TIMEOUT_MS)
    assert metric_value(page, "Weight matrices") == "211 in 30 layers"
    wait_until_idle(page)
    snap(page, shots / "home.png")


def check_spectra(page, shots: Path) -> None:
    """The heatmap and a spectrum draw; clicking a heatmap cell opens that matrix."""
    open_page(page, "Spectra", "Heatmap metric")
    page.locator(".js-plotly-plot").nth(1).wait_for(timeout=LOAD_TIMEOUT_MS)
    assert metric_value(page, "Shape (out×in)") == "576×576"
    # The cell of layer 10's mlp.down_proj, in a grid of 7 kinds × 30 layers.
    area = page.locator(".js-plotly-plot").first.locator(".nsewdrag").first.bounding_box()
    page.mouse.click(area["x"] + area["width"] * 6.5 / 7, area["y"] + area["height"] * 10.5 / 30)
    wait_for_metric(page, "Shape (out×in)", "576×1536")
    wait_until_idle(page)
    assert page.get_by_role("combobox", name="Matrix").input_value().startswith("model.layers.10.mlp.down_proj")
    snap(page, shots / "spectra.png")


def check_ranks(page, shots: Path) -> None:
    """Moving the first kind slider (self_attn.q_proj, 30 matrices of 576×576) changes the savings."""
    open_page(page, "Ranks", "Rank per kind")
    snap(page, shots / "ranks.png")
    before = as_int(metric_value(page, "Parameters saved"))
    linear_before = metric_value(page, "Saved, % of linear layers")
    handle = page.locator('[data-testid="stSlider"]').first.locator('input[type="range"]')
    rank_before = int(handle.input_value())
    handle.focus()
    for _ in range(10):
        handle.press("ArrowLeft")
    wait_until_idle(page)
    rank_after = int(handle.input_value())
    assert rank_after < rank_before
    # Each rank step of q_proj is 576+576 parameters in each of its 30 layers. The key presses
    # may reach the server as more than one rerun: wait for the last one's figure.
    expected = before + 30 * (576 + 576) * (rank_before - rank_after)
    wait_for_metric(page, "Parameters saved", f"{expected:,}")
    assert as_int(metric_value(page, "Parameters saved")) == expected
    assert metric_value(page, "Saved, % of linear layers") != linear_before
    snap(page, shots / "ranks_after_move.png")


def test_load_explore_and_move_a_rank_slider(server, shots):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed: run `make chromium`")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(server)
            check_home(page, shots)
            check_spectra(page, shots)
            check_ranks(page, shots)
        finally:
            browser.close()
