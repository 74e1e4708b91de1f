"""``--dtype auto`` reads a kept per-CPU-model measurement instead of timing a matmul every run."""

from __future__ import annotations

import json

import pytest

from layerfuse.embed import device


@pytest.fixture()
def fresh(monkeypatch, tmp_path):
    monkeypatch.setattr(device, "_BF16_SPEEDUP", {})
    monkeypatch.setattr(device, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    return tmp_path


def test_measured_once_then_read_back_not_redone(fresh, monkeypatch):
    calls = []
    monkeypatch.setattr(device, "measure_bf16_speedup", lambda: calls.append(1) or 2.0)
    assert device.dtype_decision("cpu", fresh)[0] == "bfloat16"
    path = device.hardware_file(fresh)
    assert path.parent == fresh / "hardware" and json.loads(path.read_text())["bf16_speedup"] == 2.0
    # A new process (empty memo) on a machine so busy that a measurement now would say 0.5x: the kept
    # value decides, and nothing is measured again.
    monkeypatch.setattr(device, "_BF16_SPEEDUP", {})
    monkeypatch.setattr(device, "measure_bf16_speedup", lambda: calls.append(1) or 0.5)
    dt, why = device.dtype_decision("cpu", fresh)
    assert (dt, calls) == ("bfloat16", [1])
    assert "2.00× fp32" in why and str(path) in why


def test_kept_slow_measurement_picks_float32(fresh, monkeypatch):
    device.hardware_file(fresh).parent.mkdir(parents=True)
    device.hardware_file(fresh).write_text(json.dumps({"bf16_speedup": 0.67}))
    monkeypatch.setattr(device, "measure_bf16_speedup", lambda: pytest.fail("measured again"))
    lines = []
    assert device.resolve_dtype("auto", "cpu", root=fresh, announce=lines.append) == "float32"
    assert lines and lines[0].startswith("dtype auto → float32: AVX-512 BF16, no AMX; bf16 matmul 0.67× fp32 <")


def test_the_key_is_the_cpu_model(fresh, monkeypatch):
    a = device.hardware_file(fresh)
    monkeypatch.setattr(device, "_cpu_model", lambda: "Some Other CPU 9000")
    assert device.hardware_file(fresh) != a


@pytest.mark.parametrize("flags, expected", [({"amx_bf16", "avx512_bf16"}, "bfloat16"),
                                             ({"avx512_bf16"}, "float32"), ({"avx2"}, "float32")])
def test_flags_decide_when_no_measurement_can_be_kept(fresh, monkeypatch, flags, expected):
    monkeypatch.setattr(device, "_cpu_flags", lambda: flags)
    monkeypatch.setattr(device, "bf16_measurement", lambda root=None: None)
    monkeypatch.setattr(device, "measure_bf16_speedup", lambda: pytest.fail("measured"))
    dt, why = device.dtype_decision("cpu", fresh)
    assert dt == expected
    assert ("flags decide" in why) == (flags != {"avx2"})


def test_unwritable_cache_gives_no_measurement(fresh, monkeypatch):
    blocker = fresh / "file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(device, "measure_bf16_speedup", lambda: 3.0)
    assert device.bf16_measurement(blocker / "cache") is None  # a folder under a file: cannot be made
