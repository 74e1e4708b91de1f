"""Small output helpers shared by the commands: shortened text, sizes in MB, JSON on stdout.
"""

from __future__ import annotations

import json
import sys

__all__ = ["shorten", "mb", "emit_json"]

# ---------------------------------------------------------------------------------------------
# Formatting helpers


def shorten(text: str, width: int = 72) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:.1f} MB"


def emit_json(obj) -> None:
    from layerfuse.report.tables import json_default

    json.dump(obj, sys.stdout, indent=2, default=json_default)
    sys.stdout.write("\n")
