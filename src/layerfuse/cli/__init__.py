"""The ``layerfuse`` command line: one sub-command per stage (see :func:`main`).
"""

from .main import build_parser, main

__all__ = [
    "build_parser",
    "main",
]
