"""docs/RESULTS.md must be exactly what benchmarks/reproduce.py makes of the committed result files."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "benchmarks" / "reproduce.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_results_page_is_generated_from_the_result_files():
    rep = _reproduce()
    assert list(rep.RESULTS.glob("*/summary.json")), "no reproduction results committed"
    assert (ROOT / "docs" / "RESULTS.md").read_text() == rep.render_docs(), (
        "docs/RESULTS.md is stale: run `python benchmarks/reproduce.py --docs`")


def test_every_figure_the_page_shows_exists():
    import re

    text = (ROOT / "docs" / "RESULTS.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert images
    missing = [i for i in images if not (ROOT / "docs" / i).resolve().exists()]
    assert not missing, f"RESULTS.md shows figures that are not committed: {missing}"
