"""Where the fused kernel's time goes, and which configs beat the table: a one-run GPU probe.

    python benchmarks/similarity_topk_probe.py                   # CUDA; writes results/similarity_topk_probe_<h100|h200>.json
    TRITON_INTERPRET=1 python benchmarks/similarity_topk_probe.py --dry-run   # CPU interpreter, tiny shapes

The sweep in ``similarity_topk.py`` says how fast the kernel is; this says why, for the next
change to the kernel. At the issue's target shapes (N = 1e6, d = 768, bf16) it times, with the
L2 flushed (``triton.testing.do_bench``, median):

- ``mm``: ``q @ P.T`` alone (cuBLAS, bf16 output): the scoring floor, and ``dense``:
  ``torch.topk(q @ P.T, k)``, the baseline of the targets;
- for the table config and variants around it (queries per block, warps, stages, passages per
  tile, lazy m, query-block grouping):
  - ``probe``: the kernel with ``PROBE=1``: tiles scored exactly as in the search, only their
    row max kept (no top-k bookkeeping). ``search_kernel - probe`` is the cost of the top-k;
    ``probe / mm`` is how far the Triton scoring loop is from cuBLAS;
  - ``search_kernel``: the search kernel alone (one launch, no second pass);
  - ``search``: ``similarity_topk_triton`` with that config (kernel, second pass over the
    splits, decoding, exactness check and any torch fallback);
  - ``fallback_rows`` and ``recall`` against an fp32 reference for the first 64 queries (a fast
    but wrong variant shows here).

A variant that does not compile or launch (registers, shared memory) is recorded with its error.
The JSON is rewritten after every row; ``--budget-s`` stops the probe early.
``--dry-run`` runs the same code path on tiny shapes in the interpreter (timings meaningless).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from similarity_topk import RESULTS, Recorder, device_name, device_tag  # noqa: E402

from joint_rag.kernels import launcher  # noqa: E402
from joint_rag.kernels.configs import TopkConfig, choose_config, device_sms  # noqa: E402

# (B, k, all variants?) at N = 1e6, d = 768: the 2x target rows first, then the bandwidth rows
SHAPES = [(512, 100, True), (1024, 10, True), (1024, 100, False), (4096, 100, False),
          (512, 10, False), (64, 100, False), (16, 10, True), (1, 10, False)]  # fmt: skip
DRY_SHAPES = [(20, 10, True), (3, 5, False)]


def variants(base: TopkConfig, full: bool) -> dict[str, TopkConfig]:
    """The table config and the variants tried around it (duplicates dropped)."""
    out = {"table": base}
    if full:
        half_b = max(16, base.block_b // 2)
        out |= {
            f"block_b{half_b}_warps4": replace(base, block_b=half_b, num_warps=4),  # 2 CTAs per SM
            "warps4": replace(base, num_warps=4),
            "warps8": replace(base, num_warps=8),
            "stages2": replace(base, num_stages=2),
            "stages4": replace(base, num_stages=4),
            "block_n64": replace(base, block_n=max(64, base.k_pad)),
            "block_n256": replace(base, block_n=256),
            "group_b4": replace(base, group_b=4),
            "group_b16": replace(base, group_b=16),
        }
        if base.lazy_m > 1:
            out["lazy_m_half"] = replace(base, lazy_m=base.lazy_m // 2)  # cheaper tiles, more fallbacks
    seen, unique = set(), {}
    for name, cfg in out.items():
        if cfg not in seen:
            seen.add(cfg)
            unique[name] = cfg
    return unique


def timer(dry: bool):
    if dry:

        def once(fn) -> float:
            t0 = time.perf_counter()
            fn()
            return round((time.perf_counter() - t0) * 1e3, 4)

        return once
    from triton.testing import do_bench

    return lambda fn: round(do_bench(fn, warmup=10, rep=50, return_mode="median"), 4)


def recall(indices: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean fraction of each row's reference top-k that ``indices`` holds."""
    hits = (indices[:, :, None] == reference[:, None, :]).any(dim=1).float()  # (R, k)
    return round(hits.mean().item(), 6)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU interpreter, tiny shapes")
    parser.add_argument("--budget-s", type=float, default=150.0, help="stop after this many seconds")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    dry = args.dry_run
    if dry and not launcher.interpreting():
        parser.error("--dry-run needs TRITON_INTERPRET=1 in the environment (set before triton is imported)")
    if not dry and not torch.cuda.is_available():
        parser.error("no CUDA device visible (use --dry-run on a CPU)")
    dev = "cpu" if dry else "cuda"
    dtype = torch.float32 if dry else torch.bfloat16  # the interpreter misreads bf16
    N, D = (300, 48) if dry else (1_000_000, 768)
    tag = "dry_run" if dry else device_tag("cuda")
    import triton

    rec = Recorder(
        args.out_dir / f"similarity_topk_probe_{tag}.json",
        {
            "benchmark": "similarity_topk_probe",
            "device": device_name(dev),
            "device_tag": tag,
            "torch": torch.__version__,
            "triton": triton.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "N": N,
            "D": D,
            "dtype": str(dtype).removeprefix("torch."),
            "timing": "perf_counter, one call (dry run)"
            if dry
            else "triton.testing.do_bench median, L2 flushed",
            "stopped_early": False,
        },
    )
    bench = timer(dry)
    mod = launcher.kernels_module()
    torch.manual_seed(0)
    P = torch.randn(N, D, device=dev, dtype=dtype)  # (N, D)
    P32 = P.float()  # (N, D) for the fp32 reference
    start = time.time()
    for B, k, full in DRY_SHAPES if dry else SHAPES:
        Q = torch.randn(B, D, device=dev, dtype=dtype)  # (B, D)
        R = min(B, 64)
        ref = torch.topk(Q[:R].float() @ P32.T, k).indices  # (R, k) fp32 reference
        scores = partial(torch.matmul, Q, P.T)
        row = {
            "B": B,
            "k": k,
            "mm_ms": bench(scores),
            "dense_ms": bench(lambda s=scores, k=k: torch.topk(s(), k)),
        }
        row["mm_TFLOPs"] = round(2 * B * N * D / row["mm_ms"] / 1e9, 2)
        base = choose_config("dot", B, k, dtype, N=N, num_sms=device_sms(Q.device))
        row["configs"] = {}
        for name, cfg in variants(base, full).items():
            if time.time() - start > args.budget_s:
                rec.result["stopped_early"] = True
                break
            entry: dict = {"config": asdict(cfg)}
            try:
                q, p, scales = launcher._prepare(Q, P, "dot")
                kernel = partial(launcher._launch, mod, "dot", q, p, scales, cfg, None)
                entry["probe_ms"] = bench(partial(kernel, probe=1))
                entry["search_kernel_ms"] = bench(kernel)
                entry["search_ms"] = bench(partial(launcher.similarity_topk_triton, Q, P, k, config=cfg))
                _, idx = launcher.similarity_topk_triton(Q, P, k, config=cfg)
                entry["fallback_rows"] = launcher.last_fallback_rows
                entry["recall_first64"] = recall(idx[:R], ref)
                entry["topk_share"] = round(1 - entry["probe_ms"] / entry["search_kernel_ms"], 3)
                entry["speedup_vs_dense"] = round(row["dense_ms"] / entry["search_ms"], 3)
            except Exception as e:  # out of registers / shared memory: record and go on
                entry["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            row["configs"][name] = entry
        rec.add(row)
        if rec.result["stopped_early"]:
            print(f"budget of {args.budget_s}s spent: stopping", flush=True)
            break
    rec.save()
    print(f"wrote {rec.path}")


if __name__ == "__main__":
    main()
