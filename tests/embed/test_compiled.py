"""Compiled transformer blocks (layerfuse.embed.compiled): same vectors, a decision that can be
read, and a failed compile that falls back to eager."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layerfuse.embed import compiled
from layerfuse.embed.backbones import load_backbone
from layerfuse.embed.compiled import compile_blocks, compile_decision, eager_blocks, normalise_compile
from layerfuse.embed.extract import extract_texts
from layerfuse.embed.forward import embed_sorted, tokenize
from layerfuse.errors import LayerfuseError

TEXTS = ["the movie was good", "a dull plot", "the best film", "not very fun really",
         "great actor lovely story and a long plot", "bad"]


@pytest.fixture()
def bb(tiny_model):
    return load_backbone(tiny_model, progress=False)


def _embed(bb, depth=None):
    enc, _ = tokenize(bb, TEXTS, 64)
    order = np.argsort([-len(e) for e in enc], kind="stable")
    with torch.inference_mode():
        return embed_sorted(bb, [enc[i] for i in order], ["mean", "last"], depth or bb.n_layers, batch_tokens=16)


@pytest.mark.skipif(compiled.compiler() is None, reason="torch.compile on a CPU needs a C++ compiler")
def test_compiled_blocks_give_the_eager_vectors_and_undo(bb, tmp_path, one_torch_thread):
    eager = _embed(bb)
    early_eager = _embed(bb, depth=1)
    assert compile_blocks(bb, root=tmp_path, announce=pytest.fail)
    assert bb.extra["compiled"] and bb.extra["compile_seconds"] > 0
    assert len(bb.extra["stacked_mlps"]) == bb.n_layers  # the tiny llama's MLPs: gate and up as one product
    mlp = bb.extra["stacked_mlps"][0]
    assert mlp.gate_proj.weight.data_ptr() == mlp.gate_up_weight.data_ptr()  # views, no copy
    assert any((tmp_path / "inductor").iterdir())  # the generated code is kept under the cache root
    means = []  # the mean pooling runs compiled too
    compiled_mean = bb.extra["pooled_mean"]
    assert hasattr(compiled_mean, "_torchdynamo_orig_callable")
    bb.extra["pooled_mean"] = lambda *a: means.append(1) or compiled_mean(*a)
    done = _embed(bb)  # batches of several shapes: one dynamic graph
    assert means and len(means) % (bb.n_layers + 1) == 0  # layers 0..L of every batch
    early = _embed(bb, depth=1)  # the early stop still ends the pass after block 1
    for p in eager:
        np.testing.assert_allclose(done[p], eager[p], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(early[p], early_eager[p], rtol=1e-4, atol=1e-5)
    eager_blocks(bb)
    assert "compiled" not in bb.extra and "pooled_mean" not in bb.extra and "forward" not in mlp.__dict__ and not hasattr(mlp, "gate_up_weight")
    np.testing.assert_allclose(_embed(bb)["mean"], eager["mean"], rtol=1e-5, atol=1e-6)
    assert all(not hasattr(b.forward, "_torchdynamo_orig_callable") for b in bb.layer_modules())


def test_a_failed_compile_falls_back_to_eager(bb, tmp_path, monkeypatch):
    def broken(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no compiler here\nsecond line")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    said = []
    assert not compile_blocks(bb, root=tmp_path, announce=said.append)
    assert "compiled" not in bb.extra
    assert said and "RuntimeError: no compiler here" in said[0] and "running eager" in said[0]
    _embed(bb)  # the eager blocks run again


def test_decision(bb, monkeypatch):
    assert compile_decision("off", bb, 10**9) == (False, "compile off")
    on, why = compile_decision("auto", bb, 100)
    assert not on and "TFLOP" in why  # a tiny pass does not repay compiling
    per_token = compiled.block_flops_per_token(bb)
    assert per_token == 2 * sum(p.numel() for b in bb.layer_modules() for p in b.parameters())
    assert compiled.block_flops_per_token(bb, 1) < per_token
    need = int(compiled.COMPILE_MIN_FLOP / per_token) + 1
    assert compile_decision("auto", bb, need)[0] == (compiled.compiler() is not None)
    assert not compile_decision("auto", bb, need - 2)[0]
    monkeypatch.setattr(compiled, "compiler", lambda: None)
    on, why = compile_decision("auto", bb, need)
    assert not on and "C++ compiler" in why
    on, why = compile_decision("on", bb, 1)
    assert not on and "no C++ compiler" in why


def test_normalise_compile():
    assert [normalise_compile(v) for v in ("auto", "on", "off", True, False, "true", "no")] == [
        "auto", "on", "off", "on", "off", "on", "off"]
    with pytest.raises(LayerfuseError, match="`compile` must be one of auto, on, off"):
        normalise_compile("fast")


def test_extract_records_the_choice(tiny_model, tmp_path):
    _, st = extract_texts(tiny_model, TEXTS, text_fingerprint="t", cache_dir=tmp_path, progress=False)
    assert st["compiled"] is False and st["compile_reason"].startswith("auto:")
    _, st = extract_texts(tiny_model, TEXTS[:3], text_fingerprint="t2", cache_dir=tmp_path / "other",
                          progress=False, compile="off")
    assert st["compile_reason"] == "compile off"


def test_config_file_takes_compile(tmp_path):
    from layerfuse.run.config_file import load_config_file

    f = tmp_path / "c.yaml"
    f.write_text("extraction:\n  compile: false\n")
    assert load_config_file(f)["extraction"]["compile"] == "off"
    f.write_text("extraction:\n  compile: sometimes\n")
    with pytest.raises(LayerfuseError, match=r"extraction.compile must be auto, on or off"):
        load_config_file(f)
