"""Helpers and fixtures of the fault-injection suite: the CLI run in-process, small file systems,
a GGUF reference whose dequantisation is the tiny random model, and a text file to extract.

Test modules import the fixtures they use from here: a ``tests/faults/conftest.py`` would shadow
``tests/conftest.py``, which other tests import as ``conftest``.
"""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest


def _top_conftest():
    """tests/conftest.py as a module of its own name (``conftest`` is this folder's)."""
    import importlib.util
    import sys

    name = "layerfuse_tests_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "conftest.py")
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


WORDS, build_tiny_model = _top_conftest().WORDS, _top_conftest().build_tiny_model
from layerfuse.cli.main import main


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``layerfuse ARGV`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, *needles: str) -> str:
    """Assert the CLI failed the way the project promises: exit 2, one line, no traceback, with
    every needle in it. Returns the line."""
    assert code == 2, err
    assert "Traceback" not in err, err
    # an old flag spelling's warning and the line saying what --dtype auto chose are not the error
    lines = [ln for ln in err.strip().splitlines()
             if ln.strip() and ": warning: " not in ln and not ln.startswith("dtype auto → ")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def temporaries(root: Path) -> list[Path]:
    """Every temporary file or folder (``.tmp-…``, ``.assemble-…``) anywhere under ``root``."""
    return [p for p in Path(root).rglob(".*") if p.name.startswith((".tmp-", ".assemble-"))]


def write_texts_csv(path: Path, n: int, seed: int = 0) -> Path:
    """A CSV of ``n`` labelled texts made of the tiny model's words."""
    rng = np.random.default_rng(seed)
    rows = ["text,label"]
    for i in range(n):
        rows.append(" ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) + f",{'ab'[i % 2]}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="session")
def texts_csv(tmp_path_factory) -> Path:
    return write_texts_csv(tmp_path_factory.mktemp("data") / "train.csv", 120)


def _can_mount() -> bool:
    probe = Path("/tmp") / f"lf-mount-probe-{uuid.uuid4().hex[:8]}"
    probe.mkdir()
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], capture_output=True)
        return ok
    except OSError:
        return False
    finally:
        probe.rmdir()


# LAYERFUSE_TEST_NO_MOUNT=1 runs the patched-writer fallback even where mounting works.
CAN_MOUNT = not os.environ.get("LAYERFUSE_TEST_NO_MOUNT") and _can_mount()


@pytest.fixture()
def small_fs(tmp_path, monkeypatch):
    """``make(size, readonly=False) -> folder``: a tmpfs of ``size`` (``"256k"``) where this
    machine lets tests mount one (as the issue's probe did); elsewhere a plain folder under
    which every write of layerfuse's own writers fails with ENOSPC / EROFS, as the kernel would
    say it (a patched ``os.open``/``mkstemp``/``mkdtemp``/``mkdir`` restricted to that folder)."""
    mounts = []

    def make(size: str, readonly: bool = False) -> Path:
        d = tmp_path / f"fs-{len(mounts)}"
        d.mkdir()
        if CAN_MOUNT:
            opts = f"size={size}" + (",ro" if readonly else "")
            subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], check=True)
            mounts.append(d)
            return d
        _patch_writes(monkeypatch, d, errno.EROFS if readonly else errno.ENOSPC, size)
        return d

    yield make
    for d in mounts:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _patch_writes(monkeypatch, folder: Path, code: int, size: str) -> None:  # pragma: no cover - fallback
    import tempfile

    limit = int(size.rstrip("k")) * 1024 if size.endswith("k") else int(size.rstrip("m")) << 20
    state = {"written": 0}
    real_mkstemp, real_mkdtemp, real_mkdir = tempfile.mkstemp, tempfile.mkdtemp, Path.mkdir

    def inside(p) -> bool:
        return str(Path(p).resolve()).startswith(str(folder.resolve()))

    def check(p, nbytes=0):
        if inside(p):
            state["written"] += nbytes
            if code == errno.EROFS or state["written"] > limit:
                raise OSError(code, os.strerror(code), str(p))

    def mkstemp(*a, dir=None, **kw):
        check(dir or ".", 4096)
        return real_mkstemp(*a, dir=dir, **kw)

    def mkdtemp(*a, dir=None, **kw):
        check(dir or ".", 4096)
        return real_mkdtemp(*a, dir=dir, **kw)

    def mkdir(self, *a, **kw):
        if not self.exists():
            check(self, 4096)
        return real_mkdir(self, *a, **kw)

    import safetensors.torch

    real_save_file = safetensors.torch.save_file

    def save_file(tensors, filename, *a, **kw):  # what transformers' save_pretrained writes through
        check(filename, sum(t.numel() * t.element_size() for t in tensors.values()))
        return real_save_file(tensors, filename, *a, **kw)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    import transformers.modeling_utils

    if hasattr(transformers.modeling_utils, "safe_save_file"):
        monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", save_file)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    monkeypatch.setattr(Path, "mkdir", mkdir)


@pytest.fixture(scope="session")
def tiny_gguf_source(tmp_path_factory):
    """A saved tiny model standing in for what transformers reads out of a GGUF file."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gguf-model"), seed=3)


@pytest.fixture()
def tiny_gguf(tmp_path, tiny_gguf_source, monkeypatch):
    """A ``.gguf`` file whose dequantisation (transformers' GGUF reader, patched) yields the tiny
    model; everything else — the copy under ``<cache>/models``, its checksums, its checks on
    load — is layerfuse's real code. ``calls`` counts dequantisations."""
    from transformers import AutoModel, AutoTokenizer

    from layerfuse.embed import backbones

    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + os.urandom(1024))  # its bytes key the copy, as a real file's do
    calls = []

    def dequantise(path):
        calls.append(path)
        return AutoModel.from_pretrained(str(tiny_gguf_source)), AutoTokenizer.from_pretrained(str(tiny_gguf_source))

    monkeypatch.setattr(backbones, "_dequantise", dequantise)
    return gguf, calls


def model_copy(root: Path) -> Path:
    """The one dequantised copy under ``root/models``."""
    copies = [p for p in (root / "models").iterdir() if not p.name.startswith(".")]
    assert len(copies) == 1, copies
    return copies[0]


def xor_bytes(path: Path, offset: int, n: int, keep_mtime: bool = False) -> None:
    """Flip every bit of ``n`` bytes at ``offset`` (optionally putting the mtime back)."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        data = f.read(n)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))





def small_chunks(monkeypatch, n: int) -> None:
    """Make extraction cut chunks of ``n`` texts (the default 512 exceeds the tests' data)."""
    import importlib

    ex = importlib.import_module("layerfuse.embed.extract")
    monkeypatch.setitem(ex.extract_texts.__kwdefaults__, "chunk_texts", n)
