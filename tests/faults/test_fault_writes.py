"""A full disk or a read-only cache root ends in one line and exit 2, with nothing half-written
left behind; what was finished before is kept and used by the next run (issue 19, item 4)."""

from __future__ import annotations

import numpy as np
from faultkit import (  # noqa: F401 -- pytest fixtures
    model_copy,
    one_line_error,
    run_cli,
    small_chunks,
    small_fs,
    temporaries,
    texts_csv,
    tiny_gguf,
    tiny_gguf_source,
    write_texts_csv,
)

from layerfuse.cache.entries import CacheEntry


def _chunks_all_verify(root):
    """Every chunk or final array left in the cache matches its checksum."""
    for e in (root / "embeddings").glob("[!.]*"):
        ce = CacheEntry(e)
        checked, damaged = ce.verify_all()
        assert checked and not damaged, f"damaged {damaged} left behind"
        assert ce.read_meta() is not None


def test_disk_full_while_writing_chunks(capsys, small_fs, tiny_model, tmp_path, monkeypatch):
    small_chunks(monkeypatch, 64)
    data = write_texts_csv(tmp_path / "big.csv", 600)
    root = small_fs("256k")
    argv = ["extract", "--models", tiny_model, "--train", data, "--storage", "float32", "--dtype", "float32",
            "--no-progress", "--cache-dir", root]
    code, _, err = run_cli(capsys, *argv)
    one_line_error(code, err, f"cache root {root}", "no space left on device", "while writing", "--cache-dir")
    assert not temporaries(root), "temporary files left on the full disk"
    _chunks_all_verify(root)
    per_pooling = [{p.stem for p in root.glob(f"embeddings/*/{pooling}/chunk-*.json")} for pooling in ("mean", "last")]
    done = per_pooling[0] & per_pooling[1]  # a chunk is whole when every pooling has it
    assert done, "no whole chunk was kept from before the disk filled up"
    from faultkit import CAN_MOUNT

    if CAN_MOUNT:  # free space (a bigger tmpfs): the rerun resumes after the kept chunks
        import subprocess

        subprocess.run(["mount", "-o", "remount,size=8m", str(root)], check=True)
        code, _, err = run_cli(capsys, *[a for a in argv if a != "--no-progress"])
        assert code == 0, err
        assert f"resuming, {len(done)} of" in err, err
        assert not temporaries(root)


def test_disk_full_while_dequantising(capsys, small_fs, tiny_gguf, texts_csv):
    gguf, _ = tiny_gguf
    root = small_fs("64k")  # the tiny model's weights alone are larger
    code, _, err = run_cli(capsys, "extract", "--models", gguf, "--train", texts_csv, "--no-progress",
                           "--cache-dir", root)
    one_line_error(code, err, f"cache root {root}", "no space left on device", "models")
    assert not temporaries(root), "a half-written model copy was left behind"
    assert not [p for p in (root / "models").glob("*")] if (root / "models").exists() else True


def test_read_only_cache_root(capsys, small_fs, tiny_model, texts_csv):
    root = small_fs("1m", readonly=True)
    code, _, err = run_cli(capsys, "extract", "--models", tiny_model, "--train", texts_csv, "--no-progress",
                           "--cache-dir", root)
    one_line_error(code, err, f"cache root {root}", "read-only file system")


def test_read_only_cache_root_still_serves_what_it_holds(capsys, small_fs, tiny_gguf, texts_csv, tmp_path):
    """A cache filled elsewhere and mounted read-only is read, not written."""
    import subprocess

    gguf, calls = tiny_gguf
    root = small_fs("4m")
    argv = ["extract", "--models", gguf, "--train", texts_csv, "--no-progress", "--dtype", "float32", "--json"]
    code, out, err = run_cli(capsys, *argv, "--cache-dir", root)
    assert code == 0, err
    from faultkit import CAN_MOUNT

    if not CAN_MOUNT:  # the fallback cannot turn a folder read-only after the fact
        return
    subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
    code, out2, err = run_cli(capsys, *argv, "--cache-dir", root)
    assert code == 0, err
    assert len(calls) == 1
    model_copy(root)
    import json

    assert all(s["from_cache"] for s in json.loads(out2)["splits"].values())
    assert np.asarray(json.loads(out2)["splits"]["train"]["shape"]).size == 3


def test_an_unwrapped_write_error_still_ends_in_one_line(capsys, monkeypatch):
    """The CLI's last line of defence: an actionable OSError that no library code re-worded
    (here raised by a patched writer) is one line, exit 2; any other OSError is not hidden."""
    import errno

    import pytest

    from layerfuse.data import builtin

    def read_only(*a, **kw):
        raise OSError(errno.EROFS, "Read-only file system", "/somewhere/out/table.md")

    monkeypatch.setattr(builtin, "list_builtin", read_only)
    code, _, err = run_cli(capsys, "datasets")
    one_line_error(code, err, "/somewhere/out/table.md", "Read-only file system")

    def io_error(*a, **kw):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(builtin, "list_builtin", io_error)
    with pytest.raises(OSError):
        run_cli(capsys, "datasets")
