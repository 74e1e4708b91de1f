"""Damaged artifacts are detected and rebuilt (cache) or refused in one line (saved classifiers),
never served (issue 19, items 2, 3 and 4: final.json as ``[]``, an empty text_hashes.npy)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from faultkit import model_copy, one_line_error, run_cli, temporaries, texts_csv, tiny_gguf, tiny_gguf_source, xor_bytes  # noqa: F401 -- pytest fixtures

from layerfuse.embed import backbones
from layerfuse.embed.extract import extract


def _weights(bb):
    return {k: v.detach().clone() for k, v in bb.model.state_dict().items()}


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["rewritten", "mtime-kept"])
def test_damaged_model_copy_is_rebuilt_not_served(tiny_gguf, cache_dir, capfd, keep_mtime):
    gguf, calls = tiny_gguf
    first = _weights(backbones.load_backbone(str(gguf), root=cache_dir, progress=False))
    copy = model_copy(cache_dir)
    st = copy / "model.safetensors"
    xor_bytes(st, st.stat().st_size // 2, 4096, keep_mtime=keep_mtime)
    capfd.readouterr()
    again = _weights(backbones.load_backbone(str(gguf), root=cache_dir, progress=False))
    err = capfd.readouterr().err
    assert "is damaged" in err and "model.safetensors" in err and "rebuilding" in err, err
    assert len(calls) == 2, "the damaged copy was not rebuilt"
    assert all(np.array_equal(first[k].numpy(), again[k].numpy()) for k in first), "damaged weights were served"
    assert backbones.check_model_copy(model_copy(cache_dir), full=True) is None
    assert not temporaries(cache_dir)


def test_intact_model_copy_is_loaded_without_rebuilding(tiny_gguf, cache_dir):
    gguf, calls = tiny_gguf
    backbones.load_backbone(str(gguf), root=cache_dir, progress=False)
    backbones.load_backbone(str(gguf), root=cache_dir, progress=False)
    assert len(calls) == 1


def test_sampled_check_catches_a_zeroed_run_in_a_large_file_with_its_mtime_kept(tmp_path, monkeypatch):
    """Large files are checked on load by a sample (every 2 MiB); a zeroed 4 MB run is caught."""
    import os

    monkeypatch.setattr(backbones, "FULL_CHECK_BYTES", 1 << 20)  # make an 8 MiB file "large"
    d = tmp_path / "copy"
    d.mkdir()
    f = d / "model.safetensors"
    f.write_bytes(os.urandom(8 << 20))
    backbones.record_checksums(d)
    st = f.stat()
    with open(f, "r+b") as h:
        h.seek(3_000_001)
        h.write(bytes(4 << 20 - 1))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "sampled sha256" in backbones.check_model_copy(d)
    assert "sha256" in backbones.check_model_copy(d, full=True)


def test_cache_verify_finds_one_flipped_byte_and_removes_the_copy(tiny_gguf, cache_dir, capsys):
    gguf, calls = tiny_gguf
    backbones.load_backbone(str(gguf), root=cache_dir, progress=False)
    code, out, _ = run_cli(capsys, "cache", "--verify", "--cache-dir", cache_dir)
    assert code == 0 and "all intact" in out, out
    copy = model_copy(cache_dir)
    xor_bytes(copy / "model.safetensors", 1000, 1, keep_mtime=True)
    code, out, _ = run_cli(capsys, "cache", "--verify", "--cache-dir", cache_dir)
    assert code == 1 and "damaged" in out and "model.safetensors" in out, out
    assert not copy.exists()
    backbones.load_backbone(str(gguf), root=cache_dir, progress=False)
    assert len(calls) == 2


def test_predict_never_uses_a_damaged_model_copy(tiny_gguf, cache_dir, tmp_path, capsys, monkeypatch):
    """The issue's case: a zeroed run in the dequantised copy shifted predict's probabilities."""
    from faultkit import write_texts_csv

    from layerfuse.data.loading import load_dataset
    from layerfuse.estimator import LayerFusionClassifier

    gguf, calls = tiny_gguf
    ds = load_dataset(train=write_texts_csv(tmp_path / "t.csv", 60, seed=2))
    sp = ds.splits["train"]
    clf = LayerFusionClassifier(models=str(gguf), layers="all", head="logreg", folds=2, windows=1, max_epochs=2,
                                proj_dim=16, progress=False)
    clf.fit(sp.texts, [ds.classes[i] for i in sp.labels])
    clf.save(tmp_path / "clf")
    texts = tmp_path / "in.txt"
    texts.write_text("the movie was good\nthe plot was awful\na lovely story\n")
    argv = ["predict", tmp_path / "clf", "--input", texts, "--json", "--cache-dir", cache_dir]
    code, before, err = run_cli(capsys, *argv)
    assert code == 0, err
    st = model_copy(cache_dir) / "model.safetensors"
    with open(st, "r+b") as f:  # zero a run in the middle of the weights
        f.seek(st.stat().st_size // 3)
        f.write(bytes(st.stat().st_size // 3))
    n = len(calls)
    with monkeypatch.context() as mp:  # the fault is real: without the check, predict answers differently
        mp.setattr(backbones, "check_model_copy", lambda *a, **k: None)
        code, unchecked, err = run_cli(capsys, *argv)
        assert code == 0 and unchecked != before and len(calls) == n
    code, after, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "is damaged" in err and len(calls) == n + 1
    assert after == before, "predictions changed: the damaged copy was used"


@pytest.fixture()
def saved_classifier(tmp_path, tiny_model, cache_dir):
    from faultkit import write_texts_csv

    from layerfuse.data.loading import load_dataset
    from layerfuse.estimator import LayerFusionClassifier

    ds = load_dataset(train=write_texts_csv(tmp_path / "t.csv", 60, seed=1))
    sp = ds.splits["train"]
    clf = LayerFusionClassifier(models=tiny_model, layers="best", head="mlp", folds=2, windows=1, max_epochs=2,
                                proj_dim=256, progress=False)
    clf.fit(sp.texts, [ds.classes[i] for i in sp.labels])
    clf.save(tmp_path / "clf")
    texts = tmp_path / "in.txt"
    texts.write_text("the movie was good\nthe plot was awful\n")
    return tmp_path / "clf", texts


def test_damaged_classifier_weights_are_refused_naming_the_file(saved_classifier, capsys):
    clf, texts = saved_classifier
    code, out, err = run_cli(capsys, "predict", clf, "--input", texts)
    assert code == 0, err
    w = clf / "net.safetensors"
    assert w.stat().st_size > 3 * 4096
    xor_bytes(w, w.stat().st_size // 2, 4096, keep_mtime=True)
    code, out, err = run_cli(capsys, "predict", clf, "--input", texts)
    one_line_error(code, err, str(w), "damaged", "checksum")
    assert out == "", "labels were printed from damaged weights"


def test_damaged_classifier_config_is_refused_too(saved_classifier, capsys):
    clf, texts = saved_classifier
    cfg = clf / "net.json"
    cfg.write_text(cfg.read_text().replace('"val_acc"', '"val_acc" ', 1))
    code, _, err = run_cli(capsys, "predict", clf, "--input", texts)
    one_line_error(code, err, str(cfg), "damaged")


def _extract(model, csv, cache_dir):
    return extract(model, train=csv, poolings="mean", cache_dir=cache_dir, splits=["train"], progress=False,
                   dtype="float32", device="cpu")


def test_final_json_replaced_by_a_list_is_recomputed(tiny_model, texts_csv, cache_dir):
    first = np.array(_extract(tiny_model, texts_csv, cache_dir).array("train", "mean"))
    (js,) = (cache_dir / "embeddings").glob("*/mean/final.json")
    js.write_text("[]")
    emb = _extract(tiny_model, texts_csv, cache_dir)
    assert emb.stats["computed_texts"] > 0, "a final array without a valid record was served"
    np.testing.assert_array_equal(np.array(emb.array("train", "mean")), first)
    assert json.loads(js.read_text())["sha256"]


def test_damaged_final_array_is_recomputed(tiny_model, texts_csv, cache_dir):
    first = np.array(_extract(tiny_model, texts_csv, cache_dir).array("train", "mean"))
    (npy,) = (cache_dir / "embeddings").glob("*/mean/final.npy")
    xor_bytes(npy, npy.stat().st_size // 2, 64, keep_mtime=True)
    emb = _extract(tiny_model, texts_csv, cache_dir)
    assert emb.stats["computed_texts"] > 0
    np.testing.assert_array_equal(np.array(emb.array("train", "mean")), first)


@pytest.mark.parametrize("damage", ["empty", "truncated", "list-json"])
def test_damaged_small_entry_files_are_rebuilt_on_every_rerun(tiny_model, texts_csv, cache_dir, damage):
    first = np.array(_extract(tiny_model, texts_csv, cache_dir).array("train", "mean"))
    (entry,) = (cache_dir / "embeddings").glob("[!.]*")
    if damage == "empty":
        (entry / "text_hashes.npy").write_bytes(b"")
    elif damage == "truncated":
        data = (entry / "text_hashes.npy").read_bytes()
        (entry / "text_hashes.npy").write_bytes(data[: len(data) // 2])
    else:
        (entry / "meta.json").write_text("[]")
    for _ in range(2):
        emb = _extract(tiny_model, texts_csv, cache_dir)
        np.testing.assert_array_equal(np.array(emb.array("train", "mean")), first)
    h = np.load(entry / "text_hashes.npy")
    assert h.dtype == np.dtype("S16") and len(h) == first.shape[1]


def test_damaged_grid_row_is_retrained(tmp_path, capsys):
    from layerfuse.model.training import fit_seeds
    from layerfuse.run.checkpoints import load_or_fit

    rng = np.random.default_rng(0)
    y, yt = rng.integers(0, 2, 80), rng.integers(0, 2, 20)
    x = [(rng.normal(size=(80, 16)) + y[:, None]).astype(np.float32)]
    xt = [(rng.normal(size=(20, 16)) + yt[:, None]).astype(np.float32)]
    calls = []

    def fit():
        calls.append(1)
        return fit_seeds(x, y, xt, yt, seeds=[0], n_classes=2, head="mlp", proj_dim=64, max_epochs=2)

    row = tmp_path / "grid" / "row"
    first, loaded = load_or_fit(row, fit, {})
    assert not loaded and len(calls) == 1
    _, loaded = load_or_fit(row, fit, {})
    assert loaded and len(calls) == 1
    w = row / "seed-0" / "net.safetensors"
    xor_bytes(w, w.stat().st_size // 2, 4096, keep_mtime=True)
    code, out, _ = run_cli(capsys, "cache", "--verify", "--cache-dir", tmp_path)
    assert code == 1 and "net.safetensors" in out and not row.exists(), out
    load_or_fit(row, fit, {})
    xor_bytes(w, w.stat().st_size // 2, 4096, keep_mtime=True)
    notes = []
    again, loaded = load_or_fit(row, fit, {}, log=notes.append)
    assert not loaded and len(calls) == 3, "a damaged row was read back"
    assert any("damaged" in n and "net.safetensors" in n for n in notes)
    np.testing.assert_array_equal(again.models[0].predict_proba(xt), first.models[0].predict_proba(xt))
