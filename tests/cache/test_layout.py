"""The cache's one home (:mod:`layerfuse.cache`): keys, roots and atomic writes.

The fault-injection suite (tests/faults) covers damage, disk-full, concurrency and leftovers;
these are the plain unit checks of the building blocks it relies on.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from layerfuse.cache.atomic import atomic_folder, atomic_save_npy, atomic_write_bytes, sampled_sha256, sha256_file
from layerfuse.cache.entries import subset_rows, text_hashes
from layerfuse.cache.layout import cache_root, entries_root, locks_root, make_key, models_root
from layerfuse.errors import LayerfuseError


def test_make_key_depends_on_every_field_not_on_their_order():
    a = make_key({"model": "m", "max_length": 512, "dtype": "float32"})
    assert a == make_key({"dtype": "float32", "max_length": 512, "model": "m"})
    assert len(a) == 16 and int(a, 16) >= 0
    assert a != make_key({"model": "m", "max_length": 256, "dtype": "float32"})
    assert a != make_key({"model": "m", "max_length": 512, "dtype": "bfloat16"})


def test_cache_root_order_argument_then_env_then_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERFUSE_CACHE", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv("LAYERFUSE_CACHE")
    assert cache_root() == tmp_path / "xdg" / "layerfuse"


def test_cache_root_that_is_a_file_is_refused_naming_the_parameter(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    with pytest.raises(LayerfuseError, match=r"is a file, not a folder .*`cache_dir`"):
        cache_root(f)


def test_the_layout_puts_locks_inside_entries_as_a_hidden_folder(tmp_path):
    assert locks_root(tmp_path).parent == entries_root(tmp_path)
    assert locks_root(tmp_path).name.startswith(".")
    assert models_root(tmp_path) != entries_root(tmp_path)


def test_atomic_writes_leave_only_the_target(tmp_path):
    atomic_write_bytes(tmp_path / "sub" / "a.bin", b"abc")
    assert (tmp_path / "sub" / "a.bin").read_bytes() == b"abc"
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    digest = atomic_save_npy(tmp_path / "sub" / "b.npy", arr)
    assert digest == sha256_file(tmp_path / "sub" / "b.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "sub" / "b.npy"), arr)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.bin", "b.npy"]


def test_atomic_folder_replaces_the_target_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "model"
    with atomic_folder(target) as tmp:
        (tmp / "w.txt").write_text("one")
    assert (target / "w.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "w.txt").write_text("two")
            raise RuntimeError("interrupted")
    assert (target / "w.txt").read_text() == "one"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_sha256_file_and_the_sampled_hash_see_a_flipped_byte(tmp_path):
    p = tmp_path / "w.bin"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 1 << 16, dtype=np.uint8).tobytes())
    p.write_bytes(bytes(data))
    assert sha256_file(p) == hashlib.sha256(bytes(data)).hexdigest()
    before = sampled_sha256(p, stride=1 << 12, block=1 << 8)
    data[0] ^= 0xFF
    p.write_bytes(bytes(data))
    assert sampled_sha256(p, stride=1 << 12, block=1 << 8) != before


def test_text_hashes_find_a_subset_and_say_when_one_is_missing():
    have = text_hashes(["a", "b", "c", "d"])
    np.testing.assert_array_equal(subset_rows(have, text_hashes(["c", "a"])), [2, 0])
    assert subset_rows(have, text_hashes(["a", "z"])) is None
    assert text_hashes(["a"]).dtype == np.dtype("S16")
