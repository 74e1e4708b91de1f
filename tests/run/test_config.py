"""Run configurations: the documented example is the default, and bad fields are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerfuse.config import DEFAULT_CONFIG
from layerfuse.errors import LayerfuseError
from layerfuse.run.config_file import load_config_file, merge_config

ROOT = Path(__file__).resolve().parents[2]


def test_documented_example_is_the_builtin_default():
    assert load_config_file(ROOT / "configs" / "example.yaml") == DEFAULT_CONFIG


def test_overrides_and_seed_count():
    cfg = merge_config({"models": "a,b", "fusion": {"seeds": 2, "strategies": "concat"}})
    assert cfg["models"] == ["a", "b"]
    assert cfg["fusion"]["seeds"] == [0, 1] and cfg["fusion"]["strategies"] == ["concat"]
    cfg = merge_config({"data": {"train": "x.csv"}})
    assert "dataset" not in cfg["data"] and cfg["data"]["train"] == "x.csv"


@pytest.mark.parametrize(
    "user, needle",
    [
        ({"fusoin": {}}, "unknown section 'fusoin'"),
        ({"fusion": {"strategy": ["concat"]}}, "unknown field 'fusion.strategy'"),
        ({"fusion": "concat"}, "'fusion' must be a mapping"),
        ({"models": []}, "models is empty"),
        ({"fusion": {"seeds": ["a"]}}, "fusion.seeds"),
        ({"fusion": {"search": "beam"}}, "unknown cfg.yaml: fusion.search 'beam': choose from grid, greedy"),
        ({"fusion": {"precision": "fp16"}}, "fusion.precision 'fp16': choose from auto, float32, bfloat16"),
    ],
)
def test_bad_fields_are_named(user, needle):
    with pytest.raises(LayerfuseError, match=needle):
        merge_config(user, "cfg.yaml")


def test_batch_tokens_takes_a_number_or_auto():
    assert DEFAULT_CONFIG["extraction"]["batch_tokens"] == "auto"
    assert merge_config({"extraction": {"batch_tokens": "512"}})["extraction"]["batch_tokens"] == 512
    assert merge_config({"extraction": {"batch_tokens": "auto"}})["extraction"]["batch_tokens"] == "auto"
    with pytest.raises(LayerfuseError, match="extraction.batch_tokens must be a whole number >= 1 or auto"):
        merge_config({"extraction": {"batch_tokens": "lots"}}, "cfg.yaml")


def test_bad_yaml_names_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("models:\n  - a\n fusion: [\n")
    with pytest.raises(LayerfuseError, match=r"bad.yaml line \d+"):
        load_config_file(p)


def test_head_precision_auto_follows_the_dtype_decision(monkeypatch):
    import layerfuse.embed.device as device
    from layerfuse.run.grid import resolve_precision

    assert DEFAULT_CONFIG["fusion"]["precision"] == "auto"
    assert resolve_precision("float32") == "float32" and resolve_precision("bfloat16") == "bfloat16"
    for chosen in ("bfloat16", "float32"):
        monkeypatch.setattr(device, "dtype_decision", lambda dev, root=None, c=chosen: (c, "because"))
        said = []
        assert resolve_precision("auto", log=said.append) == chosen
        assert said == [f"head precision auto → {chosen}: because"]


def test_grid_workers_auto_uses_the_cores_only_for_grids_worth_a_process(monkeypatch):
    import os

    import numpy as np

    from layerfuse.run.grid import PARALLEL_GRID_VALUES, grid_workers

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    small = [[np.zeros((40, 16), np.float32)]]
    big = [[np.zeros((PARALLEL_GRID_VALUES // 100, 60), np.float32)], [np.zeros((PARALLEL_GRID_VALUES // 100, 40))]]
    assert grid_workers("auto", 12, small) == 1  # a tiny grid: starting processes would cost more
    assert grid_workers("auto", 12, big) == 4
    assert grid_workers("auto", 3, big) == 3  # no more workers than rows left to train
    assert grid_workers("auto", 1, big) == 1
    assert grid_workers(2, 12, small) == 2  # a number is taken as it is
