"""Bad input gives one clear line and exit code 2, never a traceback or a quiet wrong run
(issue 19, items 4 and 7)."""

from __future__ import annotations

import time

import pytest
from faultkit import (
    one_line_error,
    run_cli,
    texts_csv,  # noqa: F401 -- pytest fixtures
)


def test_limit_zero_is_refused_not_read_as_everything(capsys, texts_csv, cache_dir):
    code, _, err = run_cli(capsys, "extract", "--models", "minilm-l6", "--train", texts_csv, "--limit", "0")
    one_line_error(code, err, "--limit", ">= 1", "got 0")
    assert not (cache_dir / "embeddings").exists()


def test_missing_gguf_path_says_the_file_is_missing(capsys, tmp_path):
    gone = tmp_path / "models" / "nope.gguf"
    code, _, err = run_cli(capsys, "extract", "--models", gone, "--dataset", "sst2", "--limit", "10")
    line = one_line_error(code, err, str(gone), "does not exist")
    assert "unknown model" not in line
    code, _, err = run_cli(capsys, "extract", "--models", "weights/nope.gguf", "--dataset", "sst2")
    one_line_error(code, err, "nope.gguf", "does not exist")


def hf_cache(monkeypatch, folder) -> None:
    """Point the Hugging Face cache at ``folder`` (huggingface_hub reads $HF_HUB_CACHE at import,
    so its constant is patched too)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(folder))


def test_hub_id_offline_fails_fast_with_the_offline_message(capsys, tmp_path, monkeypatch):
    import socket

    tried = []

    def no_network(address, *a, **kw):
        tried.append(address)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    hf_cache(monkeypatch, tmp_path / "hf")  # nothing cached locally
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    t0 = time.perf_counter()
    code, _, err = run_cli(capsys, "extract", "--models", "someorg/some-model", "--dataset", "sst2", "--limit", "10",
                           "--cache-dir", tmp_path / "c")
    seconds = time.perf_counter() - t0
    one_line_error(code, err, "someorg/some-model", "offline")
    assert tried, "the network was not checked"
    assert seconds < 10, f"took {seconds:.1f} s to notice there is no network"


def test_tsv_with_commas_says_the_delimiter_looks_wrong(capsys, tmp_path):
    f = tmp_path / "reviews.tsv"
    f.write_text("text,label\na fine film,pos\na dull film,neg\n")
    code, _, err = run_cli(capsys, "extract", "--models", "minilm-l6", "--train", f)
    one_line_error(code, err, "reviews.tsv", "delimiter looks wrong", ".csv")
    g = tmp_path / "reviews.csv"
    g.write_text("text\tlabel\na fine film\tpos\na dull film\tneg\n")
    code, _, err = run_cli(capsys, "extract", "--models", "minilm-l6", "--train", g)
    one_line_error(code, err, "reviews.csv", "delimiter looks wrong", ".tsv")


def test_txt_hint_names_no_flag_that_extract_lacks(capsys, tmp_path):
    f = tmp_path / "reviews.txt"
    f.write_text("text,label\na fine film,pos\n")
    code, _, err = run_cli(capsys, "extract", "--models", "minilm-l6", "--train", f)
    line = one_line_error(code, err, "reviews.txt", ".csv")
    assert "--format" not in line


def test_cache_dir_that_is_a_file_is_one_line(capsys, tmp_path, texts_csv):
    f = tmp_path / "not-a-folder"
    f.write_text("x")
    code, _, err = run_cli(capsys, "extract", "--models", "minilm-l6", "--train", texts_csv, "--cache-dir", f)
    one_line_error(code, err, str(f), "is a file, not a folder")
    assert f.read_text() == "x"
    code, _, err = run_cli(capsys, "cache", "--cache-dir", f)
    one_line_error(code, err, "is a file")


@pytest.mark.parametrize("yaml_text, needles", [
    ("extraction:\n  max_length: long\n", ["extraction.max_length", "'long'"]),
    ("extraction:\n  batch_tokens: lots\n", ["extraction.batch_tokens", "or auto", "'lots'"]),
    ("data:\n  dataset: sst2\n  limit: lots\n", ["data.limit", "'lots'"]),
    ("fusion:\n  proj_dim: big\n", ["fusion.proj_dim", "'big'"]),
    ("fusion:\n  lr: fast\n", ["fusion.lr", "'fast'"]),
    ("data:\n  limit: 0\n", ["data.limit", "0"]),
])
def test_bad_yaml_field_fails_before_extraction_naming_file_and_field(capsys, tmp_path, yaml_text, needles):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml_text)
    cache = tmp_path / "c"
    code, _, err = run_cli(capsys, "run", cfg, "--cache-dir", cache, "--out", tmp_path / "out")
    one_line_error(code, err, str(cfg), *needles)
    assert not cache.exists(), "something was extracted or cached before the bad field was reported"


def test_binary_file_given_as_yaml_is_one_line(capsys, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe" + bytes(range(256)))
    code, _, err = run_cli(capsys, "run", cfg, "--cache-dir", tmp_path / "c")
    one_line_error(code, err, str(cfg), "not UTF-8 text")
    cfg.write_bytes(b"data:\n  dataset: sst2\x00\x00\n")
    code, _, err = run_cli(capsys, "run", cfg, "--cache-dir", tmp_path / "c")
    one_line_error(code, err, str(cfg), "NUL")


def test_hub_id_with_hf_hub_offline_set_does_not_touch_the_network(capsys, tmp_path, monkeypatch):
    import socket

    def forbidden(*a, **kw):
        raise AssertionError("connected although HF_HUB_OFFLINE=1")

    monkeypatch.setattr(socket, "create_connection", forbidden)
    hf_cache(monkeypatch, tmp_path / "hf")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run_cli(capsys, "extract", "--models", "someorg/some-model", "--dataset", "sst2", "--limit", "10",
                           "--cache-dir", tmp_path / "c")
    one_line_error(code, err, "someorg/some-model", "offline")


def test_hub_id_in_the_local_hf_cache_loads_without_the_network(capsys, tmp_path, monkeypatch, tiny_model,
                                                               texts_csv):
    import shutil
    import socket

    snap = tmp_path / "hf" / "models--someorg--tiny" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_model, snap)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0123abcd")

    def forbidden(*a, **kw):
        raise AssertionError("connected for a model that is in the local cache")

    monkeypatch.setattr(socket, "create_connection", forbidden)
    hf_cache(monkeypatch, tmp_path / "hf")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    code, out, err = run_cli(capsys, "extract", "--models", "someorg/tiny", "--train", texts_csv, "--no-progress",
                             "--dtype", "float32", "--cache-dir", tmp_path / "c")
    assert code == 0, err
    assert "someorg/tiny" in out
