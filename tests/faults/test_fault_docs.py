"""docs/guarantees.md names, for each promise, tests that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
DOC = TESTS.parent / "docs" / "guarantees.md"


def _tests_in(name: str) -> set[str]:
    """Test functions of the test file called ``name`` wherever it lives under tests/."""
    files = [p for p in TESTS.rglob(Path(name).name) if str(p).endswith(name)]
    assert files, f"docs/guarantees.md names {name}, which is not under tests/"
    found = set()
    for f in files:
        found |= {n.name for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.FunctionDef)}
    return found


def test_every_test_named_in_guarantees_exists():
    text = DOC.read_text()
    refs = re.findall(r"`((?:[\w/]+\.py)?(?:::\w+)?)`", text)
    current, named = None, 0
    for ref in refs:
        if not ref:
            continue
        path, _, func = ref.partition("::")
        if path:
            current = path
            if not func:
                assert _tests_in(path), path
                continue
        assert current is not None, ref
        assert func in _tests_in(current), f"{current}::{func} is named in docs/guarantees.md but does not exist"
        named += 1
    assert named >= 20
