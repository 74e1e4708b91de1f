"""Extraction: pooling against a hand computation, early stop, cache hit, resume, corruption."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from layerfuse import cache as cache_mod
from layerfuse.embed.backbones import load_backbone
from layerfuse.embed.extract import extract_texts
from layerfuse.embed.forward import plan_batches
from layerfuse.embed.pooling import pool
from layerfuse.errors import LayerfuseError

TEXTS = [
    "the movie was good",
    "awful",
    "a very very long and boring film with a dull plot",
    "great actor",
    "not quite the best story",
    "funny",
    "the worst film",
    "lovely charming short movie is fun",
    "sad",
    "really terrible",
]


def _reference(model_dir, texts):
    """Per text, run alone without padding: per-layer mean and last-token vectors."""
    bb = load_backbone(model_dir, progress=False)
    means, lasts = [], []
    for t in texts:
        ids = bb.tokenizer(t, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            hs = bb.model(input_ids=ids, output_hidden_states=True).hidden_states
        means.append(torch.stack([h[0].mean(0) for h in hs]).numpy())
        lasts.append(torch.stack([h[0, -1] for h in hs]).numpy())
    return np.stack(means, 1), np.stack(lasts, 1)  # [L+1, N, d]


@pytest.mark.parametrize("side", ["left", "right"])
def test_pooling_matches_hand_computation(tiny_model, cache_dir, side):
    ref_mean, ref_last = _reference(tiny_model, TEXTS)
    arrs, st = extract_texts(tiny_model, TEXTS, text_fingerprint=f"t-{side}", poolings=["mean", "last"],
                             storage="float32", padding_side=side, batch_tokens=10_000, progress=False)
    assert arrs["mean"].shape == ref_mean.shape == (4, len(TEXTS), 32)
    np.testing.assert_allclose(arrs["mean"], ref_mean, atol=2e-5)
    np.testing.assert_allclose(arrs["last"], ref_last, atol=2e-5)
    assert st["cache_hit"] is False


def test_pool_first_and_max_respect_mask():
    h = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1]])
    np.testing.assert_allclose(pool(h, mask, "first").numpy(), np.stack([h[0, 1].numpy(), h[1, 0].numpy()]))
    np.testing.assert_allclose(pool(h, mask, "last").numpy(), np.stack([h[0, 2].numpy(), h[1, 3].numpy()]))
    np.testing.assert_allclose(pool(h, mask, "max").numpy(), np.stack([h[0, 2].numpy(), h[1, 3].numpy()]))
    np.testing.assert_allclose(pool(h, mask, "mean").numpy()[0], h[0, 1:3].mean(0).numpy())


def test_plan_batches_respects_token_budget():
    lengths = np.array([50, 40, 30, 10, 10, 5, 5, 5, 1])
    batches = plan_batches(lengths, batch_tokens=100)
    assert np.concatenate(batches).tolist() == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * lengths[b].max() <= 100
    assert plan_batches([500, 3], batch_tokens=100)[0].tolist() == [0]  # a long text is its own batch


def _padded_cost(batches, lengths, per_batch):
    return sum(len(b) * int(lengths[b].max()) + per_batch for b in batches)


def test_plan_batches_with_batch_cost_pads_less_than_greedy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        lengths = np.sort(rng.integers(1, 60, size=int(rng.integers(1, 40))))[::-1]
        greedy = plan_batches(lengths, batch_tokens=2048)
        cut = plan_batches(lengths, batch_tokens=2048, batch_cost=64)
        assert np.concatenate(cut).tolist() == list(range(len(lengths)))
        assert all(len(b) == 1 or len(b) * lengths[b].max() <= 2048 for b in cut)
        assert _padded_cost(cut, lengths, 64) <= _padded_cost(greedy, lengths, 64)
    # One long text among short ones goes alone instead of padding them all to its length.
    lengths = np.array([55] + [10] * 31)
    assert [len(b) for b in plan_batches(lengths, 2048, batch_cost=64)] == [1, 31]
    assert [len(b) for b in plan_batches(lengths, 2048)] == [32]
    # Equal lengths stay one batch: the per-batch cost never splits without saving padding.
    assert [len(b) for b in plan_batches(np.full(20, 7), 2048, batch_cost=64)] == [20]


def test_embed_texts_same_vectors_whatever_the_batch_cuts(tiny_model):
    from layerfuse.embed.backbones import load_backbone
    from layerfuse.embed.forward import embed_texts

    bb = load_backbone(tiny_model)
    texts = ["a much longer text than the others, with many words in it to pad"] + ["short"] * 6
    cut = embed_texts(bb, texts, ["mean", "last"], depth=2, batch_cost=64)
    greedy = embed_texts(bb, texts, ["mean", "last"], depth=2, batch_cost=0)
    for p in ("mean", "last"):
        np.testing.assert_allclose(cut[p], greedy[p], atol=1e-5)


def test_depth_stops_forward_pass_and_matches_full(tiny_model, cache_dir):
    full, _ = extract_texts(tiny_model, TEXTS, text_fingerprint="d", poolings=["mean"], storage="float32",
                            progress=False)
    bb = load_backbone(tiny_model, progress=False)
    calls = []
    handle = bb.layer_modules()[2].register_forward_hook(lambda *a: calls.append(1))
    part, st = extract_texts(bb, TEXTS, text_fingerprint="d2", poolings=["mean"], storage="float32", depth=1,
                             progress=False)
    handle.remove()
    assert part["mean"].shape[0] == 2
    assert calls == []  # block 3 (index 2) never ran
    np.testing.assert_allclose(part["mean"], full["mean"][:2], atol=2e-5)
    # A full-depth entry serves a shallower request without recomputing.
    again, st2 = extract_texts(tiny_model, TEXTS, text_fingerprint="d", poolings=["mean"], storage="float32",
                               depth=1, progress=False)
    assert st2["cache_hit"] and again["mean"].shape[0] == 2


def test_shallow_entry_never_serves_a_full_request(tiny_model, cache_dir):
    part, _ = extract_texts(tiny_model, TEXTS, text_fingerprint="s", poolings=["mean"], depth=1, progress=False)
    full, st = extract_texts(tiny_model, TEXTS, text_fingerprint="s", poolings=["mean"], progress=False)
    assert part["mean"].shape[0] == 2
    assert not st["cache_hit"] and full["mean"].shape[0] == 4  # 3 blocks + token embeddings


def _no_loading():
    raise AssertionError("the model must not be loaded when the cache holds every text")


def test_texts_inside_a_larger_entry_are_read_from_it(tiny_model, cache_dir):
    big, _ = extract_texts(tiny_model, TEXTS, text_fingerprint="all", storage="float32", progress=False)
    some = [TEXTS[7], TEXTS[2], TEXTS[2], TEXTS[0]]  # any order, repeats allowed
    sub, st = extract_texts(tiny_model, some, text_fingerprint="some", storage="float32", progress=False,
                            loader=_no_loading)
    assert st["cache_hit"] and st["subset_of"] == st["key"] and st["truncated"] == 0
    for p in ("mean", "last"):
        np.testing.assert_array_equal(sub[p], big[p][:, [7, 2, 2, 0]])
    # A shallower request takes the prefix; other settings or unknown texts are computed afresh.
    shallow, st = extract_texts(tiny_model, some, text_fingerprint="some", storage="float32", depth=1,
                                progress=False, loader=_no_loading)
    np.testing.assert_array_equal(shallow["mean"], big["mean"][:2, [7, 2, 2, 0]])
    _, st = extract_texts(tiny_model, some, text_fingerprint="some", storage="float32", max_length=4, progress=False)
    assert not st["cache_hit"]
    _, st = extract_texts(tiny_model, some[:2] + ["a text never seen"], text_fingerprint="new", storage="float32",
                          progress=False)
    assert not st["cache_hit"]


def test_truncation_of_a_subset_is_counted_from_the_larger_entry(tiny_model, cache_dir):
    extract_texts(tiny_model, TEXTS, text_fingerprint="all", max_length=4, progress=False)
    _, st = extract_texts(tiny_model, [TEXTS[2], TEXTS[1]], text_fingerprint="two", max_length=4, progress=False,
                          loader=_no_loading)
    assert st["subset_of"] and st["truncated"] == 1 and st["tokens"] <= 4 + 4


def test_entries_without_text_hashes_get_them_on_the_next_hit(tiny_model, cache_dir):
    _, st = extract_texts(tiny_model, TEXTS, text_fingerprint="old", progress=False)
    entry = cache_mod.CacheEntry(cache_mod.entries_root(cache_dir) / st["key"])
    (entry.path / "text_hashes.npy").unlink()  # as an entry written before hashes were kept
    with pytest.raises(AssertionError, match="must not be loaded"):
        extract_texts(tiny_model, TEXTS[:3], text_fingerprint="part", progress=False, loader=_no_loading)
    extract_texts(tiny_model, TEXTS, text_fingerprint="old", progress=False, loader=_no_loading)  # exact hit
    np.testing.assert_array_equal(entry.read_text_hashes(), cache_mod.text_hashes(TEXTS))
    _, st = extract_texts(tiny_model, TEXTS[:3], text_fingerprint="part", progress=False, loader=_no_loading)
    assert st["subset_of"] == entry.key


def test_second_run_reads_cache_without_loading_model(tiny_model, cache_dir):
    first, _ = extract_texts(tiny_model, TEXTS, text_fingerprint="c", progress=False)

    def loader():
        raise AssertionError("the model must not be loaded on a cache hit")

    second, st = extract_texts(tiny_model, TEXTS, text_fingerprint="c", progress=False, loader=loader)
    assert st["cache_hit"]
    assert isinstance(second["mean"], np.memmap)
    np.testing.assert_array_equal(first["mean"], second["mean"])
    # Anything that changes the numbers changes the key.
    _, st_len = extract_texts(tiny_model, TEXTS, text_fingerprint="c", max_length=3, progress=False)
    assert not st_len["cache_hit"] and st_len["key"] != st["key"]


class _Boom(Exception):
    pass


def _interrupt_after(monkeypatch, n_chunks):
    real = cache_mod.CacheEntry.write_chunk
    written = []

    def flaky(self, pooling, index, array, info):
        if len(written) >= n_chunks:
            raise _Boom("simulated interruption")
        real(self, pooling, index, array, info)
        written.append(index)

    monkeypatch.setattr(cache_mod.CacheEntry, "write_chunk", flaky)
    return written


def test_resume_after_interruption(tiny_model, cache_dir, monkeypatch, tmp_path):
    ref, _ = extract_texts(tiny_model, TEXTS, text_fingerprint="r", poolings=["mean"], storage="float32",
                           chunk_texts=3, progress=False, cache_dir=tmp_path / "other")
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(_Boom):
        extract_texts(tiny_model, TEXTS, text_fingerprint="r", poolings=["mean"], storage="float32",
                      chunk_texts=3, progress=False)
    monkeypatch.undo()
    monkeypatch.setenv("LAYERFUSE_CACHE", str(cache_dir))
    out, st = extract_texts(tiny_model, TEXTS, text_fingerprint="r", poolings=["mean"], storage="float32",
                            chunk_texts=3, progress=False)
    assert st["resumed_chunks"] == 2
    assert st["computed_texts"] == len(TEXTS) - 6
    np.testing.assert_allclose(out["mean"], ref["mean"], atol=1e-6)


def test_corrupt_chunk_is_detected_and_recomputed(tiny_model, cache_dir, monkeypatch, tmp_path):
    ref, _ = extract_texts(tiny_model, TEXTS, text_fingerprint="x", poolings=["mean"], storage="float32",
                           chunk_texts=3, progress=False, cache_dir=tmp_path / "other")
    _interrupt_after(monkeypatch, 3)
    with pytest.raises(_Boom):
        extract_texts(tiny_model, TEXTS, text_fingerprint="x", poolings=["mean"], storage="float32",
                      chunk_texts=3, progress=False)
    monkeypatch.undo()
    monkeypatch.setenv("LAYERFUSE_CACHE", str(cache_dir))
    chunk = next(cache_dir.glob("embeddings/*/mean/chunk-00001.npy"))
    data = bytearray(chunk.read_bytes())
    data[-8:] = b"\xff" * 8  # flip the last values: same size, wrong numbers
    chunk.write_bytes(bytes(data))
    out, st = extract_texts(tiny_model, TEXTS, text_fingerprint="x", poolings=["mean"], storage="float32",
                            chunk_texts=3, progress=False)
    assert st["resumed_chunks"] == 2  # chunks 0 and 2 kept, chunk 1 recomputed
    assert st["computed_texts"] == len(TEXTS) - 6
    np.testing.assert_allclose(out["mean"], ref["mean"], atol=1e-6)
    # A truncated final file is caught on read too, and recomputed rather than served.
    final = next(cache_dir.glob("embeddings/*/mean/final.npy"))
    del out
    final.write_bytes(final.read_bytes()[:-100])
    again, st2 = extract_texts(tiny_model, TEXTS, text_fingerprint="x", poolings=["mean"], storage="float32",
                               chunk_texts=3, progress=False)
    assert not st2["cache_hit"]
    np.testing.assert_allclose(again["mean"], ref["mean"], atol=1e-6)


def test_truncation_is_counted(tiny_model, cache_dir):
    arrs, st = extract_texts(tiny_model, TEXTS, text_fingerprint="tr", max_length=3, poolings=["mean"],
                             progress=False)
    n_long = sum(len(t.split()) > 3 for t in TEXTS)
    assert st["truncated"] == n_long > 0


def test_bad_depth_is_a_clear_error(tiny_model, cache_dir):
    with pytest.raises(LayerfuseError, match="layers 0..3"):
        extract_texts(tiny_model, TEXTS, text_fingerprint="bad", depth=9, progress=False)


def test_in_memory_embedding_matches_cached_extraction(tiny_model, cache_dir):
    from layerfuse.embed.forward import embed_texts

    cached, _ = extract_texts(tiny_model, TEXTS, text_fingerprint="m", poolings=["mean", "last"], progress=False)
    bb = load_backbone(tiny_model, progress=False)
    mem = embed_texts(bb, TEXTS, ["mean", "last"], depth=3, round_to="float16")
    for p in ("mean", "last"):
        assert mem[p].dtype == np.float32
        np.testing.assert_array_equal(mem[p], np.asarray(cached[p], dtype=np.float32))


def test_bf16_counts_as_fast_only_where_it_measures_faster(monkeypatch):
    from layerfuse.embed import device as extraction

    monkeypatch.setattr(extraction, "_cpu_flags", lambda: {"avx2", "fma"})
    monkeypatch.setattr(extraction, "bf16_speedup", lambda root=None: 6.0)
    assert not extraction.fast_bf16("cpu") and extraction.bf16_instructions() == "none"
    monkeypatch.setattr(extraction, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert extraction.fast_bf16("cpu") and extraction.bf16_instructions() == "AVX-512 BF16, no AMX"
    # AVX-512 BF16 without AMX: advertised, but slower than float32 on the machine that found it.
    monkeypatch.setattr(extraction, "bf16_speedup", lambda root=None: 0.6)
    assert not extraction.fast_bf16("cpu")
    monkeypatch.setattr(extraction, "_cpu_flags", lambda: {"amx_bf16", "amx_tile", "avx512_bf16"})
    monkeypatch.setattr(extraction, "bf16_speedup", lambda root=None: 5.0)
    assert extraction.fast_bf16("cpu") and extraction.bf16_instructions() == "AMX"


def test_prediction_batch_cost_follows_the_cpu_and_dtype(monkeypatch, tiny_model):
    from layerfuse.config import PREDICT_BATCH_COST, PREDICT_BATCH_COST_AMX_BF16, PREDICT_BATCH_COST_PACKED_AMX_BF16
    from layerfuse.embed import device, forward

    monkeypatch.setattr(device, "_cpu_flags", lambda: {"amx_bf16", "amx_tile", "avx512_bf16"})
    assert device.predict_batch_cost("cpu", "bfloat16") == PREDICT_BATCH_COST_AMX_BF16
    assert device.predict_batch_cost("cpu", "bfloat16", packed=True) == PREDICT_BATCH_COST_PACKED_AMX_BF16
    assert device.predict_batch_cost("cpu", "float32", packed=True) == PREDICT_BATCH_COST  # measured in bf16 only
    assert device.predict_batch_cost("cpu", "float32") == PREDICT_BATCH_COST  # AMX does not run fp32
    assert device.predict_batch_cost("cuda", "bfloat16") == PREDICT_BATCH_COST
    monkeypatch.setattr(device, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert device.predict_batch_cost("cpu", "bfloat16") == PREDICT_BATCH_COST
    # embed_texts asks for the cost of its backbone's device and dtype when none is given
    seen = []
    real = forward.embed_sorted
    monkeypatch.setattr(forward, "embed_sorted", lambda *a, **kw: seen.append(kw["batch_cost"]) or real(*a, **kw))
    monkeypatch.setattr(device, "_cpu_flags", lambda: {"amx_bf16", "amx_tile", "avx512_bf16"})
    padded16 = load_backbone(tiny_model, dtype="bfloat16", progress=False)
    padded16.extra["packed"] = False
    forward.embed_texts(padded16, TEXTS[:3], ["mean"], depth=1)
    forward.embed_texts(load_backbone(tiny_model, dtype="bfloat16", progress=False), TEXTS[:3], ["mean"], depth=1)
    forward.embed_texts(load_backbone(tiny_model, progress=False), TEXTS[:3], ["mean"], depth=1)
    assert seen == [PREDICT_BATCH_COST_AMX_BF16, PREDICT_BATCH_COST_PACKED_AMX_BF16, PREDICT_BATCH_COST]


def test_bf16_speedup_is_a_measured_ratio():
    from layerfuse.embed import device as extraction

    r = extraction.bf16_speedup()
    assert 0.01 < r < 100 and extraction.bf16_speedup() == r  # measured once per process
    assert {"flags"}.isdisjoint(extraction._cpu_flags())


def test_auto_dtype_follows_the_hardware(monkeypatch):
    from layerfuse.embed import device as extraction

    monkeypatch.setattr(extraction, "dtype_decision", lambda device, root=None: ("bfloat16", "test"))
    assert extraction.resolve_dtype("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(extraction, "dtype_decision", lambda device, root=None: ("float32", "test"))
    assert extraction.resolve_dtype("auto", "cpu") == "float32"
    assert extraction.resolve_dtype("bfloat16", "cpu") == "bfloat16"
    with pytest.raises(LayerfuseError, match="unknown `dtype` 'fp8'"):
        extraction.resolve_dtype("fp8", "cpu")


def test_counting_truncations_does_not_warn_about_long_texts(tiny_model):
    """Texts longer than the model takes are cut after counting; the tokenizer's own warning about
    them ("Token indices sequence length is longer ...") would only alarm users."""
    import logging

    from transformers.utils import logging as hf_logging

    from layerfuse.embed.forward import tokenize

    backbone = load_backbone(tiny_model)
    backbone.tokenizer.model_max_length = 4
    seen = []

    class Catch(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Catch(level=logging.WARNING)
    old = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    hf_logging.get_logger().addHandler(handler)
    try:
        enc, truncated = tokenize(backbone, ["the movie was very good fun"], 4)
    finally:
        hf_logging.get_logger().removeHandler(handler)
        hf_logging.set_verbosity(old)
    assert truncated == 1 and len(enc[0]) == 4
    assert not [m for m in seen if "longer than the specified maximum" in m]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_atomic_folder_replaces_the_target_with_the_usual_mode(tmp_path):
    target = tmp_path / "clf"
    target.mkdir()
    (target / "old").write_text("x")
    with cache_mod.atomic_folder(target) as tmp:
        (tmp / "new").write_text("y")
    assert [p.name for p in target.iterdir()] == ["new"]
    umask = os.umask(0)
    os.umask(umask)
    # What mkdir would give (saved classifiers, unpacked models, grid rows), not mkdtemp's 0700.
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask
    with pytest.raises(RuntimeError), cache_mod.atomic_folder(target) as tmp:
        (tmp / "half").write_text("")
        raise RuntimeError("interrupted")
    assert [p.name for p in target.iterdir()] == ["new"] and [p.name for p in tmp_path.iterdir()] == ["clf"]


def test_values_beyond_float16_are_stored_in_float32_not_an_error(tmp_path):
    """EmbeddingGemma's pooled values outgrow float16 on some long R52 texts: float16 storage must
    keep such a pooling in float32 (exact values, no inf), not stop the extraction."""
    from conftest import build_tiny_model
    from safetensors.torch import load_file, save_file

    folder = build_tiny_model(tmp_path / "huge")
    model = str(folder)
    weights = load_file(folder / "model.safetensors")
    vocab = load_backbone(model, progress=False).tokenizer.get_vocab()
    name = next(k for k in weights if k.endswith("embed_tokens.weight"))
    weights[name][vocab["awful"]] *= 1e7  # layer 0 (the token embeddings) of a text with "awful" is huge
    save_file(weights, folder / "model.safetensors")
    wide, _ = extract_texts(model, TEXTS, text_fingerprint="w", poolings=["mean", "last"], storage="float32",
                            chunk_texts=3, progress=False, cache_dir=tmp_path / "c32")
    half, st = extract_texts(model, TEXTS, text_fingerprint="w", poolings=["mean", "last"], storage="float16",
                             chunk_texts=3, progress=False, cache_dir=tmp_path / "c16")
    assert np.abs(wide["mean"][0]).max() > 65504  # the case is real: float16 would hold inf
    for p in ("mean", "last"):
        assert half[p].dtype == np.float32 and np.isfinite(half[p]).all()
        # Chunks that fit were stored in float16 and widened: float16 rounding, nothing more.
        np.testing.assert_allclose(half[p], wide[p], rtol=1e-3, atol=1e-3)
    # Read back from the cache: the same float32 array.
    again, st2 = extract_texts(model, TEXTS, text_fingerprint="w", poolings=["mean", "last"], storage="float16",
                               chunk_texts=3, progress=False, cache_dir=tmp_path / "c16")
    assert st2["cache_hit"] and again["mean"].dtype == np.float32
    np.testing.assert_array_equal(again["mean"], half["mean"])


def test_batch_tokens_auto_takes_the_budget_of_the_dtype(tiny_model, tmp_path, monkeypatch):
    from layerfuse.config import BATCH_TOKENS_BY_DTYPE
    from layerfuse.embed import device
    from layerfuse.embed.extract import extract

    csv = tmp_path / "train.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{'ab'[i % 2]}\n" for i, t in enumerate(TEXTS * 4)))
    for dtype in ("float32", "bfloat16"):
        emb = extract(tiny_model, train=csv, poolings="mean", dtype=dtype, batch_tokens="auto",
                      cache_dir=tmp_path / "c", progress=False)
        assert emb.stats["batch_tokens"] == BATCH_TOKENS_BY_DTYPE[dtype]
    assert BATCH_TOKENS_BY_DTYPE["float32"] != BATCH_TOKENS_BY_DTYPE["bfloat16"]
    monkeypatch.setattr(device, "_cpu_flags", lambda: set())  # auto dtype → float32, then auto budget
    emb = extract(tiny_model, train=csv, poolings="mean", batch_tokens="auto", cache_dir=tmp_path / "c",
                  progress=False)
    assert (emb.stats["dtype"], emb.stats["batch_tokens"]) == ("float32", BATCH_TOKENS_BY_DTYPE["float32"])
    for bad in (0, "lots", 2.5, True):
        with pytest.raises(LayerfuseError, match="batch_tokens"):
            extract(tiny_model, train=csv, batch_tokens=bad, cache_dir=tmp_path / "c", progress=False)
