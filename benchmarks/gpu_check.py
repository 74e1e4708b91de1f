"""Check the accelerator path: every layer of a model on the GPU against float32 on the CPU.

    python benchmarks/gpu_check.py                          # smollm2-135m, cuda, bfloat16
    python benchmarks/gpu_check.py --model minilm-l6 --dtype float32
    python benchmarks/gpu_check.py --device cpu             # exercise the script without a GPU

In one run, on the same texts (``--n`` SST-2 training sentences) and through the real
``layerfuse.extract`` (cache, length-sorted batches, streaming of chunks, float32 storage so the
comparison sees the compute and not float16 storage):

1. the CPU reference: float32 on the CPU;
2. the device run: ``--device`` (default ``cuda``) in ``--dtype`` (default ``bfloat16``), after a
   short warm-up run (CUDA context, kernels) that is not timed;
3. per layer and pooling, the cosine similarity of each text's device vector to its CPU vector.
   Tolerance (the check passes when every layer and pooling meets it): minimum cosine over texts
   >= 0.99 for bfloat16 (8 bits of mantissa, rounded again after every block) and >= 0.9999 for
   float32 (only the order of additions differs between kernels). The worst layer is reported;
4. tokens/s of both runs (extraction time, model load excluded), peak GPU memory of the device
   run (``torch.cuda.max_memory_allocated``), and the largest batch that fits: ``--max-length``
   tokens per text, doubling the batch from 1 until CUDA runs out of memory (or ``--max-batch``),
   then bisecting; each try is one all-layer forward pass with pooling.

Results go to ``benchmarks/results/gpu_check_<model>_<device>_<dtype>.json`` (and are printed).
Exit status: 0 within tolerance, 1 outside it, 2 when there is no CUDA device (one line says so).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

#: Minimum cosine (device vs CPU float32) per compute dtype.
TOLERANCE = {"bfloat16": 0.99, "float32": 0.9999}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="packaged alias, HF folder or .gguf (default smollm2-135m)")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu to exercise the script (default cuda)")
    p.add_argument("--dtype", default="bfloat16", choices=sorted(TOLERANCE), help="device compute dtype")
    p.add_argument("--n", type=int, default=256, help="SST-2 training sentences (default 256)")
    p.add_argument("--batch-tokens", type=int, default=8192, help="padded tokens per batch on the device")
    p.add_argument("--max-length", type=int, default=512, help="tokens per text in the largest-batch search")
    p.add_argument("--max-batch", type=int, default=4096, help="largest batch tried (default 4096)")
    p.add_argument("--out", help="result file (default benchmarks/results/gpu_check_<model>_<device>_<dtype>.json)")
    return p.parse_args(argv)


def no_cuda_message(device: str) -> str | None:
    """Why ``device`` cannot run here, or None when it can."""
    import torch

    if not device.startswith("cuda"):
        return None
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
        return (f"gpu_check: no CUDA device here (torch {torch.__version__}, {build}): run it on a machine with "
                "an NVIDIA GPU and a CUDA build of torch, or pass --device cpu to exercise the script on the CPU")
    return None


def run_extract(model: str, ds, device: str, dtype: str, batch_tokens: int, cache: str):
    from layerfuse.embed.extract import extract

    return extract(model, data=ds, device=device, dtype=dtype, storage="float32", batch_tokens=batch_tokens,
                   cache_dir=cache, splits=["train"], progress=False)


def compare(ref, got) -> dict:
    """Per pooling: the minimum cosine over texts of each layer, and the worst layer."""
    out = {}
    for p in ref.poolings:
        a = np.asarray(ref.array("train", p), dtype=np.float64)
        b = np.asarray(got.array("train", p), dtype=np.float64)
        num = (a * b).sum(-1)
        den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
        cos = np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)  # [layers, N]
        per_layer = cos.min(axis=1)
        rel = np.abs(a - b).max(axis=(1, 2)) / np.maximum(np.abs(a).max(axis=(1, 2)), 1e-30)
        worst = int(per_layer.argmin())
        out[p] = {"min_cosine_per_layer": [round(float(c), 6) for c in per_layer],
                  "worst_layer": worst, "worst_min_cosine": float(per_layer[worst]),
                  "max_abs_diff_over_max_abs_per_layer": [round(float(r), 6) for r in rel]}
    return out


def largest_batch(model_ref: str, device: str, dtype: str, max_length: int, max_batch: int) -> dict:
    """Largest batch of ``max_length``-token texts whose all-layer forward pass with pooling fits."""
    import torch

    from layerfuse.embed.backbones import load_backbone
    from layerfuse.embed.forward import embed_sorted

    bb = load_backbone(model_ref, dtype=dtype, device=device, progress=False)
    T = min(max_length, int(getattr(bb.model.config, "max_position_embeddings", max_length) or max_length))
    vocab = int(bb.model.config.vocab_size)
    rng = np.random.default_rng(0)

    def fits(batch: int) -> tuple[bool, int]:
        enc = [list(rng.integers(4, vocab, size=T)) for _ in range(batch)]
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            embed_sorted(bb, enc, ["mean", "last"], bb.n_layers, batch_tokens=batch * T)
            torch.cuda.synchronize()
            return True, int(torch.cuda.max_memory_allocated())
        except torch.cuda.OutOfMemoryError:
            return False, 0
        finally:
            torch.cuda.empty_cache()

    good, good_peak, bad, b = 0, 0, None, 1
    while b <= max_batch:
        ok, peak = fits(b)
        if not ok:
            bad = b
            break
        good, good_peak, b = b, peak, b * 2
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        ok, peak = fits(mid)
        good, good_peak, bad = (mid, peak, bad) if ok else (good, good_peak, mid)
    return {"tokens_per_text": T, "largest_batch": good, "largest_batch_tokens": good * T,
            "hit_max_batch": bad is None, "peak_gpu_mb_at_largest": round(good_peak / 2**20, 1),
            "gpu_total_mb": round(torch.cuda.get_device_properties(0).total_memory / 2**20, 1)}


def main(argv=None) -> int:
    args = parse_args(argv)
    why = no_cuda_message(args.device)
    if why:
        print(why, file=sys.stderr)
        return 2
    import shutil

    import torch

    from layerfuse.cli.main import quiet_libraries
    from layerfuse.data.loading import load_dataset

    quiet_libraries()
    ds = load_dataset("sst2").subsample(args.n)
    cuda = args.device.startswith("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        # One cache root (a GGUF model is dequantised once); its embeddings are dropped between runs,
        # since the device is not part of a cache key and a float32 device run would read the CPU's.
        ref = run_extract(args.model, ds, "cpu", "float32", args.batch_tokens, tmp)
        shutil.rmtree(Path(tmp) / "embeddings")
        if cuda:  # warm-up: CUDA context and kernels, not timed
            run_extract(args.model, load_dataset("sst2").subsample(16), args.device, args.dtype, args.batch_tokens,
                        tmp)
            shutil.rmtree(Path(tmp) / "embeddings")
            torch.cuda.reset_peak_memory_stats()
        got = run_extract(args.model, ds, args.device, args.dtype, args.batch_tokens, tmp)
        peak = round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None
    diffs = compare(ref, got)
    tol = TOLERANCE[args.dtype]
    passed = all(d["worst_min_cosine"] >= tol for d in diffs.values())
    result = {
        "model": args.model, "layers": f"0..{got.depth} (every layer)", "texts": args.n,
        "device": args.device, "dtype": got.stats["dtype"],
        "device_name": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "tolerance": f"min cosine over texts >= {tol} in every layer and pooling (vs float32 on the CPU)",
        "passed": passed,
        "cpu_float32_tokens_per_s": round(ref.stats["tokens_per_second"], 1),
        "device_tokens_per_s": round(got.stats["tokens_per_second"], 1),
        "speedup_vs_cpu": round(got.stats["tokens_per_second"] / ref.stats["tokens_per_second"], 2),
        "peak_gpu_mb": peak,
        "batch_tokens": args.batch_tokens,
        "comparison": diffs,
    }
    if cuda:
        result["largest_batch"] = largest_batch(args.model, args.device, got.stats["dtype"], args.max_length,
                                                args.max_batch)
    out = Path(args.out or ROOT / "benchmarks" / "results" /
               f"gpu_check_{Path(args.model).name}_{args.device.replace(':', '')}_{args.dtype}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for p, d in diffs.items():
        print(f"{p:<5} worst layer {d['worst_layer']:>2}: min cosine {d['worst_min_cosine']:.6f} (tolerance {tol})")
    print(f"tokens/s  cpu float32 {result['cpu_float32_tokens_per_s']:.0f}   {args.device} {result['dtype']} "
          f"{result['device_tokens_per_s']:.0f}   ratio {result['speedup_vs_cpu']:.2f}x")
    if cuda:
        lb = result["largest_batch"]
        print(f"memory    peak {peak} MB during extraction; largest batch {lb['largest_batch']} x "
              f"{lb['tokens_per_text']} tokens ({lb['peak_gpu_mb_at_largest']} MB of {lb['gpu_total_mb']} MB)")
    print(f"{'PASS' if passed else 'FAIL'}  -> {out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
