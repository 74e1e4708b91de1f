"""Extraction throughput and memory, measured side by side in one run.

    python benchmarks/extract_throughput.py                      # 300 SST-2 train sentences, smollm2-135m
    python benchmarks/extract_throughput.py --model minilm-l6    # adds sentence-transformers' encode
    python benchmarks/extract_throughput.py --sweep 512,1024,2048,4096,8192

Rows, all on the same texts with the same loaded weights (mean + last pooling unless said):

* ``reference``: the paper code's recipe: batch 2, texts in dataset order, padding to the longest
  text of each batch, last layer only (fp32).
* ``output_hidden_states``: the former layerfuse method: length-sorted batches under the token
  budget, Hugging Face ``output_hidden_states=True`` (every layer's ``[B, T, d]`` kept), then pooled.
  Tokenising included, no cache write.
* ``streaming, same driver``: that very driver with streaming pooling instead (the fair pair).
* ``layerfuse``: ``extract_texts`` (streaming pooling through forward hooks, written to a fresh
  cache), fp32 and bf16, eager (``compile="off"``). Its batches run packed
  (:mod:`layerfuse.embed.packed`: the real tokens as one row, no block computes the padding);
  ``streaming, same driver`` too.
* ``padded batches: layerfuse``: the same with the batches padded, as before packing (and as the
  ``output_hidden_states`` rows run them); also for the compiled rows.
* ``layerfuse, compiled``: the same with the blocks compiled (``compile="on"``,
  :mod:`layerfuse.embed.compiled`), after the eager rows and the memory panel (compiling leaves
  memory behind in the process); compiling runs first on 16 texts, its time (warm or cold inductor
  cache, as the machine has it) reported apart. Skipped with
  ``--no-compile`` or where no C++ compiler is on the PATH.
* ``sentence-transformers encode`` (MiniLM only, where installed): the peer a user would pick,
  last layer only, its own batching (batch 32).

``--warm-pass`` runs each row once untimed over all the texts before its timed pass: steady-state
throughput, without what a path's first full-size batches pay once (the default warm-up is 16
texts, whose batches are small). ``--repeats N`` times every row N times, in rounds over the rows
(a slow minute of the shared machine hits every row), and reports the median with the range.

Each row gives texts/s, tokens/s, GFLOP/s (2 × non-embedding parameters per token) and its share
of the matmul ceiling measured in the same run, and the peak RSS during the row above the RSS at
its start. A memory panel then runs one batch of ``--memory-tokens`` tokens through each path:
every layer kept (``output_hidden_states``, with the model's default key/value cache as the former
path ran it), streaming every layer, and the last layer only (a plain forward pass without a
key/value cache), and streaming only layers 0-1, ``--memory-rounds`` times in rotated order (the
least peak of each path is reported with the most), to show that streaming's peak does not grow
with the layer count.
``--batch-tokens auto`` (the default) gives each dtype the budget a run uses
(``BATCH_TOKENS_BY_DTYPE``: fp32 1,024, bf16 2,048), every path of that dtype the same.
bf16 rows run only where the CPU has bf16 instructions (AMX or AVX-512 BF16) unless ``--dtypes
float32,bfloat16`` asks for them: elsewhere bf16 is emulated, orders of magnitude slower, and
``--dtype auto`` never picks it.
Results: ``benchmarks/results/extract_throughput[_<model>].{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_util import matmul_ceiling, measured, sorted_tokens  # noqa: E402
from layerfuse.config import BATCH_TOKENS_BY_DTYPE  # noqa: E402
from layerfuse.data.builtin import load_builtin  # noqa: E402
from layerfuse.embed.backbones import load_backbone, resolve  # noqa: E402
from layerfuse.embed.compiled import compile_blocks, compiler, eager_blocks  # noqa: E402
from layerfuse.embed.device import _cpu_model, bf16_instructions, dtype_decision  # noqa: E402
from layerfuse.embed.extract import extract_texts  # noqa: E402
from layerfuse.embed.forward import _model_kwargs, embed_sorted, forward_all_layers, forward_pooled, tokenize  # noqa: E402
from layerfuse.embed.pooling import pool  # noqa: E402

POOLINGS = ["mean", "last"]
#: The name prefix of the rows that run layerfuse's batches padded, as before packing.
PADDED = "padded batches: "


def non_embedding_params(model) -> int:
    emb = sum(p.numel() for n, p in model.named_parameters() if "embed" in n)
    return sum(p.numel() for p in model.parameters()) - emb


def run_reference(bb, texts: list[str]) -> dict:
    """The paper code's recipe: batch 2, unsorted, pad to longest, last layer only."""
    tok, model = bb.tokenizer, bb.model
    old_side, tok.padding_side = tok.padding_side, "right"
    t0 = time.perf_counter()
    n_tok = 0
    with torch.inference_mode():
        for i in range(0, len(texts), 2):
            enc = tok(texts[i : i + 2], padding=True, return_tensors="pt")
            n_tok += int(enc["attention_mask"].sum())
            last = model(**enc, output_hidden_states=True).hidden_states[-1]
            m = enc["attention_mask"][..., None].float()
            ((last * m).sum(1) / m.sum(1)).numpy()
    tok.padding_side = old_side
    return {"seconds": time.perf_counter() - t0, "tokens": n_tok}


