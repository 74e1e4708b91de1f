"""benchmarks/gpu_check.py: exits with one clear line without CUDA; its whole path runs with --device cpu."""

from __future__ import annotations

import json

import helpers
import pytest


def gpu_check():
    return helpers.load_script("benchmarks/gpu_check.py", "gpu_check_script")


def test_without_cuda_it_says_so(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the message is for machines without it")
    assert gpu_check().main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA device here" in err[0] and "--device cpu" in err[0]


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_on_the_cpu_it_compares_every_layer(tiny_model, tmp_path, capsys, dtype):
    out = tmp_path / "r.json"
    code = gpu_check().main(["--model", tiny_model, "--device", "cpu", "--dtype", dtype, "--n", "24",
                               "--out", str(out)])
    r = json.loads(out.read_text())
    assert r["dtype"] == dtype and r["layers"] == "0..3 (every layer)" and r["peak_gpu_mb"] is None
    for p in ("mean", "last"):
        cos = r["comparison"][p]["min_cosine_per_layer"]
        assert len(cos) == 4
        if dtype == "float32":  # the same kernels on the same CPU: the same numbers
            assert min(cos) == pytest.approx(1.0, abs=1e-6)
        else:  # bfloat16 really ran: not bit-identical to float32
            assert min(cos) < 1.0
    assert code == (0 if r["passed"] else 1) and (r["passed"] or dtype == "bfloat16")
    assert r["cpu_float32_tokens_per_s"] > 0 and r["device_tokens_per_s"] > 0
    assert ("PASS" if r["passed"] else "FAIL") in capsys.readouterr().out
