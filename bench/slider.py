"""Benchmark: how fast the Ranks page redraws after one slider move, against a naive redraw.

    python bench/slider.py [--model smollm2-135m] [--moves 30]

Builds two Streamlit AppTests of ``pages/2_Ranks.py`` on the model — one without calibration,
one calibrated on the built-in text, so it predicts (activation-aware error, predicted
perplexity, whitened error curve and column) on every move — runs each once (warms the model,
spectra, trade-off curves and the prediction basis), then moves a kind slider ``--moves``
times on each, alternately, and times each rerun on the server side (the script run plus
AppTest's own handling of its output, so an upper bound of what a browser waits for before the
page redraws). The run store is a fresh temporary one. Prints the medians against the targets
(100 ms without predictions, 50 ms with), and against the naive baseline measured in the same run: what a slider move
would cost if the summary were computed from scratch, with a fresh SVD of every matrix
(``compute_spectra(..., cache=False)`` then ``summarize_plan``), as a page without the spectrum
cache would have to. Then two parts of a rerun against what they replace, also in this run:
``PlanCalculator.summarize`` against ``summarize_plan``, and the two charts built from plain
dicts without validation against the same figures built with plotly's validation, and the
prediction (``PredictionBasis.predict``: a lookup per matrix in sums made once) against summing
each matrix's dropped σ̃ᵢ² and costs afresh on every move.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["LOWRANK_LAB_RUNS"] = str(Path(tempfile.mkdtemp(prefix="lowrank-bench-slider-")) / "runs.sqlite3")

import plotly.graph_objects as go
from streamlit.testing.v1 import AppTest

from lowrank_lab import CalibrationSettings, compute_spectra, load_model, summarize_plan, whitened_spectra
from lowrank_lab.compress.auto import component_costs
from lowrank_lab.plan import PlanCalculator, error_curve, plan_point, tradeoff_curves
from lowrank_lab.plan.presets import PRESETS
from lowrank_lab.prediction import prediction_basis
from lowrank_lab.ui import state
from lowrank_lab.ui.prediction_view import JOB, PREDICTED_PPL
from lowrank_lab.ui.rank_charts import error_rank_spec, fast_figure, tradeoff_spec

TARGET_MS = 100.0
TARGET_PREDICT_MS = 50.0


def _page(model: str, predict: bool) -> tuple[AppTest, float]:
    at = AppTest.from_file(str(ROOT / "pages" / "2_Ranks.py"), default_timeout=1800)
    at.session_state["model_source"] = model
    if predict:  # as the Spectra page's Calibrate button (or a compression) leaves it
        at.session_state[state.CALIBRATION] = state.Calibration(model, CalibrationSettings())
    start = time.perf_counter()
    at.run()
    if predict and JOB in at.session_state:  # the basis is built by a background job: wait, then redraw
        at.session_state[JOB][1].join()
        at.run()
    if at.exception:
        raise SystemExit(f"the page failed: {at.exception[0].message}")
    if predict and not any(m.label == PREDICTED_PPL for m in at.metric):
        raise SystemExit("the calibrated page shows no prediction")
    return at, time.perf_counter() - start


def page_reruns(model: str, moves: int) -> tuple[dict[bool, list[float]], dict[bool, float]]:
    """Seconds per rerun after a slider move without and with predictions, and each cold first run's seconds."""
    pages, first = {}, {}
    for predict in (False, True):
        pages[predict], first[predict] = _page(model, predict)
    slider = next(s for s in pages[False].slider if s.key.startswith("ranks_kind_mlp"))
    key, low, high = slider.key, int(slider.min), int(slider.max)
    times = {False: [], True: []}
    for i in range(moves):
        value = low + (i * 37) % (high - low)  # jump around, across break-even too
        for predict in (False, True) if i % 2 == 0 else (True, False):  # alternate: the machine is shared
            at = pages[predict]
            start = time.perf_counter()
            at.slider(key=key).set_value(value).run()
            times[predict].append(time.perf_counter() - start)
            if at.exception:
                raise SystemExit(f"the page failed: {at.exception[0].message}")
    return times, first


def naive_moves(model: str, repeats: int) -> list[float]:
    """Seconds per slider move for a summary computed with a fresh SVD of every matrix."""
    loaded = load_model(model)
    spectra = compute_spectra(loaded.model)
    plan = PRESETS["keep-params"].plan(spectra, 0.5)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fresh = compute_spectra(loaded.model, cache=False)
        summarize_plan(fresh, plan, loaded.n_params)
        times.append(time.perf_counter() - start)
    return times


