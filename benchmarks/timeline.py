"""Stamp each line (and each progress-bar redraw) of a command's output with the seconds since start.

    layerfuse run --out OUT 2>&1 | python benchmarks/timeline.py OUT/timeline.txt

Progress bars redraw with carriage returns; each redraw is a line of its own in the output file,
so where a stage began and ended can be read off (``benchmarks/results/run_default/``).
"""

from __future__ import annotations

import sys
import time


def main() -> None:
    t0 = time.time()
    buf = b""
    with open(sys.argv[1], "w") as out:
        while True:
            c = sys.stdin.buffer.read(1)
            if not c:
                break
            if c in (b"\r", b"\n"):
                if buf.strip():
                    out.write(f"{time.time() - t0:7.1f} {buf.decode(errors='replace')}\n")
                    out.flush()
                buf = b""
            else:
                buf += c


if __name__ == "__main__":
    main()
