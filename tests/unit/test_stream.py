"""Streaming spectra from safetensors equals analysing the loaded model."""

from __future__ import annotations

import numpy as np
import pytest

from lowrank_lab import ModelLoadError, compute_spectra
from lowrank_lab.cli import main
from lowrank_lab.spectra import SpectrumCache
from lowrank_lab.spectra.stream import stream_spectra


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2", "tiny_bert"])
def test_stream_equals_loaded(fixture, request, tmp_path):
    loaded = request.getfixturevalue(fixture)
    loaded.model.save_pretrained(tmp_path / "m", max_shard_size="100KB")  # several shards
    assert len(list((tmp_path / "m").glob("*.safetensors"))) > 1
    streamed = {sp.name: sp for sp in stream_spectra(tmp_path / "m", cache=SpectrumCache(tmp_path / "c"))}
    for sp in compute_spectra(loaded.model, cache=False):
        other = streamed[sp.name]
        assert (other.shape, other.kind, other.layer, other.is_embedding) == (
            sp.shape,
            sp.kind,
            sp.layer,
            sp.is_embedding,
        )
        np.testing.assert_allclose(other.s, sp.s, rtol=1e-12, atol=1e-12 * sp.s[0])


def test_stream_errors_and_cli(tmp_path, tiny_llama, capsys):
    with pytest.raises(ModelLoadError, match="no .safetensors"):
        stream_spectra(tmp_path)
    tiny_llama.model.save_pretrained(tmp_path / "m")
    assert main(["spectra", "--model", str(tmp_path / "m"), "--stream", "--no-cache", "--json"]) == 0
    assert '"matrices": 15' in capsys.readouterr().out.splitlines()[-1]
