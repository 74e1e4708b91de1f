"""Spawned workers must not re-run a user's script that has no ``if __name__ == "__main__":`` guard."""

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import multiprocessing as mp
    import sys
    from concurrent.futures import ProcessPoolExecutor

    sys.path.insert(0, {src!r})
    from layerfuse.run.workers import spawning_without_main

    print("script body ran", flush=True)
    pool = ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn"))
    with spawning_without_main():
        futs = [pool.submit(abs, -i) for i in range(4)]
    print("results", [f.result() for f in futs], flush=True)
    pool.shutdown()
    print("main file kept", __file__.endswith("unguarded.py"), flush=True)
""")


def test_unguarded_script_runs_once(tmp_path):
    src = str(Path(__file__).resolve().parents[2] / "src")
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT.format(src=src))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("script body ran") == 1, out.stdout
    assert "results [0, 1, 2, 3]" in out.stdout
    assert "main file kept True" in out.stdout
