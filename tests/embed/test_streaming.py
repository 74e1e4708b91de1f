"""Streaming pooling (forward hooks) gives the numbers of the former all-hidden-states path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layerfuse.embed.backbones import load_backbone
from layerfuse.embed.forward import embed_sorted, forward_pooled, tokenize
from layerfuse.embed.pooling import POOLINGS, LayerPooler, pool

from helpers import SENTENCES as TEXTS


@pytest.fixture(scope="module")
def bb(tiny_model, one_torch_thread):
    return load_backbone(tiny_model)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_streaming_equals_hidden_states_path(bb, side, depth):
    enc, _ = tokenize(bb, TEXTS, 64)
    enc = sorted(enc, key=len, reverse=True)
    kw = dict(batch_tokens=40, padding_side=side)
    new = embed_sorted(bb, enc, list(POOLINGS), depth, **kw)
    old = embed_sorted(bb, enc, list(POOLINGS), depth, streaming=False, **kw)
    for p in POOLINGS:
        assert new[p].shape == (depth + 1, len(TEXTS), bb.width)
        np.testing.assert_allclose(new[p], old[p], rtol=1e-5, atol=1e-6)


def test_padding_side_does_not_change_the_pooled_vectors(bb):
    enc, _ = tokenize(bb, TEXTS, 64)
    enc = sorted(enc, key=len, reverse=True)
    right = embed_sorted(bb, enc, list(POOLINGS), 3, batch_tokens=40, padding_side="right")
    left = embed_sorted(bb, enc, list(POOLINGS), 3, batch_tokens=40, padding_side="left")
    for p in POOLINGS:
        np.testing.assert_allclose(left[p], right[p], rtol=1e-4, atol=1e-5)


def test_early_stop_runs_only_the_blocks_needed(bb):
    blocks = bb.layer_modules()
    before = [(len(b._forward_hooks), len(b._forward_pre_hooks)) for b in blocks]
    calls = []
    handles = [b.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, b in enumerate(blocks)]
    ids = torch.tensor([[2, 5, 6, 7]])
    mask = torch.ones_like(ids)
    try:
        with torch.inference_mode():
            out = forward_pooled(bb, ids, mask, 1, ["mean"])
    finally:
        for h in handles:
            h.remove()
    assert calls == [0] and len(out) == 2 and out[1]["mean"].shape == (1, bb.width)
    # no hook of ours is left on the model
    assert [(len(b._forward_hooks), len(b._forward_pre_hooks)) for b in blocks] == before


def test_last_layer_is_the_final_norm_output(bb):
    ids = torch.tensor([[2, 5, 6, 7, 8]])
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        out = forward_pooled(bb, ids, mask, bb.n_layers, ["last"])
        ref = bb.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1]
    torch.testing.assert_close(out[-1]["last"], ref)


def test_layer_pooler_matches_pool_in_bfloat16():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 6, 8, generator=g).to(torch.bfloat16)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    got = LayerPooler(mask, POOLINGS)(h)
    for p in POOLINGS:
        assert got[p].dtype == torch.float32
        torch.testing.assert_close(got[p], pool(h.float(), mask, p), rtol=0, atol=0)


def test_streaming_equals_hidden_states_path_in_bfloat16(tiny_model, one_torch_thread):
    bb16 = load_backbone(tiny_model, dtype="bfloat16")
    enc, _ = tokenize(bb16, TEXTS, 64)
    enc = sorted(enc, key=len, reverse=True)
    for depth in (1, bb16.n_layers):
        new = embed_sorted(bb16, enc, list(POOLINGS), depth, batch_tokens=40)
        old = embed_sorted(bb16, enc, list(POOLINGS), depth, batch_tokens=40, streaming=False)
        for p in POOLINGS:
            np.testing.assert_allclose(new[p], old[p], rtol=1e-5, atol=1e-6)