def run_hidden_states(bb, texts: list[str], batch_tokens: int, streaming: bool = False) -> dict:
    """The former method: sorted batches, output_hidden_states, pooled afterwards (tokenising
    counted, no cache write). ``streaming=True``: the same driver with streaming pooling."""
    t0 = time.perf_counter()
    enc, side = sorted_tokens(bb, texts, 512)
    embed_sorted(bb, enc, POOLINGS, bb.n_layers, batch_tokens=batch_tokens, padding_side=side, streaming=streaming)
    return {"seconds": time.perf_counter() - t0, "tokens": int(sum(len(e) for e in enc))}


def run_layerfuse(bb, texts: list[str], batch_tokens: int, compile: str = "off", packed: bool = True) -> dict:
    """``extract_texts`` into a fresh cache; ``packed=False``: the batches run padded, as before
    packing (``backbone.extra["packed"]``, :mod:`layerfuse.embed.packed`)."""
    if not packed:
        bb.extra["packed"] = False
    try:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            _, st = extract_texts(bb, texts, text_fingerprint="bench", poolings=POOLINGS, cache_dir=d,
                                  batch_tokens=batch_tokens, progress=False, compile=compile)
            return {"seconds": time.perf_counter() - t0, "tokens": st["tokens"]}
    finally:
        bb.extra.pop("packed", None)


def run_compiled(bb, texts: list[str], batch_tokens: int, packed: bool = True) -> dict:
    """The layerfuse row with compiled blocks (compiled in the warm-up: the graph is reused here),
    eager again afterwards so that later rows and the memory panel run as before."""
    compile_blocks(bb, warm_up=False)
    try:
        r = run_layerfuse(bb, texts, batch_tokens, compile="on", packed=packed)
    finally:
        eager_blocks(bb)
    return r


def run_sentence_transformers(model_dir: str, texts: list[str], n_tokens: int):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    st = SentenceTransformer(model_dir, device="cpu")
    st.encode(texts[:8])
    t0 = time.perf_counter()
    st.encode(texts, batch_size=32)
    return {"seconds": time.perf_counter() - t0, "tokens": n_tokens}


