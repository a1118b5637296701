"""AppTest of the home page: choosing models (tiny, local folder, file, hub id) and the summary shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lowrank_lab import weight_matrices

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")


def start(source: str = "tiny-llama") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["model_source"] = source
    at.run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_summary_of_a_tiny_model(tiny_llama):
    at = start()
    assert at.selectbox(key="home_model_choice").value == "tiny-llama"
    assert metric(at, "Architecture") == "LlamaForCausalLM"
    assert metric(at, "Parameters") == f"{tiny_llama.n_params:,}"
    assert metric(at, "Weight matrices") == "15" and metric(at, "Layers") == "2"
    assert metric(at, "Memory") == f"{tiny_llama.n_bytes / 1024:.1f} KiB"
    kinds = at.dataframe[0].value
    assert kinds["parameters"].sum() == sum(m.params for m in weight_matrices(tiny_llama.model))
    assert kinds.set_index("kind").loc["mlp.up_proj", "shape (out×in)"] == "160×64"
    assert "tied to lm_head" in kinds.set_index("kind").loc["model.embed_tokens", "note"]
    labels = [p.proto.label for p in at.get("page_link")]
    assert "**Spectra**" in labels and "**Ranks**" in labels


def test_switching_models_drops_the_old_plan_but_keeps_finished_work(tiny_gpt2):
    at = start()
    at.session_state["rank_plan"] = "a plan for tiny-llama"
    at.session_state["compressed"] = "a finished compressed tiny-llama"
    at.session_state["adapter"] = "a finished adapter"
    at.selectbox(key="home_model_choice").set_value("tiny-gpt2").run()
    assert metric(at, "Architecture") == "GPT2LMHeadModel"
    assert metric(at, "Parameters") == f"{tiny_gpt2.n_params:,}"
    assert "rank_plan" not in at.session_state
    # finished work names its own source and stays downloadable on the Export page
    assert at.session_state["compressed"] == "a finished compressed tiny-llama"
    assert at.session_state["adapter"] == "a finished adapter"


def test_local_folder_and_safetensors_file(tiny_llama, tmp_path):
    tiny_llama.model.save_pretrained(tmp_path)
    tiny_llama.tokenizer.save_pretrained(tmp_path)
    at = start()
    at.selectbox(key="home_model_choice").set_value("local folder or file").run()
    assert at.info and "config.json" in at.info[0].value  # asks for a path
    at.text_input(key="home_model_path").input(str(tmp_path)).run()
    assert not at.error and not at.exception
    assert metric(at, "Parameters") == f"{tiny_llama.n_params:,}"
    assert at.session_state["model_source"] == str(tmp_path)
    at.text_input(key="home_model_path").input(str(tmp_path / "model.safetensors")).run()
    assert not at.error and metric(at, "Architecture") == "LlamaForCausalLM"


@pytest.mark.parametrize(
    ("choice", "source", "message"),
    [
        ("local folder or file", "/no/such/folder", "not an existing path"),
        ("local folder or file", "weights.pkl", "not an existing path"),
        ("Hugging Face hub id", "someone/some-model", "cannot reach the Hugging Face Hub"),
    ],
)
def test_a_model_that_cannot_load_gives_a_clear_error(choice, source, message):
    at = start()
    at.selectbox(key="home_model_choice").set_value(choice).run()
    at.text_input(key="home_model_path").input(source).run()
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value
    # The app keeps running: choosing a good model again works.
    at.selectbox(key="home_model_choice").set_value("tiny-llama").run()
    assert not at.error and metric(at, "Architecture") == "LlamaForCausalLM"


def test_the_sidebar_names_every_page_file_as_the_home_guide_does():
    """app.py names the pages from their files before importing anything heavy; the guide must agree."""
    import ast

    from lowrank_lab.ui.home import PAGES

    tree = ast.parse(Path(APP).read_text())
    top_imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    modules = [a.name for n in top_imports if isinstance(n, ast.Import) for a in n.names]
    modules += [n.module for n in top_imports if isinstance(n, ast.ImportFrom)]
    assert not [m for m in modules if m.startswith("lowrank_lab")]  # the core loads after the sidebar is set
    rule = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "page_title")
    namespace: dict = {"re": __import__("re"), "Path": Path}
    exec(compile(ast.Module([rule], []), APP, "exec"), namespace)
    files = sorted((ROOT / "pages").glob("[0-9]*_*.py"))
    assert [(f"pages/{f.name}", namespace["page_title"](f)) for f in files] == [(p.path, p.title) for p in PAGES]
