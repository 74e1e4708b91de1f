"""profile, fuse, run, predict and report through the command line, on tiny random models."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import build_tiny_model
from helpers import make_texts

from layerfuse.cli.main import main
from layerfuse.errors import LayerfuseError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def files(tmp_path):
    X, y = make_texts(100, seed=0)
    Xt, yt = make_texts(30, seed=1)
    train, test = tmp_path / "train.csv", tmp_path / "test.jsonl"
    train.write_text("review,sentiment\n" + "\n".join(f"{x},{lab}" for x, lab in zip(X, y)) + "\n")
    test.write_text("\n".join(json.dumps({"review": x, "sentiment": lab}) for x, lab in zip(Xt, yt)) + "\n")
    return ["--train", str(train), "--test", str(test), "--text-column", "review", "--label-column", "sentiment"]


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_profile_writes_tables_plots_and_selection(tiny_model, cache_dir, files, tmp_path, capsys):
    out = tmp_path / "prof"
    text = _run(capsys, "profile", "--models", tiny_model, *files, "--folds", "3", "--windows", "2", "--eval-test",
                "--out", out, "--no-progress")
    assert "best layer" in text
    summary = json.loads((out / "selection.json").read_text())
    (m,) = summary["models"]
    assert m["pooling"] in ("mean", "last") and 0 <= m["best_layer"] <= 3
    assert "test_acc_analysis_only_best_layer" in m
    for name in ("layer_profile_mean.png", "layer_profile_last.png", "profile_" ):
        assert any(p.name.startswith(name) for p in out.iterdir()), name
    assert all((out / f).stat().st_size > 0 for f in summary["files"])
    js = json.loads(_run(capsys, "profile", "--models", tiny_model, *files, "--folds", "3", "--windows", "2",
                         "--out", out, "--json"))
    assert js["models"][0]["model"] == tiny_model


def test_fuse_save_predict_report(tiny_model, cache_dir, files, tmp_path, capsys):
    other = build_tiny_model(tmp_path / "other", layers=2, hidden=16, seed=3)
    out, clf = tmp_path / "fuse", tmp_path / "clf"
    summary = json.loads(_run(capsys, "fuse", "--models", f"{tiny_model},{other}", *files, "--fusion",
                              "concat,attention", "--heads", "logreg", "--seeds", "2", "--proj-dim", "16",
                              "--folds", "3", "--windows", "2", "--lr", "0.01", "--precision", "bfloat16", "--out", out,
                              "--save", clf, "--json"))
    assert len(summary["rows"]) == 4
    assert json.loads((clf / "net.json").read_text())["train_config"]["precision"] == "bfloat16"  # reached the head
    assert (out / "fusion_results.png").stat().st_size > 0 and (out / "complementarity.png").exists()
    # The same command again (here with two worker processes) reads every row back from the cache.
    assert len(list((cache_dir / "grid").iterdir())) == 4
    again = json.loads(_run(capsys, "fuse", "--models", f"{tiny_model},{other}", *files, "--fusion",
                            "concat,attention", "--heads", "logreg", "--seeds", "2", "--proj-dim", "16",
                            "--folds", "3", "--windows", "2", "--lr", "0.01", "--precision", "bfloat16", "--out", out,
                            "--workers", "2", "--json"))
    assert again["rows"] == summary["rows"] and len(list((cache_dir / "grid").iterdir())) == 4
    # `layerfuse cache` shows those rows (a row's CV score file is part of the row, not one more)
    # and the embeddings, and frees the rows alone.
    row = sorted(p for p in (cache_dir / "grid").iterdir())[0]
    (row.parent / f"{row.name}-cv3.json").write_text("{}")
    usage = json.loads(_run(capsys, "cache", "--json"))
    assert usage["root"] == str(cache_dir) and usage["parts"]["grid"]["entries"] == 4
    assert usage["parts"]["profiles"]["entries"] == 4  # 2 models x 2 poolings, scored once
    assert usage["parts"]["grid"]["bytes"] > 0 and usage["parts"]["embeddings"]["entries"] >= 2
    assert usage["total_bytes"] == sum(p["bytes"] for p in usage["parts"].values())
    text = _run(capsys, "cache", "--clear", "grid")
    assert "cleared grid" in text and not (cache_dir / "grid").exists() and (cache_dir / "embeddings").is_dir()
    assert json.loads(_run(capsys, "cache", "--json"))["parts"]["grid"] == {**usage["parts"]["grid"], "entries": 0,
                                                                           "bytes": 0}
    assert sum(r["chosen_on_validation"] for r in summary["rows"]) == 1
    inp = tmp_path / "in.txt"
    inp.write_text("the movie was good\n\nreally awful plot\n")
    lines = _run(capsys, "predict", clf, "--input", inp, "--json").strip().splitlines()
    preds = [json.loads(x) for x in lines]
    assert len(preds) == 2 and set(preds[0]["proba"]) == {"neg", "pos"}
    assert abs(sum(preds[0]["proba"].values()) - 1) < 1e-4
    tsv = _run(capsys, "predict", clf, "--input", inp)
    assert tsv.splitlines()[0] == "label\tp_neg\tp_pos\ttext"
    _run(capsys, "report", out)
    assert "## Fusion" in (out / "report.md").read_text()


def test_run_with_a_config_file(tiny_model, cache_dir, files, tmp_path, capsys):
    cfg = {
        "data": {"train": files[1], "test": files[3], "text_column": "review", "label_column": "sentiment"},
        "models": [tiny_model],
        "extraction": {"dtype": "float32"},
        "profile": {"folds": 3, "windows": 2},
        "fusion": {"strategies": ["concat"], "heads": ["logreg"], "seeds": 2, "proj_dim": 16, "lr": 0.01},
        "output": {"dir": str(tmp_path / "run"), "save": str(tmp_path / "run" / "clf")},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "windows_other-model.png").write_bytes(b"")  # left by an earlier run's other model
    summary = json.loads(_run(capsys, "run", path, "--json"))
    assert summary["fusion"]["best"]["models"] == tiny_model
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Layer profile" in report and "## Fusion" in report
    assert "layer_profile_" in report and "agreement_" in report and "other-model" not in report
    assert (tmp_path / "run" / "clf" / "manifest.json").exists()
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["models"] == [tiny_model]


def test_stage_errors_are_one_line(tiny_model, files, capsys, tmp_path):
    code = main(["fuse", "--models", tiny_model, *files, "--fusion", "blend"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown fusion 'blend'" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:  # argparse's own usage error
        main(["fuse", "--models", tiny_model, *files, "--workers", "0"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--workers: '0' is not a whole number" in err and "Traceback" not in err
    code = main(["predict", str(tmp_path), "--input", "-"])
    err = capsys.readouterr().err
    assert code == 2 and "manifest.json is missing" in err
    code = main(["profile", "--models", tiny_model, *files, "--select", "top-99"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err


def test_choose_by_and_window_shortlist_reach_the_grid_and_the_profile(capsys, tiny_model, tmp_path, monkeypatch):
    """--choose-by picks the grid's selection rule, --search its model sets and --window-shortlist the
    profile's windows, from the CLI and a run config alike; a rule that does not exist fails before any
    model runs."""
    import layerfuse.run.grid as grid_mod
    import layerfuse.scoring.layer_scores as scores_mod
    from layerfuse.run.config_file import merge_config

    seen = {}
    real_grid, real_scores = grid_mod.run_grid, scores_mod.score_layers
    monkeypatch.setattr(grid_mod, "run_grid", lambda *a, **k: (seen.setdefault("rule", k["rule"]),
                                                                seen.setdefault("search", k["search"]),
                                                                seen.setdefault("metric", k["metric"]),
                                                                real_grid(*a, **k))[3])
    monkeypatch.setattr(scores_mod, "score_layers",
                        # the last profile's: the tiny model's (tfidf's one layer has no windows to shortlist)
                        lambda *a, **k: (seen.__setitem__("shortlist", k["window_shortlist"]), real_scores(*a, **k))[1])
    X, y = make_texts(60, seed=5)
    train = tmp_path / "t.csv"
    train.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in zip(X, y)))
    code = main(["fuse", "--models", f"tfidf,{tiny_model}", "--train", str(train), "--choose-by", "cv-1se",
                 "--choose-metric", "accuracy", "--search", "greedy", "--window-shortlist", "2", "--folds", "3", "--windows", "3", "--heads", "logreg", "--seeds", "1", "--max-epochs", "3",
                 "--proj-dim", "8", "--no-progress", "--json", "--out", str(tmp_path / "out"),
                 "--cache-dir", str(tmp_path / "c")])
    assert code == 0 and seen == {"rule": "cv-1se", "search": "greedy", "metric": "accuracy", "shortlist": 2}
    assert json.loads(capsys.readouterr().out)["best"]["cv_acc_se"] is not None
    assert merge_config({"fusion": {"search": "greedy"}})["fusion"]["search"] == "greedy"
    assert merge_config({"fusion": {"choose_by": "cv"}, "profile": {"window_shortlist": 4}})["fusion"]["choose_by"] == "cv"
    with pytest.raises(LayerfuseError, match="fusion.choose_by"):
        merge_config({"fusion": {"choose_by": "test-accuracy"}}, "my.yaml")
    assert merge_config({"fusion": {"choose_metric": "accuracy"}})["fusion"]["choose_metric"] == "accuracy"
    with pytest.raises(LayerfuseError, match="my.yaml: .*fusion.choose_metric"):
        merge_config({"fusion": {"choose_metric": "auc"}}, "my.yaml")