def memory_panel(bbs: dict, n_tokens: int, rounds: int = 3) -> list[dict]:
    """Peak RSS above the start of one batch of ``n_tokens`` (128-token rows) through each path,
    ``rounds`` times in rotated order. The allocator makes one call's peak depend on what ran before
    it (the first path of a process pays for one-time buffers; glibc keeps freed blocks), so each
    path reports the least and the most of its rounds; the least is what the path itself needs."""
    rows = []
    for dt, bb in bbs.items():
        T = 128
        B = max(1, n_tokens // T)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(5, bb.tokenizer.vocab_size - 1, (B, T), generator=g)
        mask = torch.ones_like(ids)
        L = bb.n_layers

        def hs():
            states = forward_all_layers(bb, ids, mask, L)
            [pool(h.float(), mask, p) for h in states for p in POOLINGS]
            return {}

        paths = {
            f"output_hidden_states, all {L + 1} layers": hs,
            f"streaming, all {L + 1} layers": lambda: forward_pooled(bb, ids, mask, L, POOLINGS) and {},
            "streaming, layers 0-1 (the pass ends after block 1)":
                lambda: forward_pooled(bb, ids, mask, 1, POOLINGS) and {},
            "last layer only (plain forward, no KV cache)": lambda: [
                pool(bb.model(**_model_kwargs(bb, ids, mask)).last_hidden_state.float(), mask, p)
                for p in POOLINGS] and {},
        }
        names = list(paths)
        peaks: dict[str, list[float]] = {n: [] for n in names}
        for r_i in range(rounds):
            for name in names[r_i % len(names):] + names[:r_i % len(names)]:
                with torch.inference_mode():
                    peaks[name].append(measured(lambda: dict(paths[name]() or {}))["peak_above_start_mb"])
        for name in names:
            r = {"dtype": dt, "path": name, "batch": [B, T], "peak_above_start_mb": min(peaks[name]),
                 "peak_max_mb": max(peaks[name]), "rounds": peaks[name]}
            rows.append(r)
            print(f"memory {dt:<9} {name:<52} batch {B}×{T}: peak +{r['peak_above_start_mb']:.0f} MB "
                  f"(most {r['peak_max_mb']:.0f} MB over {rounds} rounds)", flush=True)
    return rows


def sweep(budgets: list[int], args) -> None:
    texts = load_builtin("sst2").splits["train"].texts[: args.n]
    bbs = {dt: load_backbone(args.model, dtype=dt, progress=True) for dt in _dtypes(args.dtypes)}
    mode = "on" if args.sweep_compiled else "off"
    for bb in bbs.values():
        if args.sweep_compiled and not compile_blocks(bb, announce=print):
            sys.exit("could not compile the blocks")
        run_layerfuse(bb, texts[:16], budgets[0], compile=mode)
    rows = []
    for b in budgets:
        row = {"batch_tokens": b}
        for dt, bb in bbs.items():
            r = measured(lambda: run_layerfuse(bb, texts, b, compile=mode))
            row[f"{dt}_tokens_per_s"] = r["tokens"] / r["seconds"]
            row[f"{dt}_peak_above_start_mb"] = r["peak_above_start_mb"]
        rows.append(row)
        print(f"batch tokens {b:>6}: " + "   ".join(f"{dt} {row[f'{dt}_tokens_per_s']:6.0f} tok/s" for dt in bbs),
              flush=True)
    out = (Path(args.out).with_suffix(".json") if args.out
           else ROOT / "benchmarks" / "results" / f"extract_batch_sweep{_suffix(args.model)}.json")
    out.write_text(json.dumps({"command": f"python benchmarks/extract_throughput.py --sweep {args.sweep}"
                               + _model_flag(args.model) + ("" if args.n == 300 else f" --n {args.n}")
                               + (f" --threads {args.threads}" if args.threads else "")
                               + (" --sweep-compiled" if args.sweep_compiled else "")
                               + ("" if args.dtypes == "auto" else f" --dtypes {args.dtypes}")
                               + (f" --out {args.out}" if args.out else ""),
                               "threads": torch.get_num_threads(),
                               "date": time.strftime("%Y-%m-%d %H:%M"), "model": args.model, "texts": len(texts),
                               "load_average_1min": os.getloadavg()[0], "compiled": args.sweep_compiled,
                               "rows": rows}, indent=2))
    print(f"wrote {out}")


def _suffix(model: str) -> str:
    return "" if model == "smollm2-135m" else "_" + model.replace("/", "_")


def _model_flag(model: str) -> str:
    return "" if model == "smollm2-135m" else f" --model {model}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=300, help="number of SST-2 train sentences (default 300)")
    ap.add_argument("--batch-tokens", default="auto",
                    help="padded tokens per batch, or auto: each dtype the budget a run uses (default auto)")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled rows")
    ap.add_argument("--out", default=None, help="results path without suffix (default "
                    "benchmarks/results/extract_throughput[_<model>])")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice); "
                    "1 on a machine shared with other jobs, where two threads wait on busy cores")
    ap.add_argument("--dtypes", default="auto",
                    help="dtypes to run: float32,bfloat16 (default auto: bfloat16 only where the CPU has bf16 "
                         "instructions)")
    ap.add_argument("--warm-pass", action="store_true",
                    help="run each row once untimed over all the texts before timing it (steady state)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="time every row this many times, in rounds over the rows, and report the median (default 1)")
    ap.add_argument("--memory-tokens", type=int, default=8192, help="tokens in the memory panel's one batch")
    ap.add_argument("--memory-rounds", type=int, default=3, help="rotated rounds of the memory panel (default 3)")
    ap.add_argument("--sweep-compiled", action="store_true", help="with --sweep: the blocks compiled")
    ap.add_argument("--sweep", help="instead: compare batch-token budgets, e.g. 512,1024,2048,4096,8192, for fp32 and "
                    "bf16 side by side; writes benchmarks/results/extract_batch_sweep[_<model>].json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sweep:
        return sweep([int(x) for x in args.sweep.split(",")], args)
    run_all(args)


def run_all(args) -> None:
    """Every row, then the memory panel, then the files (see the module docstring)."""
    texts = load_builtin("sst2").splits["train"].texts[: args.n]
    print(f"machine: {_cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}", flush=True)
    dtypes = _dtypes(args.dtypes)
    ceiling = {"float32": matmul_ceiling(torch.float32), "bfloat16": matmul_ceiling(torch.bfloat16)}
    print(f"matmul ceiling: fp32 {ceiling['float32']:.0f} GFLOP/s, bf16 {ceiling['bfloat16']:.0f} GFLOP/s", flush=True)
    if "bfloat16" not in dtypes:
        print("bf16 rows skipped: this CPU has no bf16 instructions (bf16 is emulated there, and --dtype auto "
              "never chooses it); --dtypes float32,bfloat16 runs them anyway", flush=True)
    bbs = {dt: load_backbone(args.model, dtype=dt, progress=True) for dt in dtypes}
    bb32, bb16 = bbs["float32"], bbs.get("bfloat16")
    flops_per_token = 2 * non_embedding_params(bb32.model)
    bt = {dt: _budget(args.batch_tokens, dt) for dt in dtypes}
    compile_rows = not args.no_compile and compiler() is not None
    # Warm up each path on a few texts so one-time costs are not counted.
    run_reference(bb32, texts[:4])
    for dt, bb in bbs.items():
        run_hidden_states(bb, texts[:16], bt[dt])
        run_layerfuse(bb, texts[:16], bt[dt])
    n_tokens = sum(len(e) for e in tokenize(bb32, texts, 512)[0])
    b32, b16 = bt["float32"], bt.get("bfloat16")
    plan = [row for row in [
        ("reference (batch 2, unsorted, last layer)", lambda: run_reference(bb32, texts), "float32"),
        ("output_hidden_states (sorted batches, all layers)", lambda: run_hidden_states(bb32, texts, b32),
         "float32"),
        ("output_hidden_states (sorted batches, all layers)", lambda: run_hidden_states(bb16, texts, b16),
         "bfloat16"),
        ("streaming, same driver (sorted batches, all layers, no cache write)",
         lambda: run_hidden_states(bb32, texts, b32, streaming=True), "float32"),
        ("streaming, same driver (sorted batches, all layers, no cache write)",
         lambda: run_hidden_states(bb16, texts, b16, streaming=True), "bfloat16"),
        ("layerfuse (streaming, all layers)", lambda: run_layerfuse(bb32, texts, b32), "float32"),
        ("layerfuse (streaming, all layers)", lambda: run_layerfuse(bb16, texts, b16), "bfloat16"),
        (PADDED + "layerfuse (streaming, all layers)", lambda: run_layerfuse(bb32, texts, b32, packed=False),
         "float32"),
        (PADDED + "layerfuse (streaming, all layers)", lambda: run_layerfuse(bb16, texts, b16, packed=False),
         "bfloat16"),
    ] if row[2] in dtypes]

    if not bb32.is_decoder:
        src = str(resolve(args.model)[0])
        plan.append(("sentence-transformers encode (last layer)",
                     lambda: run_sentence_transformers(src, texts, n_tokens), "float32"))
    rows = run_rows(plan, texts, flops_per_token, ceiling, args.warm_pass, args.repeats)
    # The memory panel before anything is compiled: compiling leaves memory behind in the process.
    mem = memory_panel(bbs, args.memory_tokens, args.memory_rounds)
    compile_seconds = {}
    for dt, bb in bbs.items() if compile_rows else []:
        t0 = time.perf_counter()
        if compile_blocks(bb, announce=print):
            run_layerfuse(bb, texts[:16], bt[dt], compile="on")
            compile_seconds[dt] = time.perf_counter() - t0
            run_layerfuse(bb, texts[:16], bt[dt], compile="on", packed=False)  # the padded rows' graph too
            print(f"compiled {dt} blocks and ran 16 texts in {compile_seconds[dt]:.1f} s", flush=True)
        eager_blocks(bb)
    compiled_dtypes = [dt for dt in dtypes if dt in compile_seconds]
    rows += run_rows([("layerfuse, compiled (streaming, all layers)",
                       (lambda bb=bbs[dt], b=bt[dt]: run_compiled(bb, texts, b)), dt) for dt in compiled_dtypes]
                     + [(PADDED + "layerfuse, compiled (streaming, all layers)",
                         (lambda bb=bbs[dt], b=bt[dt]: run_compiled(bb, texts, b, packed=False)), dt)
                        for dt in compiled_dtypes], texts, flops_per_token, ceiling, args.warm_pass, args.repeats)
    write_results(args, texts, rows, mem, ceiling, flops_per_token, bt, compile_seconds)


def run_rows(plan, texts, flops_per_token, ceiling, warm_pass: bool = False, repeats: int = 1) -> list[dict]:
    """Each ``(name, fn, dtype)`` of ``plan`` timed ``repeats`` times, in rounds over the whole plan
    (after an untimed run with ``warm_pass``): its throughput from the median time, the range over
    the rounds, share of the ceiling and the largest peak RSS."""
    import statistics

    timed: list[list[dict]] = [[] for _ in plan]
    for round_ in range(repeats):
        for i, (_, fn, _) in enumerate(plan):
            if warm_pass and round_ == 0:
                fn()
            r = measured(fn)
            if r is not None and r.get("seconds") is not None:
                timed[i].append(r)
    rows = []
    for (name, _, dt), runs in zip(plan, timed):
        if not runs:
            continue
        seconds = [x["seconds"] for x in runs]
        r = dict(runs[0], seconds=statistics.median(seconds), seconds_each=seconds,
                 peak_above_start_mb=max((x["peak_above_start_mb"] for x in runs
                                          if x["peak_above_start_mb"] is not None), default=None))
        r.update(name=name, dtype=dt, texts_per_s=len(texts) / r["seconds"], tokens_per_s=r["tokens"] / r["seconds"])
        r["gflops"] = r["tokens_per_s"] * flops_per_token / 1e9
        r["ceiling_fraction"] = r["gflops"] / ceiling[dt]
        rows.append(r)
        spread = (f" (rounds {r['tokens'] / max(seconds):.0f}-{r['tokens'] / min(seconds):.0f})"
                  if len(seconds) > 1 else "")
        print(f"{name:<52} {dt:<9} {r['texts_per_s']:7.1f} texts/s {r['tokens_per_s']:7.0f} tok/s{spread} "
              f"{r['gflops']:6.1f} GFLOP/s ({100 * r['ceiling_fraction']:.0f}% of ceiling) "
              f"peak +{r['peak_above_start_mb']:.0f} MB", flush=True)
    return rows


def _budget(spec, dtype: str) -> int:
    """``--batch-tokens``: a number, or auto (the dtype's budget in a run)."""
    return BATCH_TOKENS_BY_DTYPE[dtype] if str(spec) == "auto" else int(spec)


def _dtypes(spec: str) -> list[str]:
    """``auto``: float32, and bfloat16 where the CPU has bf16 instructions; else a comma list."""
    if spec == "auto":
        return ["float32"] + (["bfloat16"] if bf16_instructions() != "none" else [])
    dts = [d.strip() for d in spec.split(",") if d.strip()]
    if "float32" not in dts or not set(dts) <= {"float32", "bfloat16"}:
        raise SystemExit("--dtypes: float32 (needed: the reference row is float32), optionally bfloat16")
    return dts


def _row(rows, prefix, dt):
    return next((r for r in rows if r["name"].startswith(prefix) and r["dtype"] == dt), None)


def write_results(args, texts, rows, mem, ceiling, flops_per_token, budgets, compile_seconds) -> None:
    ref = rows[0]
    default_dtype, why = dtype_decision("cpu")
    hs = {dt: _row(rows, "output_hidden_states", dt) for dt in ("float32", "bfloat16")}
    lf = {dt: _row(rows, "layerfuse", dt) for dt in ("float32", "bfloat16")}
    sd = {dt: _row(rows, "streaming, same driver", dt) for dt in ("float32", "bfloat16")}
    cp = {dt: _row(rows, "layerfuse, compiled", dt) for dt in ("float32", "bfloat16")}
    pe = {dt: _row(rows, PADDED + "layerfuse (", dt) for dt in ("float32", "bfloat16")}
    pc = {dt: _row(rows, PADDED + "layerfuse, compiled", dt) for dt in ("float32", "bfloat16")}
    pairs = {
        "compiled_bf16_vs_output_hidden_states_bf16": (cp["bfloat16"], hs["bfloat16"]),
        "compiled_bf16_vs_eager_bf16": (cp["bfloat16"], lf["bfloat16"]),
        "compiled_fp32_vs_eager_fp32": (cp["float32"], lf["float32"]),
        "bf16_vs_output_hidden_states_bf16": (lf["bfloat16"], hs["bfloat16"]),
        "bf16_vs_output_hidden_states_fp32": (lf["bfloat16"], hs["float32"]),
        "fp32_vs_output_hidden_states_fp32": (lf["float32"], hs["float32"]),
        "bf16_vs_fp32": (lf["bfloat16"], lf["float32"]),
        "streaming_vs_output_hidden_states_same_driver_fp32": (sd["float32"], hs["float32"]),
        "streaming_vs_output_hidden_states_same_driver_bf16": (sd["bfloat16"], hs["bfloat16"]),
        "default_vs_reference": (lf[default_dtype], ref),
        "packed_vs_padded_fp32": (lf["float32"], pe["float32"]),
        "packed_vs_padded_bf16": (lf["bfloat16"], pe["bfloat16"]),
        "packed_vs_padded_compiled_fp32": (cp["float32"], pc["float32"]),
        "packed_vs_padded_compiled_bf16": (cp["bfloat16"], pc["bfloat16"]),
        "compiled_bf16_padded_vs_output_hidden_states_bf16": (pc["bfloat16"], hs["bfloat16"]),
    }  # a pair with a row not run (bf16 rows on a CPU without bf16 instructions) has no ratio
    ratios = {k: a["texts_per_s"] / b["texts_per_s"] for k, (a, b) in pairs.items() if a and b}
    st = _row(rows, "sentence-transformers", "float32")
    if st:
        ratios["layerfuse_fp32_all_layers_vs_sentence_transformers"] = lf["float32"]["texts_per_s"] / st["texts_per_s"]
        ratios["layerfuse_default_all_layers_vs_sentence_transformers"] = (lf[default_dtype]["texts_per_s"]
                                                                          / st["texts_per_s"])
    print("ratios: " + ", ".join(f"{k} {v:.2f}×" for k, v in ratios.items()))
    command = ("python benchmarks/extract_throughput.py" + _model_flag(args.model)
               + ("" if args.n == 300 else f" --n {args.n}")
               + ("" if str(args.batch_tokens) == "auto" else f" --batch-tokens {args.batch_tokens}")
               + (" --no-compile" if args.no_compile else "")
               + (" --warm-pass" if args.warm_pass else "")
               + (f" --repeats {args.repeats}" if args.repeats != 1 else "")
               + (f" --threads {args.threads}" if args.threads else "")
               + ("" if args.dtypes == "auto" else f" --dtypes {args.dtypes}")
               + (f" --out {args.out}" if args.out else ""))
    result = {
        "command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "model": args.model, "texts": len(texts),
        "batch_tokens": budgets, "compile_seconds_warm_up": compile_seconds,
        "load_average_1min": os.getloadavg()[0],
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "bf16_instructions": bf16_instructions()},
        "matmul_ceiling_gflops": ceiling, "flops_per_token": flops_per_token,
        "default_dtype": default_dtype, "default_dtype_why": why, "rows": rows, "memory": mem, "ratios": ratios,
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"extract_throughput{_suffix(args.model)}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [
        f"Command: `{command}` ({result['date']}, {len(texts)} SST-2 train sentences, {args.model}, "
        f"{result['machine']['cpu']}, {result['machine']['cores']} cores shared with other jobs "
        f"(load average {result['load_average_1min']:.1f}), bf16 instructions: {bf16_instructions()}, "
        f"torch {torch.__version__}; token budget per batch: "
        + ", ".join(f"{dt} {b:,}" for dt, b in budgets.items()) + ")",
        "",
        f"Matmul ceiling measured in the same run: fp32 {ceiling['float32']:.0f} GFLOP/s, "
        f"bf16 {ceiling['bfloat16']:.0f} GFLOP/s; {flops_per_token / 1e6:.0f} MFLOP per token.",
        "",
        f"| configuration | dtype | texts/s | tokens/s{' (median, range of the rounds)' if args.repeats > 1 else ''} "
        "| GFLOP/s | share of ceiling | peak RSS above start | vs reference |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        each = r.get("seconds_each", [r["seconds"]])
        spread = f" ({r['tokens'] / max(each):.0f}–{r['tokens'] / min(each):.0f})" if len(each) > 1 else ""
        lines.append(f"| {r['name']} | {r['dtype']} | {r['texts_per_s']:.1f} | {r['tokens_per_s']:.0f}{spread} | "
                     f"{r['gflops']:.1f} | {100 * r['ceiling_fraction']:.0f}% | {r['peak_above_start_mb']:.0f} MB | "
                     f"{r['texts_per_s'] / ref['texts_per_s']:.2f}× |")
    lines += ["", "Ratios (texts/s): " + ", ".join(f"{k.replace('_', ' ')} {v:.2f}×" for k, v in ratios.items()) + ".",
              "", f"`--dtype auto` here → {default_dtype}: {why}.", ""]
    if compile_seconds:
        lines += ["Compiling (in the warm-up, inductor's cache as this machine had it) and running 16 texts: "
                  + ", ".join(f"{dt} {s:.1f} s" for dt, s in compile_seconds.items()) + ".", ""]
    lines += [
              f"One batch of {mem[0]['batch'][0]}×{mem[0]['batch'][1]} tokens, peak RSS above its start, the least "
              f"and the most of {args.memory_rounds} rotated rounds (the least is what the path needs; the rest is "
              "the allocator and what ran before):", "",
              "| dtype | path | peak (least) | most |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {m['dtype']} | {m['path']} | {m['peak_above_start_mb']:.0f} MB | {m.get('peak_max_mb', float('nan')):.0f} MB |"
              for m in mem]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
