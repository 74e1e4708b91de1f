"""The compiled pass's SiLU x up kernel, alone and replaced: is its profile row a cost to remove?

    python benchmarks/silu_mul_ab.py --out benchmarks/results/silu_mul_ab_amx

``op_profile.py --compiled --kernels`` puts inductor's fused ``silu(gate) * up`` kernel (on the
stacked gate/up product, :func:`layerfuse.embed.compiled.stack_gate_up`) at about a fifth of a bf16
SmolLM2 pass. This script measures (1) that kernel alone, compiled the same way, on one layer's real
activations of the last ``--texts`` sentences (elements per second), and (2) whole compiled passes
over the ``--texts`` sentences with the kernel as inductor writes it (``base``) or replaced by an
opaque custom op running eager ``silu`` then in-place ``mul_`` (``op``), each variant in its own
process (the compiled code differs), alternating ``--rounds`` times. Prints tokens/s and the ratio.
(3) ``timed``: one more process whose custom op runs the kernel compiled on its own (the code
``kernel_alone`` times) and clocks every call inside real passes: the kernel's seconds, elements/s
and share of the pass, the wall-clock counterpart of the profile's row (the profiler's
per-kernel records are not free; with ``op`` ≈ ``base`` the timed kernel stands for the fused one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _install_op(name: str, body) -> None:
    """Register ``body`` (stacked gate/up product -> SiLU(gate) x up) as the opaque custom op
    ``layerfuse_bench::<name>`` and make compiled blocks' gated MLPs call it."""
    import torch
    import torch.nn.functional as F

    from layerfuse.embed import compiled

    # the schema is given: `from __future__ import annotations` leaves the annotations as strings
    op = torch.library.custom_op(f"layerfuse_bench::{name}", body, mutates_args=(), schema="(Tensor gu) -> Tensor")

    @op.register_fake
    def _(gu):
        return gu.new_empty((*gu.shape[:-1], gu.shape[-1] // 2))

    def forward(self, x):
        return self.down_proj(op(F.linear(x, self.gate_up_weight)))

    compiled._fused_gate_up = forward


def _patch_custom_op() -> None:
    """The op runs eager ``silu`` then in-place ``mul_``."""
    import torch.nn.functional as F

    def silu_mul(gu):
        h = gu.shape[-1] // 2
        out = F.silu(gu[..., :h])
        out.mul_(gu[..., h:])
        return out

    _install_op("silu_mul", silu_mul)


def _patch_timed_op(clock: list) -> None:
    """The op runs the SiLU x up kernel compiled on its own and adds each call's
    ``(seconds, elements)`` to ``clock``."""
    import torch
    import torch.nn.functional as F

    kernel = torch.compile(lambda t: F.silu(t[..., : t.shape[-1] // 2]) * t[..., t.shape[-1] // 2:], dynamic=True)

    def silu_mul_timed(gu):
        t0 = time.perf_counter()
        out = kernel(gu)
        clock.append((time.perf_counter() - t0, gu.numel() // 2))
        return out

    _install_op("silu_mul_timed", silu_mul_timed)


def one_pass(variant: str, texts: int, reps: int) -> dict:
    """In this process: compile (``variant``), warm up, then ``reps`` timed passes."""
    from bench_util import sst2_sorted
    from layerfuse.cli.main import quiet_libraries
    from layerfuse.embed.compiled import compile_blocks
    from layerfuse.embed.forward import embed_sorted

    quiet_libraries()
    clock: list = []
    if variant == "op":
        _patch_custom_op()
    elif variant == "timed":
        _patch_timed_op(clock)
    dtype, bt, bb, enc, side = sst2_sorted("smollm2-135m", "bfloat16", texts, 128)
    if not compile_blocks(bb, announce=print):
        sys.exit("could not compile the blocks")

    def run():
        embed_sorted(bb, enc, ["mean", "last"], bb.n_layers, batch_tokens=bt, padding_side=side)

    run()
    tokens = sum(map(len, enc))
    rates, kernel_s, elements = [], [], 0
    for _ in range(reps):
        clock.clear()
        t0 = time.perf_counter()
        run()
        rates.append(tokens / (time.perf_counter() - t0))
        kernel_s.append(sum(s for s, _ in clock))
        elements = sum(n for _, n in clock)
    out = {"variant": variant, "tokens": tokens, "tokens_per_s": rates}
    if variant == "timed":
        out.update(kernel_seconds=kernel_s, kernel_calls=len(clock), kernel_elements=elements,
                   kernel_share=[k * r / tokens for k, r in zip(kernel_s, rates)])
    return out


def kernel_alone(texts: int) -> dict:
    """The compiled SiLU x up on layer 15's stacked gate/up product of the last sentences' batch."""
    import torch
    import torch.nn.functional as F

    from bench_util import sst2_sorted
    from layerfuse.cli.main import quiet_libraries
    from layerfuse.embed.forward import embed_sorted

    quiet_libraries()
    dtype, bt, bb, enc, side = sst2_sorted("smollm2-135m", "bfloat16", texts, 128)
    mlps = [m for name, m in bb.model.named_modules() if name.endswith("mlp")]
    grab = {}
    handle = mlps[15].register_forward_hook(lambda m, inp, out: grab.__setitem__("x", inp[0].detach().clone()))
    embed_sorted(bb, enc[-200:], ["mean"], bb.n_layers, batch_tokens=bt, padding_side=side)
    handle.remove()
    with torch.no_grad():
        x = grab["x"].reshape(-1, grab["x"].shape[-1])
        w = torch.cat([mlps[15].gate_proj.weight, mlps[15].up_proj.weight])
        gu = (x @ w.T).contiguous()
        h = gu.shape[-1] // 2
        fn = torch.compile(lambda t: F.silu(t[:, :h]) * t[:, h:], dynamic=True)
        for _ in range(3):
            fn(gu)
        n = 50
        t0 = time.perf_counter()
        for _ in range(n):
            fn(gu)
        seconds = (time.perf_counter() - t0) / n
    return {"rows": gu.shape[0], "width": h, "ms": seconds * 1e3, "elements_per_s": gu.shape[0] * h / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=1200)
    ap.add_argument("--rounds", type=int, default=2, help="alternations of the two variants (default 2)")
    ap.add_argument("--reps", type=int, default=3, help="timed passes per process (default 3)")
    ap.add_argument("--out", help="results path without suffix")
    ap.add_argument("--child", choices=["base", "op", "kernel", "timed"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        r = kernel_alone(args.texts) if args.child == "kernel" else one_pass(args.child, args.texts, args.reps)
        print("RESULT " + json.dumps(r))
        return

    def child(kind: str) -> dict:
        done = subprocess.run([sys.executable, __file__, "--child", kind, "--texts", str(args.texts),
                               "--reps", str(args.reps)], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"the {kind} child failed:\n{done.stderr[-3000:]}")
        return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])

    kernel = child("kernel")
    print(f"kernel alone: {kernel['rows']} x {kernel['width']} in {kernel['ms']:.2f} ms "
          f"({kernel['elements_per_s'] / 1e9:.2f} G elements/s)", flush=True)
    passes = []
    for r in range(args.rounds):
        for kind in ("base", "op"):
            passes.append(child(kind))
            print(f"round {r + 1} {kind}: tokens/s " + ", ".join(f"{v:,.0f}" for v in passes[-1]["tokens_per_s"]),
                  flush=True)

    import statistics

    def median(kind):
        return statistics.median(v for p in passes if p["variant"] == kind for v in p["tokens_per_s"])

    timed = child("timed")
    share = statistics.median(timed["kernel_share"])
    in_pass = timed["kernel_elements"] / statistics.median(timed["kernel_seconds"])
    print(f"timed in passes: {timed['kernel_calls']} calls, {in_pass / 1e9:.2f} G elements/s, "
          f"{100 * share:.1f} % of the pass (tokens/s " + ", ".join(f"{v:,.0f}" for v in timed["tokens_per_s"]) + ")",
          flush=True)
    ratio = median("op") / median("base")
    cmd = " ".join(["python benchmarks/silu_mul_ab.py", *sys.argv[1:]])
    print(f"custom op / inductor kernel: {ratio:.3f}x (medians {median('op'):,.0f} / {median('base'):,.0f} tokens/s)")
    data = {"command": cmd, "date": time.strftime("%Y-%m-%d %H:%M"), "texts": args.texts, "kernel_alone": kernel,
            "passes": passes, "op_vs_base": ratio,
            "timed": timed, "timed_share": share, "timed_elements_per_s": in_pass, "load_average_1min": os.getloadavg()[0]}
    md = ["# SiLU x up: inductor's kernel alone, and replaced by eager ops", "",
          f"`{cmd}` ({data['date']}, {os.cpu_count()} cores): SmolLM2-135M bf16, compiled blocks, "
          f"{args.texts} SST-2 train sentences.", "",
          f"* kernel alone on layer 15's real gate/up product: {kernel['rows']} x {kernel['width']} in "
          f"{kernel['ms']:.2f} ms, {kernel['elements_per_s'] / 1e9:.2f} G elements/s",
          f"* whole passes, custom op (eager silu + mul_) / inductor's kernel: **{ratio:.3f}x** "
          f"(median {median('op'):,.0f} vs {median('base'):,.0f} tokens/s)",
          f"* the kernel clocked inside real passes (compiled on its own, called from the custom op): "
          f"{timed['kernel_calls']} calls per pass, {in_pass / 1e9:.2f} G elements/s, **{100 * share:.1f} %** "
          f"of the pass (median of {len(timed['kernel_share'])} passes)", "",
          "| round | variant | tokens/s |", "| --- | --- | --- |"]
    md += [f"| {i // 2 + 1} | {p['variant']} | " + ", ".join(f"{v:,.0f}" for v in p["tokens_per_s"]) + " |"
           for i, p in enumerate(passes)]
    from bench_util import write_results

    write_results(args.out or ROOT / "benchmarks" / "results" / "silu_mul_ab", data, md)


if __name__ == "__main__":
    main()
