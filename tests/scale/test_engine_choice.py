"""Engine names, Ray options and the message when Ray is missing (no Ray instance is started)."""

from __future__ import annotations

import sys

import pytest

from layerfuse.errors import LayerfuseError


@pytest.fixture()
def no_ray(monkeypatch):
    """Make ``import ray`` fail as it does where the extra is not installed."""
    monkeypatch.setitem(sys.modules, "ray", None)


@pytest.mark.parametrize("command", ["extract", "fuse"])
def test_engine_ray_without_ray_names_the_pip_command(no_ray, tiny_model, cache_dir, tmp_path, capsys, command):
    from layerfuse.cli.main import main

    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "\n".join(f"the movie is {w},{i % 2}" for i, w in enumerate(["good", "bad"] * 10)))
    model_flag = "--models"
    code = main([command, model_flag, tiny_model, "--train", str(train), "--engine", "ray", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and 'pip install "layerfuse[ray]"' in lines[0] and "Traceback" not in err


def test_library_error_speaks_of_parameters(no_ray, tiny_model, cache_dir):
    from layerfuse.embed.extract import extract

    with pytest.raises(LayerfuseError, match=r"engine 'ray' needs Ray.*pip install"):
        extract(tiny_model, dataset="sst2", engine="ray")
    with pytest.raises(LayerfuseError, match="unknown engine 'spark'"):
        extract(tiny_model, dataset="sst2", engine="spark")


@pytest.mark.parametrize("field, value, words", [
    ("engine", "dask", "extraction.engine is 'dask'"),
    ("num_workers", 0, "num_workers must be a whole number"),
    ("cpus_per_worker", -1, "cpus_per_worker must be positive"),
    ("gpus_per_worker", "two", "gpus_per_worker must be a number"),
    ("ray_address", 6379, "ray_address must be a string"),
])
def test_config_engine_fields_are_checked(field, value, words):
    from layerfuse.run.config_file import merge_config

    with pytest.raises(LayerfuseError, match=words):
        merge_config({"extraction": {field: value}}, "cfg.yaml")


def test_config_engine_fields_reach_extraction_and_grid():
    from layerfuse.run.config_file import merge_config
    from layerfuse.scale.engine import engine_options

    cfg = merge_config({"extraction": {"engine": "ray", "ray_address": "auto", "num_workers": 4, "gpus_per_worker": 1},
                        "fusion": {"engine": "ray"}})
    assert cfg["extraction"]["engine"] == "ray" and cfg["fusion"]["engine"] == "ray"
    assert engine_options(cfg["extraction"]) == {"ray_address": "auto", "num_workers": 4, "cpus_per_worker": 1}
    with pytest.raises(LayerfuseError, match="fusion.engine is 'spark'"):
        merge_config({"fusion": {"engine": "spark"}})


def test_cli_flags_override_the_run_config(tmp_path, monkeypatch):
    """`run CONFIG --engine ray` sends both stages to Ray; `--num-workers` overrides the file."""
    from layerfuse.cli import stages
    from layerfuse.cli.main import build_parser

    cfg = tmp_path / "c.yaml"
    cfg.write_text("extraction: {num_workers: 3}\n")
    seen = {}

    def stop(cfg, args, **kw):
        seen.update(cfg)
        raise LayerfuseError("stop here")

    monkeypatch.setattr(stages, "_prepare", stop)
    args = build_parser().parse_args(["run", str(cfg), "--engine", "ray", "--num-workers", "2"])
    with pytest.raises(LayerfuseError, match="stop here"):
        stages.cmd_run(args)
    assert seen["extraction"]["engine"] == "ray" and seen["fusion"]["engine"] == "ray"
    assert seen["extraction"]["num_workers"] == 2


def test_ray_is_an_extra_that_make_test_installs():
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("ray[default]") for req in extras["ray"])
    assert 'ray' in (root / "Makefile").read_text().split('install -e ".[')[1].split(']')[0].split(',')


def test_fuse_engine_ray_flags_reach_extraction_and_grid(tiny_model, cache_dir, tmp_path, capsys, monkeypatch):
    """`fuse --engine ray ...` hands its Ray options to both stages (Ray itself replaced by an in-process
    runner and grid, which the engine's own tests compare with a real Ray instance)."""
    from layerfuse.cli.main import main
    from layerfuse.embed.backbones import load_backbone
    from layerfuse.embed.forward import embed_sorted
    from layerfuse.run.workers import fit_rows_in_workers
    from layerfuse.scale import engine

    seen = {"extraction": [], "grid": []}

    class InProcess:  # the runner protocol of extract_texts, computed here
        def __init__(self, model, **kw):
            seen["extraction"].append(kw)
            self.model, self.device, self.dtype = model, "cpu", kw["dtype"]
            self.stats = {"engine": "in-process"}

        def backbone(self):
            self.bb = load_backbone(self.model, dtype=self.dtype, device="cpu", progress=False)
            return self.bb

        def run(self, jobs, enc, poolings, depth, *, batch_tokens, padding_side, out_dtype, write, on_batch):
            for ci, pos in jobs:
                write(ci, embed_sorted(self.bb, [enc[j] for j in pos], poolings, depth, batch_tokens=batch_tokens,
                                       padding_side=padding_side, out_dtype=out_dtype))
                on_batch(len(pos), 0)

        def close(self):
            pass

    def grid(eng, jobs, src_tr, src_te, y_tr, y_te, n_classes, settings, options, progress):
        seen["grid"].append((eng, options))
        return fit_rows_in_workers(jobs, src_tr, src_te, y_tr, y_te, n_classes, settings, 1, False)

    monkeypatch.setattr(engine, "extraction_runner", lambda eng, model, **kw: InProcess(model, **kw))
    monkeypatch.setattr(engine, "fit_rows", grid)
    train = tmp_path / "train.csv"
    rows = [f"the movie is {'good fun' if i % 2 else 'bad dull'} {w},{i % 2}" for i, w in enumerate(["plot", "story"] * 15)]
    train.write_text("text,label\n" + "\n".join(rows) + "\n")
    code = main(["fuse", "--models", tiny_model, "--train", str(train), "--engine", "ray", "--ray-address", "auto",
                 "--num-workers", "3", "--cpus-per-worker", "2", "--dtype", "float32", "--device", "cpu",
                 "--seeds", "1", "--heads", "logreg", "--folds", "2", "--windows", "1", "--max-epochs", "2",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    (ex,) = seen["extraction"]
    assert ex["ray_address"] == "auto" and ex["num_workers"] == 3 and ex["cpus_per_worker"] == 2
    assert seen["grid"] == [("ray", {"ray_address": "auto", "num_workers": 3, "cpus_per_worker": 2.0})]
