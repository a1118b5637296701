"""What the browser tests share: a served app, Debian's chromium through playwright, page helpers.

The server is started the README's way (`make app`, which reads `.streamlit/config.toml`) on a
free port in its own process group, and always stopped with that group.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
START_TIMEOUT_S = 90
# The first load of the built-in model converts it from GGUF (about a minute on two busy cores).
LOAD_TIMEOUT_MS = 240_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"streamlit was not healthy at {url} after {timeout} s")


@dataclass(frozen=True)
class Served:
    """A running `make app`: its URL, the process group's leader and the log file."""

    url: str
    proc: subprocess.Popen
    log: Path


@contextmanager
def serve(model: str, log: Path, extra_env: dict[str, str] | None = None) -> Iterator[Served]:
    """`make app` on a free port with ``LOWRANK_LAB_MODEL=model``; stopped with its whole group."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LOWRANK_LAB_MODEL": model, **(extra_env or {})}
    env.pop("MAKEFLAGS", None)
    with open(log, "w") as out:
        proc = subprocess.Popen(["make", "--no-print-directory", "app", f"PORT={port}"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            url = f"http://localhost:{port}"
            wait_healthy(url, proc, START_TIMEOUT_S)
            yield Served(url, proc, log)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("LOWRANK_LAB_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def chromium():
    """A headless chromium (Debian's, never one a tool downloads)."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed: run `make chromium`")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


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
    page.set_viewport_size({"width": size["width"], "height": min(max(height, size["height"]), 8000)})
    page.wait_for_timeout(500)  # let plotly resize its charts
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


def wait_until_idle(page, timeout_ms: int = LOAD_TIMEOUT_MS) -> None:
    """Wait for the app to finish its rerun (the status widget shows while a script runs)."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=timeout_ms)


def wait_for_metric(page, label: str, text: str, timeout_ms: int = 30_000) -> None:
    """Wait until the metric labelled ``label`` shows ``text``."""
    page.wait_for_function(
        "([label, v]) => [...document.querySelectorAll('[data-testid=stMetric]')].some("
        "m => m.innerText.includes(label) && m.innerText.includes(v))",
        arg=[label, text],
        timeout=timeout_ms,
    )


def open_page(page, name: str, marker: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(name, exact=True).click()
    page.get_by_text(marker).first.wait_for(timeout=LOAD_TIMEOUT_MS)
    wait_until_idle(page)
