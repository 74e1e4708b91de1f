"""docs/selection.md is exactly what `python benchmarks/selection_rules.py --docs` renders from the
committed result files, and every result file carries the command that wrote it."""

from __future__ import annotations

import json

from helpers import ROOT, load_script


def _script():
    return load_script("benchmarks/selection_rules.py", "selection_rules_bench")


def test_selection_doc_rebuilds_from_committed_results():
    assert (ROOT / "docs" / "selection.md").read_text() == _script().render_docs(), (
        "docs/selection.md differs from its results: run `python benchmarks/selection_rules.py --docs`")


def test_each_result_names_its_command_and_scale():
    files = sorted((ROOT / "benchmarks" / "results" / "selection_rules").glob("*.json"))
    assert files
    for f in files:
        r = json.loads(f.read_text())
        assert r["command"].startswith("python benchmarks/selection_rules.py --dataset")
        assert ("--limit" in r["command"]) == bool(r["limit"]) and (f"-limit{r['limit']}" in f.name) == bool(r["limit"])
        # The rules' picks are rows of the grid, chosen without the test column.
        for p in r["picks"].values():
            assert r["rows"][p["row"]]["acc_mean"] == p["test_acc"]
