"""Helpers of the server tests: a tiny saved classifier and a `layerfuse serve` subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import helpers
import httpx


def make_texts(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Separable texts of varied length (2..11 filler words, "not" and "long" among them)."""
    texts, labels = helpers.make_texts(n, seed, words=(2, 12), fill=helpers.FILL + ["not", "long"])
    return texts, [str(lab) for lab in labels]


def build_classifier(model: str, folder) -> str:
    """Fit and save a small classifier on the tiny random model."""
    from layerfuse.estimator import LayerFusionClassifier

    X, y = make_texts(60, seed=0)
    clf = LayerFusionClassifier(models=model, layers="best", head="logreg", lr=1e-2, folds=3, windows=2,
                                max_epochs=20, patience=5, proj_dim=16, progress=False)
    clf.fit(X, y).save(folder)
    return str(folder)


class Server:
    """`layerfuse serve` in a subprocess on a free loopback port; stderr is collected in ``log``."""

    def __init__(self, classifier: str, *extra: str, env: dict | None = None, wait_ready: bool = True):
        cmd = [sys.executable, "-m", "layerfuse.cli", "serve", classifier, "--host", "127.0.0.1", "--port", "0",
               "--device", "cpu", *extra]
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                     env=full_env)
        self.log: list[str] = []
        self.port = None
        got_port = threading.Event()

        def drain():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    got_port.set()
            got_port.set()

        self._reader = threading.Thread(target=drain, daemon=True)
        self._reader.start()
        if not got_port.wait(60) or self.port is None:
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.log))
        self.url = f"http://127.0.0.1:{self.port}"
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(self.log))
            try:
                if httpx.get(self.url + "/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server never became ready:\n" + "".join(self.log))

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._reader.join(5)
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
