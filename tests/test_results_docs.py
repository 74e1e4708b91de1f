"""docs/RESULTS.md must be exactly what benchmarks/reproduce.py makes of the committed result files."""

from pathlib import Path

from helpers import ROOT, load_script


def _reproduce():
    return load_script("benchmarks/reproduce.py", "reproduce")


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


def test_extraction_cost_of_a_cache_hit_is_the_cost_of_the_run_that_computed_it(tmp_path):
    rep = _reproduce()
    computed = {"cache_hits": 0, "extract_seconds": 200.0, "tokens_per_second": 1300.0, "peak_rss_mb": 1400.0,
                "max_length": 128, "dtype": "bfloat16"}
    hit = {"cache_hits": 3, "extract_seconds": 0.0, "tokens_per_second": None, "peak_rss_mb": 236.0}
    # Computed now: recorded, and reported as measured.
    assert rep.extraction_resources(tmp_path, "m", computed, 128, "bfloat16")["extract_seconds"] == 200.0
    assert (tmp_path / "extraction_m.json").exists()
    # Read from the cache later: the record is reported, unless its settings differ.
    assert rep.extraction_resources(tmp_path, "m", hit, 128, "bfloat16")["extract_seconds"] == 200.0
    assert rep.extraction_resources(tmp_path, "m", hit, 256, "bfloat16")["extract_seconds"] == 0.0
    # No record (results from before records existed): the previous summary's measurement, saved as the record.
    previous = {"date": "2026-11-24", "max_length": 128, "dtype": "bfloat16",
                "resources": {"n": {k: v for k, v in computed.items() if k not in ("max_length", "dtype")}}}
    assert rep.extraction_resources(tmp_path, "n", hit, 128, "bfloat16", previous)["extract_seconds"] == 200.0
    assert "2026-11-24" in (tmp_path / "extraction_n.json").read_text()
    # ... but not one that was itself a cache hit, nor one with other settings.
    stale = {**previous, "resources": {"k": hit}}
    assert rep.extraction_resources(tmp_path, "k", hit, 128, "bfloat16", stale)["extract_seconds"] == 0.0
    other = tmp_path / "other"
    other.mkdir()
    assert rep.extraction_resources(other, "n", hit, 64, "bfloat16", previous)["extract_seconds"] == 0.0
    assert not list(other.iterdir())


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_child_processes_report_failure_and_never_outlive_the_run(monkeypatch):
    import math
    import os
    import signal
    import subprocess
    import sys
    import time

    import pytest

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import reproduce

    assert reproduce.in_child(math.factorial, 5, what="factorial") == 120
    # A child that dies without a result stops the run with a message instead of waiting forever.
    with pytest.raises(SystemExit, match="exit code 3"):
        reproduce.in_child(os._exit, 3, what="crash")
    if not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        pytest.skip("needs /proc/PID/task/TID/children to find the child")
    # Killing the run (here: SIGKILL to the parent) ends a child that is still working.
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); import reproduce; "
            "reproduce.in_child(time.sleep, 120, what='sleep')")
    parent = subprocess.Popen([sys.executable, "-c", code, str(ROOT / "benchmarks")])
    try:
        deadline = time.time() + 60
        while not (kids := _children(parent.pid)) and time.time() < deadline:
            time.sleep(0.2)
        assert kids, "the child never started"
        time.sleep(1)  # let the child reach its watchdog
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 30
        while any(_running(k) for k in kids) and time.time() < deadline:
            time.sleep(0.2)
        alive = [k for k in kids if _running(k)]
        assert not alive, f"child {alive} outlived the killed run"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_best_and_last_layer_rows_are_grid_rows_that_resume(tiny_model, cache_dir, one_torch_thread, monkeypatch):
    import numpy as np

    import layerfuse.model.training as train_mod
    from layerfuse.data.dataset import Dataset, Split
    from layerfuse.run.prepare import prepare_models

    rep = _reproduce()
    rng = np.random.default_rng(0)
    words = ["good", "bad", "fun", "dull", "the", "movie", "plot", "great", "awful"]
    texts = [" ".join(rng.choice(words, size=5)) for _ in range(90)]
    y = np.array([int(("good" in t) or ("fun" in t)) for t in texts])
    ds = Dataset("toy", ["neg", "pos"], {"train": Split(texts[:60], y[:60]), "test": Split(texts[60:], y[60:])},
                 source="test")
    preps = prepare_models(ds, [tiny_model], layers="auto", folds=3, windows=2, progress=False, log=lambda *_: None)
    out = rep.best_vs_last(ds, preps, [0])
    prof = preps[0].profiles[preps[0].pooling]
    b = out[tiny_model]
    assert b["pooling"] == preps[0].pooling
    assert b["best"]["layer"] == prof.best("probe_acc")["start"] and b["last"]["layer"] == prof.n_layers
    assert all(0 <= b[k]["acc_mean"] <= 1 for k in ("best", "last"))
    assert len(list((cache_dir / "grid").iterdir())) == len({b["best"]["layer"], b["last"]["layer"]})

    def no_training(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(train_mod, "fit_seeds", no_training)
    assert rep.best_vs_last(ds, preps, [0]) == out  # read back from the checkpoints


def test_findings_keep_heads_apart_when_the_grid_has_several():
    rep = _reproduce()

    def row(models, fusion, head, acc, val, chosen=False):
        return {"models": models, "n_models": models.count("+") + 1, "fusion": fusion, "head": head,
                "acc_mean": acc, "acc_std": 0.01, "f1_mean": acc, "val_f1_mean": val, "val_acc_mean": val,
                "chosen_on_validation": chosen}

    rows = [row("a", "-", "mlp", 0.80, 0.80), row("b", "-", "mlp", 0.70, 0.70),
            row("a", "-", "logreg", 0.60, 0.60), row("b", "-", "logreg", 0.65, 0.65),
            row("a+b", "concat", "mlp", 0.78, 0.79),            # below its best member with the same head
            row("a+b", "concat", "logreg", 0.70, 0.81, True)]   # above its best member with the same head
    assert rep.fusion_label(rows[4]) == "concat" and rep.fusion_label(rows[5]) == "concat (logreg head)"
    assert rep.model_label(rows[0]) == "a" and rep.model_label(rows[2]) == "a (logreg head)"
    helped, multi = rep.fusions_beating_members(rows)
    assert (helped, len(multi)) == (1, 2)
    s = {"dataset": "toy", "models": ["a", "b"], "seeds": [0], "dtype": "bfloat16", "max_length": 64,
         "fusions": ["concat"], "fusion": {"rows": rows},
         "best_vs_last": {m: {"pooling": "mean", "best": {"layer": 1, "acc_mean": 0.7},
                              "last": {"layer": 2, "acc_mean": 0.6}} for m in ("a", "b")},
         "profile": {"models": [{"model": m, "n_layers": 2} for m in ("a", "b")]},
         "baselines": [{"method": "tf-idf", "acc": 0.75}]}
    text = "\n".join(rep.findings(s))
    assert "(a+b, concat (logreg head)) scores 70.00 on test, -10.00 points against the best single model (a, 80.00)" in text
    assert "per fusion: concat 78.00, concat (logreg head) 70.00" in text
    assert "1 of 2 fusions beat" in text


def test_a_comparison_within_the_chosen_std_is_called_a_tie_not_beaten():
    rep = _reproduce()
    rows = [{"models": "a", "n_models": 1, "fusion": "-", "head": "mlp", "acc_mean": 0.850, "acc_std": 0.004,
             "chosen_on_validation": False},
            {"models": "a+b", "n_models": 2, "fusion": "sum", "head": "mlp", "acc_mean": 0.848, "acc_std": 0.003,
             "chosen_on_validation": True}]
    s = {"fusion": {"rows": rows}, "baselines": [{"method": "tf-idf", "acc": 0.77}],
         "best_vs_last": {"a": {"best": {"layer": 3, "acc_mean": 0.846}, "last": {"layer": 4, "acc_mean": 0.83}}}}
    assert rep._above_all(s) == "yes, but 1 of 3 within its std (a tie)"
    s["best_vs_last"]["a"]["best"]["acc_mean"] = 0.840   # 0.8 points below: clearly beaten
    assert rep._above_all(s) == "yes"
    s["baselines"].append({"method": "svm", "acc": 0.849})
    assert rep._above_all(s) == "no: 1 of 4 at or above it"


def test_a_rerun_with_other_models_leaves_only_its_own_profiles_and_plots(tmp_path):
    rep = _reproduce()
    names = ["profile_a-1_mean.json", "profile_a-1_last.csv", "windows_a-1.png", "agreement_a-1.png",
             "profile_old-2.5b_mean.json", "windows_old-2.5b.png", "agreement_old-2.5b.png",
             "extraction_old-2.5b.json", "extraction_a-1.json", "layer_profile_mean.png", "summary.json"]
    for n in names:
        (tmp_path / n).write_text("x")
    removed = rep.remove_other_models_outputs(tmp_path, ["a-1"])
    assert sorted(removed) == ["agreement_old-2.5b.png", "profile_old-2.5b_mean.json", "windows_old-2.5b.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(names) - set(removed))
