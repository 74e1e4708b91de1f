"""Two identical extractions at once into one cache both finish, with one entry and the same
arrays (issue 19, item 5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from faultkit import temporaries, write_texts_csv

CHILD = r"""
import sys, time
from pathlib import Path
import numpy as np
import layerfuse.embed.extract as _  # noqa
ex = sys.modules["layerfuse.embed.extract"]
from layerfuse.cache.entries import CacheEntry
model, csv, root, out, me, other, lock = sys.argv[1:]
if lock == "nolock":
    CacheEntry.lock = lambda self: self  # what extraction did before entries were locked
ex.extract_texts.__kwdefaults__["chunk_texts"] = 8  # many chunks: many chances to collide
Path(me).touch()
while not Path(other).exists():  # start together
    time.sleep(0.005)
emb = ex.extract(model, train=csv, poolings="mean,last", cache_dir=root, splits=["train"], progress=False,
                 dtype="float32", device="cpu")
np.save(out, np.asarray(emb.array("train", "mean")))
print("computed", emb.stats["computed_texts"], "hits", emb.stats["cache_hits"])
"""


def run_pair(model, csv, root: Path, tmp: Path, lock: str = "lock"):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    procs = []
    for i in (0, 1):
        argv = [sys.executable, "-c", CHILD, model, str(csv), str(root), str(tmp / f"out{i}.npy"),
                str(tmp / f"ready{i}"), str(tmp / f"ready{1 - i}"), lock]
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return [(p.wait(timeout=300), p.stderr.read() + p.stdout.read()) for p in procs]


def test_two_identical_extractions_at_once_share_one_entry(tiny_model, tmp_path):
    csv = write_texts_csv(tmp_path / "train.csv", 160, seed=7)
    root = tmp_path / "cache"
    results = run_pair(tiny_model, csv, root, tmp_path)
    for code, err in results:
        assert code == 0, err
    # one process computed the texts; the other waited, then read the finished entry as a cache hit
    assert sorted(err.strip().splitlines()[-1] for _, err in results) == ["computed 0 hits 1", "computed 128 hits 0"]
    entries = [p for p in (root / "embeddings").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1, entries
    a, b = np.load(tmp_path / "out0.npy"), np.load(tmp_path / "out1.npy")
    np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in entries[0].iterdir() if p.is_dir()) == ["last", "mean"]
    assert not list(entries[0].glob("*/chunk-*")), "chunks left beside the final arrays"
    assert not temporaries(root)


def test_entry_lock_excludes_other_processes_not_this_one(tmp_path):
    import threading

    from layerfuse.cache.entries import entry

    root = tmp_path / "cache"
    first = entry(root, "0123456789abcdef").lock()
    probe = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(3)")
    lock_file = root / "embeddings" / ".locks" / "0123456789abcdef.lock"
    assert subprocess.run([sys.executable, "-c", probe, str(lock_file)]).returncode == 3, \
        "another process could take the entry while this one computes it"
    # a second object in this process (say, a retry while the first is still referenced by a
    # traceback) does not deadlock on its own process's lock
    second = entry(root, "0123456789abcdef")
    t = threading.Thread(target=second.lock, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "a retry in the same process waited for its own lock"
    second.unlock()
    assert subprocess.run([sys.executable, "-c", probe, str(lock_file)]).returncode == 3
    first.unlock()
    assert subprocess.run([sys.executable, "-c", probe, str(lock_file)]).returncode == 0
