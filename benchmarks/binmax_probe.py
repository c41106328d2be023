"""Where the binned-max search's time goes, against the bf16 matmul floor: a one-run GPU probe.

    python benchmarks/binmax_probe.py                   # CUDA; writes results/binmax_probe_<h100|h200>.json
    TRITON_INTERPRET=1 python benchmarks/binmax_probe.py --dry-run   # CPU interpreter, tiny shapes

At N = 1e6, d = 768, bf16 (the issue's shape), per (B, k), median times with the L2 flushed
(``triton.testing.do_bench``):

- ``mm``: ``q @ P.T`` alone (cuBLAS, bf16 output), the floor of any exact search, and ``dense``:
  ``torch.topk(q @ P.T, k)``, the baseline of the targets;
- ``lazy``: ``similarity_topk_triton`` with the default (lazy) algorithm;
- ``binmax``: the whole two-pass search, and its parts: ``pass1`` (the bin-maxima kernel),
  ``select`` (``torch.topk`` of kb + 1 bin maxima), ``pass2`` (rescoring the selected bins, and the
  top-k over their keys);
- at B = 512, k = 100 also bin widths around the table's (span_tiles / 2, x 2, x 4);
- ``recall`` of binmax against the dense fp32 path for the first 64 queries, ``tied_rows``.

Ratios in each row: ``binmax_vs_dense`` (dense / binmax, the issue's target >= 3 at B >= 512),
``binmax_over_mm`` (target <= 1.3) and ``pass1_over_mm``. The JSON is rewritten after every
row; ``--budget-s`` stops early. ``--dry-run`` runs the same code on tiny shapes in the CPU
interpreter (timings meaningless; a test runs it).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import time
from functools import partial
from pathlib import Path

import torch

from joint_rag.atomic import write_json
from joint_rag.kernels import binmax, dispatch, launcher
from joint_rag.kernels.launcher import choose_config, similarity_topk_triton

RESULTS = Path(__file__).resolve().parent / "results"


def timer(dry: bool):
    if dry:

        def run(fn):
            t0 = time.perf_counter()
            fn()
            return round((time.perf_counter() - t0) * 1e3, 3)

        return run
    from triton.testing import do_bench

    return lambda fn: round(do_bench(fn, warmup=10, rep=50, return_mode="median"), 4)


def probe_row(Q, P, k, cfg, bench, base: dict) -> dict:
    mod = launcher.kernels_module()
    q, p, scales = launcher._prepare(Q, P, "dot")
    B, N = q.shape[0], p.shape[0]
    nb = binmax.binmax_layout(N, cfg)[2]
    kb = min(k, nb)
    bmax = binmax.bin_maxima(mod, q, p, scales, cfg, None)
    bins = bmax.topk(min(kb + 1, nb), dim=1).indices[:, :kb]
    row = {**base, "config": str(cfg), "bin_width": binmax.binmax_layout(N, cfg)[1]}
    got = similarity_topk_triton(Q, P, k, config=cfg)[1][:64]
    row["tied_rows"] = launcher.last_fallback_rows
    want = dispatch.dense_topk(Q[:64], P, k, "dot")[1]
    row["recall"] = round(
        sum(len(set(a) & set(b)) for a, b in zip(got.tolist(), want.tolist())) / want.numel(), 5
    )
    row["binmax_ms"] = bench(lambda: similarity_topk_triton(Q, P, k, config=cfg))
    row["pass1_ms"] = bench(lambda: binmax.bin_maxima(mod, q, p, scales, cfg, None))
    row["select_ms"] = bench(lambda: bmax.topk(min(kb + 1, nb), dim=1))
    row["pass2_ms"] = bench(lambda: binmax.rescore_bins(mod, q, p, scales, bins, cfg).topk(k, dim=1))
    row["bin_maxima_mib"] = round(B * nb * 4 / 2**20, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU interpreter, tiny shapes")
    parser.add_argument("--budget-s", type=float, default=150.0)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        parser.error("needs a CUDA GPU (or --dry-run under TRITON_INTERPRET=1)")
    device, dtype = ("cpu", torch.float32) if dry else ("cuda", torch.bfloat16)
    N, D = (600, 32) if dry else (1_000_000, 768)
    shapes = [(1, 5), (8, 12)] if dry else [(512, 100), (1024, 100), (4096, 100), (512, 10), (1, 10), (16, 100), (64, 100), (256, 100), (1024, 10)]  # fmt: skip
    tag = "dry_run" if dry else torch.cuda.get_device_name().split()[-1].lower()
    out = args.out_dir / f"binmax_probe_{tag}.json"
    result = {
        "benchmark": "binmax_probe",
        "device": "CPU interpreter (dry run)" if dry else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "N": N,
        "D": D,
        "dtype": str(dtype).replace("torch.", ""),
        "rows": [],
        "stopped_early": False,
    }
    bench = timer(dry)
    g = torch.Generator(device=device).manual_seed(0)
    P = torch.randn(N, D, device=device, dtype=dtype, generator=g)
    start = time.time()
    for B, k in shapes:
        if time.time() - start > args.budget_s:
            result["stopped_early"] = True
            break
        Q = torch.randn(B, D, device=device, dtype=dtype, generator=g)
        base = {"B": B, "k": k}
        try:
            base["mm_ms"] = bench(partial(torch.mm, Q, P.T))
            base["dense_ms"] = bench(lambda Q=Q, k=k: torch.topk(Q @ P.T, k))
            base["lazy_ms"] = bench(partial(similarity_topk_triton, Q, P, k))
            cfg = choose_config("dot", B, k, P.dtype, N=N, D=D, algo="binmax")
            variants = [cfg]
            if (B, k) == (512, 100) or dry:
                variants += [
                    dataclasses.replace(cfg, span_tiles=s)
                    for s in (max(1, cfg.span_tiles // 2), cfg.span_tiles * 2, cfg.span_tiles * 4)
                    if s != cfg.span_tiles
                ]
            for i, c in enumerate(variants):
                row = probe_row(Q, P, k, c, bench, {**base, "table_config": i == 0})
                row["binmax_vs_dense"] = round(row["dense_ms"] / row["binmax_ms"], 3)
                row["binmax_over_mm"] = round(row["binmax_ms"] / row["mm_ms"], 3)
                row["pass1_over_mm"] = round(row["pass1_ms"] / row["mm_ms"], 3)
                result["rows"].append(row)
                print(json.dumps(row), flush=True)
                write_json(out, result)
        except Exception as e:  # a failing shape is recorded, the probe goes on
            result["rows"].append({**base, "error": f"{type(e).__name__}: {str(e)[:300]}"})
            print(result["rows"][-1], flush=True)
        write_json(out, result)
    write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
