"""The packed pass (a batch's real tokens as one row, attention in the padded frame) gives the
padded pass's pooled vectors, for every architecture it is switched on for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layerfuse.embed.backbones import load_backbone
from layerfuse.embed.forward import embed_sorted, packs, tokenize
from layerfuse.embed.packed import PACKED_ATTENTION, PACKED_MODEL_TYPES, pack
from layerfuse.embed.pooling import POOLINGS

from conftest import build_tiny_model
from helpers import SENTENCES as TEXTS


@pytest.fixture(scope="module", params=sorted(PACKED_MODEL_TYPES))
def arch_bb(request, tmp_path_factory, one_torch_thread):
    folder = build_tiny_model(tmp_path_factory.mktemp(f"tiny-{request.param}"), arch=request.param, seed=5)
    return _word_level(load_backbone(str(folder)), folder)


def _word_level(bb, folder):
    """transformers picks a tokenizer class by model type (Qwen2's would drop the test's words):
    keep the word-level tokenizer the folder holds."""
    from transformers import PreTrainedTokenizerFast

    bb.tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
    return bb


def _both(bb, enc, depth, side, batch_tokens=40):
    kw = dict(batch_tokens=batch_tokens, padding_side=side)
    bb.extra["packed"] = True
    try:
        packed = embed_sorted(bb, enc, list(POOLINGS), depth, **kw)
    finally:
        bb.extra["packed"] = False
    try:
        padded = embed_sorted(bb, enc, list(POOLINGS), depth, **kw)
    finally:
        del bb.extra["packed"]
    return packed, padded


@pytest.mark.parametrize("side", ["right", "left"])
def test_packed_equals_padded_for_each_architecture(arch_bb, side):
    bb = arch_bb
    assert packs(bb), bb.model.config.model_type
    enc, _ = tokenize(bb, TEXTS, 64)
    enc = sorted(enc, key=len, reverse=True)
    for depth in (1, bb.n_layers):  # an early stop, and the whole model with its final norm
        packed, padded = _both(bb, enc, depth, side)
        for p in POOLINGS:
            assert packed[p].shape == (depth + 1, len(TEXTS), bb.width)
            np.testing.assert_allclose(packed[p], padded[p], rtol=1e-5, atol=1e-5, err_msg=f"{p}, depth {depth}")


def test_packed_pass_calls_the_packed_attention_and_restores_the_model(arch_bb):
    bb = arch_bb
    former = bb.model.config._attn_implementation
    from transformers import AttentionInterface

    from layerfuse.embed import packed as packed_mod

    calls = []

    def counted(*args, **kwargs):
        calls.append(args[1].shape)
        return packed_mod.packed_attention(*args, **kwargs)

    enc, _ = tokenize(bb, TEXTS[:3], 64)
    packed_mod._register()
    AttentionInterface.register(PACKED_ATTENTION, counted)
    try:
        embed_sorted(bb, sorted(enc, key=len, reverse=True), ["mean"], 1, batch_tokens=200)
    finally:
        AttentionInterface.register(PACKED_ATTENTION, packed_mod.packed_attention)
    # depth 1 stops after the first block: one call, one packed row of all the real tokens
    assert len(calls) == 1 and calls[0][0] == 1 and calls[0][2] == sum(len(e) for e in enc)
    assert bb.model.config._attn_implementation == former


def test_unsupported_architecture_runs_padded(tmp_path, one_torch_thread):
    folder = build_tiny_model(tmp_path / "gpt2", arch="gpt2")
    bb = _word_level(load_backbone(str(folder)), folder)
    assert bb.model.config.model_type not in PACKED_MODEL_TYPES and not packs(bb)
    enc, _ = tokenize(bb, TEXTS[:4], 64)
    out = embed_sorted(bb, sorted(enc, key=len, reverse=True), ["mean", "last"], bb.n_layers, batch_tokens=40)
    assert np.isfinite(out["mean"]).all()


def test_packs_follows_the_backbone_setting(tiny_model, one_torch_thread):
    bb = load_backbone(tiny_model)
    assert packs(bb)
    bb.extra["packed"] = False
    assert not packs(bb)
    del bb.extra["packed"]
    bb.extra["position_ids"] = False  # a model given no positions cannot be packed (they would run on)
    assert not packs(bb)


def test_pack_maps_frame_and_row_both_sides():
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    p = pack(mask, causal=True)
    assert p.flat.tolist() == [0, 1, 2, 3, 4, 6]
    assert p.gather.tolist() == [[0, 1, 2], [3, 4, 3], [5, 5, 5]]
    left = pack(mask.flip(-1), causal=True)
    assert left.flat.tolist() == [0, 1, 2, 4, 5, 8]
    assert left.gather.tolist() == [[0, 1, 2], [3, 3, 4], [5, 5, 5]]
    # a real query sees real keys up to itself; padding keys never
    assert left.allowed[1, 0].tolist() == [[False, False, False], [False, True, False], [False, True, True]]
    assert p.bias.dtype == torch.float32 and (p.bias[~p.allowed] == torch.finfo(torch.float32).min).all()
    assert (p.bias[p.allowed] == 0).all()
    both = pack(mask, causal=False)
    assert both.allowed[1, 0].tolist() == [[True, True, False]] * 3


def test_a_window_shorter_than_the_texts_changes_the_vectors(tmp_path, one_torch_thread):
    """The sliding window is honoured, not dropped: a mistral with a 3-token window and the same
    weights with no window pool differently on long texts, and packed equals padded for each."""
    folder = build_tiny_model(tmp_path / "mistral", arch="mistral", seed=5)
    bb = _word_level(load_backbone(str(folder)), folder)
    enc, _ = tokenize(bb, TEXTS, 64)
    enc = sorted(enc, key=len, reverse=True)
    windowed, padded = _both(bb, enc, bb.n_layers, "right")
    np.testing.assert_allclose(windowed["mean"], padded["mean"], rtol=1e-5, atol=1e-5)
    bb.model.config.sliding_window = None
    unwindowed, padded_full = _both(bb, enc, bb.n_layers, "right")
    np.testing.assert_allclose(unwindowed["mean"], padded_full["mean"], rtol=1e-5, atol=1e-5)
    assert np.abs(windowed["mean"][-1, 0] - unwindowed["mean"][-1, 0]).max() > 1e-4