def median_ms(fn, repeats: int = 30) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def fresh_prediction(plan, whitened, costs) -> float:
    """The model's activation-aware error and raw loss from scratch: every matrix's tail summed anew."""
    ranks = plan.as_dict()
    dropped = total = cost = 0.0
    for sp in whitened:
        s2 = np.square(sp.s)
        r = ranks.get(sp.name, len(sp.s))
        dropped += float(s2[r:].sum())
        total += float(s2.sum())
        cost += float(costs[sp.name][r:].sum())
    return (dropped / total) ** 0.5 + cost


def parts(model: str) -> list[tuple[str, float, str, float]]:
    """(part, median ms, what it replaces, its median ms) for the costliest parts of a rerun."""
    loaded = load_model(model)
    spectra = compute_spectra(loaded.model)
    plan = PRESETS["keep-params"].plan(spectra, 0.5)
    calc = PlanCalculator(spectra)
    curves = tradeoff_curves(spectra)
    sp = next(s for s in spectra if not s.is_embedding)
    point = plan_point(calc.summarize(plan))
    cal = CalibrationSettings()
    basis = prediction_basis(loaded, cal)
    whitened, costs = whitened_spectra(loaded, cal), component_costs(loaded, cal)

    def figures(build):
        build(error_rank_spec(error_curve(sp), min(100, sp.full_rank), sp.name))
        build(tradeoff_spec(curves, point))

    return [
        ("PlanCalculator.summarize", median_ms(lambda: calc.summarize(plan, loaded.n_params)),
         "summarize_plan", median_ms(lambda: summarize_plan(spectra, plan, loaded.n_params))),
        ("two charts from dicts, unvalidated", median_ms(lambda: figures(fast_figure)),
         "the same, validated by plotly", median_ms(lambda: figures(go.Figure))),
        ("PredictionBasis.predict", median_ms(lambda: basis.predict(plan)),
         "tails summed afresh per matrix", median_ms(lambda: fresh_prediction(plan, whitened, costs))),
    ]  # fmt: skip


def main() -> None:
    # AppTest runs pages outside a server; Streamlit says so once per thread, harmlessly.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--moves", type=int, default=30)
    parser.add_argument("--naive-repeats", type=int, default=3)
    args = parser.parse_args()

    times, first = page_reruns(args.model, args.moves)
    naive = naive_moves(args.model, args.naive_repeats)
    page_ms, naive_ms = 1e3 * statistics.median(times[False]), 1e3 * statistics.median(naive)
    predict_ms = 1e3 * statistics.median(times[True])
    print(f"Ranks page on {args.model}: first run {first[False]:.1f} s (loads the model, spectra, trade-off curves); "
          f"calibrated page's first run {first[True]:.1f} s (calibration, whitened SVDs, loss costs, dense perplexity)")  # fmt: skip
    print(f"{'way':<52} {'median ms':>10} {'ratio':>22}")
    print(f"{'lowrank_lab rerun after one slider move':<52} {page_ms:>10.1f} {'1':>22}")
    print(f"{'target':<52} {TARGET_MS:>10.1f} {f'{page_ms / TARGET_MS:.2f} of target':>22}")
    print(f"{'the same rerun with predictions on':<52} {predict_ms:>10.1f} {f'{predict_ms / page_ms:.2f}x':>22}")
    print(f"{'target with predictions':<52} {TARGET_PREDICT_MS:>10.1f} "
          f"{f'{predict_ms / TARGET_PREDICT_MS:.2f} of target':>22}")  # fmt: skip
    print(
        f"{'naive: fresh SVD of every matrix + summary':<52} {naive_ms:>10.1f} {f'{naive_ms / page_ms:.0f}x slower':>22}"
    )
    for predict, label in ((False, "without"), (True, "with")):
        reruns = times[predict]
        print(f"rerun p90 {label} predictions {1e3 * sorted(reruns)[int(0.9 * (len(reruns) - 1))]:.1f} ms "
              f"over {len(reruns)} moves")  # fmt: skip
    print(f"{'part of a rerun':<36} {'ms':>7}   {'what it replaces':<30} {'ms':>7} {'ratio':>8}")
    for part, ms, other, other_ms in parts(args.model):
        print(f"{part:<36} {ms:>7.2f}   {other:<30} {other_ms:>7.2f} {f'{other_ms / ms:.1f}x':>8}")


if __name__ == "__main__":
    main()
