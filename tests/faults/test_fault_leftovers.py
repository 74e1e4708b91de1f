"""A writer killed mid-write leaves nothing that is counted, served or kept forever: its
temporary folder is recognised as stale (its pid is gone), reported by ``layerfuse cache`` and
removed by ``--clear tmp`` or by the next dequantisation (issue 19, item 6)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from faultkit import run_cli, temporaries, tiny_gguf, tiny_gguf_source  # noqa: F401 -- pytest fixtures

CHILD = r"""
import os, signal, sys
from transformers import AutoModel, AutoTokenizer
from layerfuse.embed import backbones
gguf, source, root = sys.argv[1:]

def dequantise(path):
    model, tok = AutoModel.from_pretrained(source), AutoTokenizer.from_pretrained(source)
    def killed(*a, **kw):  # SIGKILL after the weights are written, before the copy is renamed into place
        os.kill(os.getpid(), signal.SIGKILL)
    tok.save_pretrained = killed
    return model, tok

backbones._dequantise = dequantise
backbones.load_backbone(gguf, root=root, progress=False)
"""


def _kill_during_dequantisation(gguf, source, root):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(gguf), str(source), str(root)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = temporaries(root / "models")
    assert len(left) == 1 and (left[0] / "model.safetensors").exists(), left  # the leftover the issue saw
    return left[0]


def test_killed_dequantisation_is_not_counted_and_is_swept_by_the_next(tiny_gguf, tiny_gguf_source, cache_dir,
                                                                        capsys):
    from layerfuse.embed import backbones

    gguf, calls = tiny_gguf
    left = _kill_during_dequantisation(gguf, tiny_gguf_source, cache_dir)
    code, out, _ = run_cli(capsys, "cache", "--json", "--cache-dir", cache_dir)
    summary = json.loads(out)
    assert code == 0
    assert summary["parts"]["models"]["entries"] == 0 and summary["parts"]["models"]["bytes"] == 0
    assert summary["tmp"]["entries"] == 1 and summary["tmp"]["bytes"] > 0
    backbones.load_backbone(str(gguf), root=cache_dir, progress=False)
    assert not left.exists() and not temporaries(cache_dir)
    assert len(calls) == 1


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_clear_tmp_removes_what_dead_writers_left(cache_dir, capsys):
    pid = _dead_pid()
    folder = cache_dir / "models" / f".tmp-{pid}-0123456789abcdef-x1y2z3w4"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"\0" * 5000)
    chunk = cache_dir / "embeddings" / "0123456789abcdef" / "mean" / f".tmp-{pid}-abcd.npy"
    chunk.parent.mkdir(parents=True)
    chunk.write_bytes(b"\0" * 3000)
    code, out, _ = run_cli(capsys, "cache", "--cache-dir", cache_dir)
    assert code == 0 and "tmp" in out and "2 left" in out, out
    code, out, _ = run_cli(capsys, "cache", "--clear", "tmp", "--json", "--cache-dir", cache_dir)
    assert code == 0 and json.loads(out)["freed_bytes"] == 8000
    assert not temporaries(cache_dir)


def test_a_live_writers_temporaries_are_kept(cache_dir, capsys):
    live = cache_dir / "models" / f".tmp-{os.getpid()}-abc-12345678"
    live.mkdir(parents=True)
    (live / "w").write_bytes(b"x" * 100)
    old = cache_dir / "models" / ".0123456789abcdef-k2j4h5g6"  # a leftover named before pids were recorded
    old.mkdir()
    day_ago = time.time() - 2 * 86400
    os.utime(old, (day_ago, day_ago))
    code, out, _ = run_cli(capsys, "cache", "--clear", "tmp", "--cache-dir", cache_dir)
    assert code == 0
    assert live.exists(), "a temporary of a running writer was deleted"
    assert not old.exists()


def test_a_reused_pid_does_not_keep_a_dead_writers_folder(cache_dir, capsys):
    """The pid in a leftover's name may belong to a newer process by now: the leftover is older
    than that process, so it is still stale."""
    folder = cache_dir / "models" / f".tmp-{os.getpid()}-0123456789abcdef-q1w2e3r4"
    folder.mkdir(parents=True)
    long_ago = time.time() - 3 * 86400  # before this process started
    os.utime(folder, (long_ago, long_ago))
    code, _, _ = run_cli(capsys, "cache", "--clear", "tmp", "--cache-dir", cache_dir)
    assert code == 0 and not folder.exists()
