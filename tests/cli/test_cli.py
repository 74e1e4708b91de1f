"""The command line: summaries, --json, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from layerfuse.cli.main import main
from layerfuse.errors import LayerfuseError


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_datasets_lists_builtins(capsys):
    code, out, _ = _run(capsys, "datasets")
    assert code == 0
    for name in ("sst2", "mr", "r8", "r52"):
        assert name in out
    assert "6,920" in out
    code, out, _ = _run(capsys, "datasets", "--json")
    rows = json.loads(out)
    assert {r["name"] for r in rows} == {"sst2", "mr", "r8", "r52"}


def test_models_json(capsys):
    code, out, _ = _run(capsys, "models", "--json")
    assert code == 0
    assert {r["alias"] for r in json.loads(out)} >= {"smollm2-135m", "minilm-l6"}


def test_extract_json_on_user_files(tiny_model, cache_dir, tmp_path, capsys):
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "\n".join(f"the movie was {w},{w}" for w in ["good", "bad"] * 6) + "\n")
    code, out, err = _run(capsys, "extract", "--models", tiny_model, "--train", str(train), "--json",
                          "--test-fraction", "0.25")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["splits"]["train"]["shape"] == [4, 9, 32]
    assert summary["splits"]["test"]["shape"] == [4, 3, 32]
    assert summary["truncated_texts"] == 0
    code, out, _ = _run(capsys, "extract", "--models", tiny_model, "--train", str(train), "--json",
                        "--test-fraction", "0.25")
    assert json.loads(out)["splits"]["train"]["from_cache"] is True


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["extract", "--models", "nope-1b", "--dataset", "sst2"], "unknown model 'nope-1b'"),
        (["extract", "--models", "smollm2-135m", "--dataset", "imdb"], "imdb"),
        (["extract", "--models", "smollm2-135m"], "either --dataset NAME or --train FILE"),
        (["extract", "--models", "smollm2-135m", "--dataset", "sst2", "--test", "t.csv"], "--test needs --train"),
        (["extract", "--models", "smollm2-135m", "--dataset", "sst2", "--layers", "3,x"], "--layers takes"),
        (["extract", "--models", "smollm2-135m", "--dataset", "sst2", "--pooling", "avg"], "unknown pooling 'avg'"),
        (["extract", "--models", "smollm2-135m", "--train", "/no/such/file.csv"], "/no/such/file.csv"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, needle):
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_file_reports_line_through_the_real_executable(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine text,pos\n,neg\n")
    proc = subprocess.run([sys.executable, "-m", "layerfuse.cli", "extract", "--models", "smollm2-135m",
                           "--train", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "bad.csv" in proc.stderr and "3" in proc.stderr


def test_old_flag_spellings_still_work_and_warn(capsys, tiny_model, tmp_path, cache_dir):
    train = tmp_path / "t.csv"
    train.write_text("text,label\n" + "".join(f"text number {i},{'ab'[i % 2]}\n" for i in range(20)))
    code, out, err = _run(capsys, "extract", "--model", tiny_model, "--train", str(train), "--json", "--no-progress")
    assert code == 0 and json.loads(out)["model"] == tiny_model
    assert "--model is an old spelling of --models" in err
    # fuse's old --layers STRATEGY is --select now; the value still reaches the selection.
    code, _, err = _run(capsys, "fuse", "--models", tiny_model, "--train", str(train), "--layers", "nonsense")
    assert code == 2 and "--layers is an old spelling of --select" in err and "unknown layer strategy" in err


def test_extract_takes_one_model(capsys):
    code, _, err = _run(capsys, "extract", "--models", "smollm2-135m,minilm-l6", "--dataset", "sst2")
    assert code == 2 and "extract runs one model" in err and len(err.strip().splitlines()) == 1


def test_models_is_required_and_named_in_the_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["profile", "--dataset", "sst2"])
    assert exc.value.code == 2 and "--models" in capsys.readouterr().err


def test_library_errors_name_parameters_and_the_cli_names_flags():
    from layerfuse.cli.main import cli_message
    from layerfuse.embed.device import resolve_dtype

    with pytest.raises(LayerfuseError) as exc:
        resolve_dtype("fp8", "cpu")
    assert "`dtype`" in str(exc.value) and "--dtype" not in str(exc.value)
    assert cli_message(str(exc.value)).startswith("unknown --dtype 'fp8'")
