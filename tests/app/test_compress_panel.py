"""AppTest of "Compress and evaluate" on the Ranks page and the whitened spectrum on the Spectra page (tiny-llama)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from lowrank_lab.lowrank import LowRankLinear
from lowrank_lab.models import CompressedModel

ROOT = Path(__file__).resolve().parents[2]
RANKS = str(ROOT / "pages" / "2_Ranks.py")
SPECTRA = str(ROOT / "pages" / "1_Spectra.py")
SUBMIT = "Compress and evaluate"


def page(path: str) -> AppTest:
    at = AppTest.from_file(path, default_timeout=240)
    at.session_state["model_source"] = "tiny-llama"
    at.run()
    assert not at.exception, at.exception
    return at


def submit(at: AppTest, ranks: str, samples: int = 5, seq_len: int = 128, keep: int = 60) -> AppTest:
    at.radio(key="compress_ranks").set_value(ranks)
    at.slider(key="compress_keep").set_value(keep)
    at.number_input(key="compress_samples").set_value(samples)
    at.number_input(key="compress_seq_len").set_value(seq_len)
    next(b for b in at.button if b.label == SUBMIT).click()
    at.run()
    assert not at.exception, at.exception
    return finish(at)


def finish(at: AppTest) -> AppTest:
    """Wait for the background compression, then rerun the page to show its result."""
    job = at.session_state["compress_job"] if "compress_job" in at.session_state else None
    if job is not None:
        assert job.join(timeout=240)
        at.run()
        assert not at.exception, at.exception
    return at


def figures_row(at: AppTest, starts: str):
    table = next(d.value for d in at.dataframe if "figure" in d.value.columns)
    return table[table["figure"].str.startswith(starts)].iloc[0]


def test_compress_the_sliders_plan_and_measure_it(tiny_llama):
    at = page(RANKS)
    plan = at.session_state["rank_plan"]
    at = submit(at, "plan")
    compressed = at.session_state["compressed"].compressed
    assert isinstance(compressed, CompressedModel) and compressed.method == "whitened"
    assert compressed.plan == factorized_part(plan, compressed)
    assert not any(isinstance(m, LowRankLinear) for m in tiny_llama.model.modules())  # the shared model is untouched
    params = figures_row(at, "parameters")
    assert params["compressed"] < params["dense"] and params["compressed / dense"] == pytest.approx(
        params["compressed"] / params["dense"]
    )
    ppl = figures_row(at, "perplexity")
    assert ppl["dense"] > 1 and ppl["compressed"] > 1
    assert any("It is ready for the LoRA and Export pages" in s.value for s in at.success)
    assert not [b for b in at.button if b.key == "compress_load_plan"]  # the sliders' own plan: nothing to load


def factorized_part(plan, compressed):
    # The factorized ranks: the slider plan's ranks for every module that was factorized.
    return type(plan)({name: plan.get(name) for name in compressed.plan.as_dict()})


def test_an_allocated_plan_loads_into_the_sliders():
    at = submit(page(RANKS), "uniform", keep=40)
    compressed = at.session_state["compressed"].compressed
    linear = compressed.params.linear_compressed / compressed.params.linear_dense
    assert linear <= 0.42
    at.button(key="compress_load_plan").click()
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["rank_plan"].as_dict() == compressed.plan.as_dict()


def test_too_little_calibration_text_keeps_the_earlier_result():
    at = submit(page(RANKS), "uniform")
    first = at.session_state["compressed"]
    at = submit(at, "uniform", samples=512, seq_len=2048)  # past tiny-llama's 256 positions
    assert any("Compression stopped" in e.value and "256 positions" in e.value for e in at.error)
    at.file_uploader(key="compress_upload").upload("notes.txt", b"only a few words of calibration text")
    at = submit(at, "uniform", samples=8, seq_len=64)
    assert any(
        "Compression stopped" in e.value and "notes.txt) has" in e.value and "tokens" in e.value for e in at.error
    )
    assert at.session_state["compressed"] is first


def test_whitened_spectrum_after_calibration(tiny_llama):
    at = page(SPECTRA)
    assert not [c for c in at.get("plotly_chart") if "spectra_whitened" in c.proto.id]
    at.button(key="spectra_calibrate").click()
    at.run()
    assert not at.exception, at.exception
    _, job = at.session_state["spectra_calibration_job"]
    assert at.button(key="spectra_calibrate_stop")  # the job runs in the background, with Stop
    assert job.join(timeout=240)
    at.run()
    assert not at.exception, at.exception
    charts = [c for c in at.get("plotly_chart") if "spectra_whitened" in c.proto.id]
    assert len(charts) == 1
    assert at.session_state["calibration"].source == "tiny-llama"
    w = tiny_llama.model.model.layers[0].mlp.up_proj.weight
    assert torch.equal(w, tiny_llama.model.model.layers[0].mlp.up_proj.weight)


def test_uploaded_calibration_and_evaluation_text():
    from lowrank_lab.data import builtin_text

    at = page(RANKS)
    at.file_uploader(key="compress_upload").upload("notes.txt", builtin_text("evaluation")[:40_000].encode())
    at.file_uploader(key="compress_eval_upload").upload("eval.txt", builtin_text("evaluation")[40_000:].encode())
    at = submit(at, "uniform")
    compressed = at.session_state["compressed"].compressed
    assert compressed.calibration["text"] == "uploaded notes.txt"
    assert figures_row(at, "perplexity (uploaded eval.txt")["compressed"] > 1


def test_a_bad_uploaded_text_says_why():
    at = page(RANKS)
    at.file_uploader(key="compress_upload").upload("latin.txt", "café crème".encode("latin-1"))
    at = submit(at, "uniform")
    assert any("latin.txt is not UTF-8" in e.value for e in at.error)
    assert "compressed" not in at.session_state


def test_auto_says_which_candidate_it_chose_and_why():
    at = submit(page(RANKS), "auto", keep=50)
    run = at.session_state["compressed"]
    report = run.allocation
    assert report.strategy == "auto" and len(report.candidates) == 2
    assert run.compressed.plan.as_dict() == {k: v for k, v in report.plan.as_dict().items()}
    why = next(m.value for m in at.markdown if m.value.startswith("**Why these ranks.**"))
    assert f"**{report.winner.name}** plan" in why and f"{report.winner.calibration_loss:.4f}" in why
    table = next(d.value for d in at.dataframe if "candidate" in d.value.columns)
    assert list(table["candidate"]) == ["loss-weighted", "uniform"]
    assert list(table["calibration loss"]) == pytest.approx([c.calibration_loss for c in report.candidates])
    assert table["chosen"].tolist() == [i == report.chosen for i in range(2)]


def test_too_few_calibration_tokens_start_nothing_and_say_why():
    at = submit(page(RANKS), "plan", samples=1, seq_len=8)
    assert "compressed" not in at.session_state and "compress_job" not in at.session_state
    message = next(e.value for e in at.error if "Compression not started" in e.value)
    assert "8 calibration tokens are too few" in message and "XᵀX" in message
    at.run()
    assert not [e for e in at.error if "Compression not started" in e.value]  # gone on the next action


def test_svd_needs_no_calibration_and_few_tokens_warn_with_the_result():
    at = page(RANKS)
    at.radio(key="compress_method").set_value("svd")
    at = submit(at, "plan", samples=1, seq_len=8)
    assert at.session_state["compressed"].compressed.method == "svd"
    at.radio(key="compress_method").set_value("whitened")
    at = submit(at, "plan", samples=2, seq_len=128)  # 256 tokens: invertible, not well conditioned
    run = at.session_state["compressed"]
    assert run.compressed.method == "whitened" and run.notes and "are few" in run.notes[0]
    assert any("are few" in w.value for w in at.warning)


def test_the_form_keeps_its_values_after_a_run():
    at = page(RANKS)
    at.radio(key="compress_method").set_value("pca")
    at = submit(at, "uniform", keep=45)
    assert at.session_state["compressed"].compressed.method == "pca"
    assert at.radio(key="compress_method").value == "pca" and at.radio(key="compress_ranks").value == "uniform"
    assert at.slider(key="compress_keep").value == 45 and at.number_input(key="compress_seq_len").value == 128


def test_stop_ends_a_compression_and_keeps_the_earlier_result():
    at = submit(page(RANKS), "uniform")
    first = at.session_state["compressed"]
    at.radio(key="compress_ranks").set_value("auto")
    next(b for b in at.button if b.label == SUBMIT).click()
    at.run()
    job = at.session_state["compress_job"]
    stop = at.button(key="compress_stop")
    assert not stop.disabled  # Stop from the first second
    stop.click().run()
    assert job.join(timeout=120)
    at.run()
    assert not at.exception
    assert job.cancelled and at.session_state["compressed"] is first
    assert any("Compression stopped after" in i.value for i in at.info)


def test_far_above_dense_is_a_warning_with_what_to_try_never_green(tiny_llama):
    import dataclasses

    at = submit(page(RANKS), "uniform")
    run = at.session_state["compressed"]
    report = run.comparison
    # The same measured run, with the compressed perplexity as a broken model's (3× dense).
    broken = dataclasses.replace(report.compressed, perplexity=3 * report.dense.perplexity)
    at.session_state["compressed"] = dataclasses.replace(run, comparison=dataclasses.replace(report, compressed=broken))
    at.run()
    assert not [s for s in at.success if "Compressed" in s.value]
    warning = next(w.value for w in at.warning if "Far above the dense model" in w.value)
    assert "3.00× dense" in warning and "keep more parameters" in warning and "auto ranks" in warning
    assert "LoRA page" in warning


def test_what_each_stage_bought_is_measured_and_shown(tiny_llama):
    """The box adds the stage report: dense, then each stage of the pipeline, in the results."""
    at = page(RANKS)
    at.checkbox(key="compress_stages").check()
    at = submit(at, "auto", samples=8, keep=60)
    run = at.session_state["compressed"]
    report = run.stages
    assert report is not None and [f.stage for f in report.stages] == [
        "whitened, uniform ranks",
        "allocated ranks",
        "sequential inputs",
        "refit to the dense outputs",
    ]
    measured = figures_row(at, "perplexity")["compressed"]
    assert report.stages[-1].perplexity == pytest.approx(measured, rel=1e-6)  # the final stage is the model measured
    table = next(d.value for d in at.dataframe if "stage" in d.value.columns)
    assert list(table["stage"]) == ["dense", *[f.stage for f in report.stages]]
    assert table["perplexity"].iloc[0] == pytest.approx(report.dense_perplexity)


def test_distillation_steps_train_the_factors_and_show_the_kl_curve(tiny_llama):
    """Steps above 0 add the distillation after the walk: the distilled stage, the KL curve, the record."""
    at = page(RANKS)
    at.checkbox(key="compress_stages").check()
    at.number_input(key="compress_distill").set_value(3)
    at = submit(at, "uniform", samples=8, keep=60)
    run = at.session_state["compressed"]
    assert run.distillation is not None and len(run.distillation.losses) == 3
    assert [f.stage for f in run.stages.stages][-2:] == ["refit to the dense outputs", "distilled end to end"]
    measured = figures_row(at, "perplexity")["compressed"]
    assert run.stages.stages[-1].perplexity == pytest.approx(measured, rel=1e-6)
    assert run.compressed.calibration["distillation"]["steps"] == 3
    assert any("Distillation" in m.value and "KL to the dense model" in m.value for m in at.markdown)
