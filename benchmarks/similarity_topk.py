"""Benchmark: fused similarity + top-k (joint_rag.kernels) against dense torch.topk(q @ P.T) and faiss.

CPU (default): the chunked torch path vs faiss-cpu ``IndexFlatIP.search`` (index prebuilt) vs
dense ``torch.topk(q @ P.T, k)``, fp32, medians over interleaved repeats, peak extra RSS per call.
CUDA: ``similarity_topk`` (backend triton: the Triton kernel with lazy merging, or the dense
fp32 path for searches whose scores fit in 64 MiB; ``triton_fused_path`` says which, and then
``triton_kernel`` times the kernel too) vs dense torch, ``torch.compile`` of dense,
and faiss GPU flat IP when installed; the two-pass binned-max algorithm (``triton_binmax``,
``kernels/binmax.py``; ``binmax_recall_vs_dense``: its top-k against the dense fp32 path's on the
first 64 queries), the dense fp32 path at every shape that fits (``dense_path``) and the bf16
matmul alone (``matmul``, the floor an exact search can reach); on the first (N, D) of the sweep
(the issue's target shape) also the previous Triton algorithm (``triton_fused_merge``, whole-tile
merges) in the same run;
bf16; median times with the L2 flushed (``triton.testing.do_bench``), achieved GB/s and TFLOP/s,
peak extra CUDA memory per call, and how many queries the lazy kernel recomputed with torch.

    python benchmarks/similarity_topk.py --device cpu            # writes results/similarity_topk_cpu.json
    python benchmarks/similarity_topk.py --device cuda --quick   # writes results/similarity_topk_h100.json
"""

from __future__ import annotations

import os

# as joint_rag/__init__.py does, before torch/faiss load libgomp: spinning idle OpenMP threads of
# one library would slow the other one in this interleaved benchmark
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from joint_rag.atomic import atomic_write  # noqa: E402
from joint_rag.kernels import (  # noqa: E402
    dispatch,  # noqa: E402
    similarity_topk,
    similarity_topk_torch,
    similarity_topk_triton,
)
from joint_rag.kernels import launcher as triton_launcher  # noqa: E402
from joint_rag.kernels.reference import DEFAULT_CHUNK_ELEMENTS, default_chunk, topk_chunk  # noqa: E402
from joint_rag.provenance import cpu_model  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def device_tag(device: str) -> str:
    """cpu, h100, h200, or the CUDA device name in lower snake case."""
    if device == "cpu":
        return "cpu"
    name = torch.cuda.get_device_name().lower()
    for tag in ("h100", "h200", "a100", "b200"):
        if tag in name:
            return tag
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_")


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device != "cpu" else cpu_model()


class Recorder:
    """Holds the result dict and rewrites the JSON after every row (a killed run keeps its rows)."""

    def __init__(self, path: Path, header: dict) -> None:
        self.path, self.result = path, {**header, "rows": []}
        path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict) -> None:
        self.result["rows"].append(row)
        print(json.dumps(row), flush=True)
        self.save()

    def save(self) -> None:
        """Write through joint_rag.atomic, so a killed run never leaves half a JSON."""
        atomic_write(self.path, json.dumps(self.result, indent=1) + "\n")


# ---- CPU ---------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return -1


def fixed_mmap_threshold() -> None:
    """glibc: serve allocations >= 128 KiB by mmap and unmap them on free (no dynamic threshold),
    so every call's large buffers show up in its peak RSS instead of being reused from the heap."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def peak_rss_mib(fn: Callable[[], object]) -> float | None:
    """Peak resident memory added by one call (Linux: VmHWM after resetting it), MiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    base = _status_kib("VmRSS")
    fn()
    return round((_status_kib("VmHWM") - base) / 1024, 1)


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per method; methods alternate within each repeat so load spikes from other
    processes hit all of them alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def cpu_methods(Q: torch.Tensor, P: torch.Tensor, k: int, index) -> dict[str, Callable[[], object]]:
    """The three CPU methods on (B, D) queries and (N, D) passages (``index`` holds P)."""
    qn = Q.numpy()
    return {
        "torch_chunked": lambda: similarity_topk_torch(Q, P, k),
        "faiss_flat_ip": lambda: index.search(qn, k),
        "torch_dense": lambda: torch.topk(Q @ P.T, k),
    }


def cpu_sweep(args: argparse.Namespace, rec: Recorder) -> None:
    import faiss

    fixed_mmap_threshold()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    rec.result.update(threads=args.threads, faiss=faiss.__version__)
    # (N, D, batch sizes): the CUDA shapes that fit this machine in reasonable time
    # (fp32 passages plus faiss's own copy: N = 1e6, d = 4096 would need 32 GB)
    shapes = (
        [(20_000, 768, [1, 16])]
        if args.quick
        else [
            (100_000, 768, [1, 16, 64, 256, 1024]),
            (100_000, 4096, [1, 16, 64, 256]),
            (1_000_000, 768, [1, 16, 64, 256]),
        ]
    )
    ks = [10] if args.quick else [10, 100]
    for N, D, Bs in shapes:
        g = torch.Generator().manual_seed(0)
        P = torch.randn(N, D, generator=g)  # (N, D)
        index = faiss.IndexFlatIP(D)
        index.add(P.numpy())
        for B in Bs:
            Q = torch.randn(B, D, generator=g)  # (B, D)
            for k in ks:
                fns = cpu_methods(Q, P, k, index)
                med = interleaved_medians(fns, args.repeats)
                row = {"N": N, "B": B, "D": D, "k": k, "dtype": "float32", "chunk": min(N, topk_chunk(B, k))}
                for name, fn in fns.items():
                    row[f"{name}_ms"] = round(med[name] * 1e3, 2)
                    row[f"{name}_peak_mib"] = peak_rss_mib(fn)
                row["ratio_vs_faiss"] = round(med["torch_chunked"] / med["faiss_flat_ip"], 3)
                row["ratio_vs_dense"] = round(med["torch_chunked"] / med["torch_dense"], 3)
                rec.add(row)
        if not args.quick and (N, D) == (100_000, 768):
            rec.result["chunk_tuning"] = chunk_tuning(P, args.repeats)
            rec.save()
        del index, P


def chunk_tuning(P: torch.Tensor, repeats: int) -> list[dict]:
    """Time the torch path over score-buffer budgets (B * chunk fp32 values) at k=10."""
    out = []
    for B in (16, 256):
        Q = torch.randn(B, P.shape[1])
        exps = (17, 19, 21, 23)
        fns = {
            str(e): partial(similarity_topk_torch, Q, P, 10, chunk_size=default_chunk(B, elements=2**e))
            for e in exps
        }
        med = interleaved_medians(fns, repeats)
        for e in exps:
            out.append(
                {
                    "N": P.shape[0],
                    "B": B,
                    "k": 10,
                    "elements": 2**e,
                    "chunk": default_chunk(B, elements=2**e),
                    "ms": round(med[str(e)] * 1e3, 2),
                }
            )
            print(json.dumps(out[-1]), flush=True)
    return out


# ---- CUDA --------------------------------------------------------------------------------------


def cuda_peak_mib(fn: Callable[[], object]) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)


def faiss_gpu_search(P: torch.Tensor) -> Callable[[torch.Tensor, int], object] | None:
    """faiss GPU flat IP over fp16 storage, searched with torch tensors; None if not installed."""
    try:
        import faiss
        import faiss.contrib.torch_utils  # noqa: F401  (torch tensors in/out)
    except ImportError:
        return None
    if not hasattr(faiss, "StandardGpuResources"):
        return None
    res = faiss.StandardGpuResources()
    cfg = faiss.GpuIndexFlatConfig()
    cfg.useFloat16 = True
    cfg.device = torch.cuda.current_device()
    index = faiss.GpuIndexFlatIP(res, P.shape[1], cfg)
    index.add(P.float())
    return lambda Q, k: index.search(Q.float(), k)


def cuda_sweep(args: argparse.Namespace, rec: Recorder) -> None:
    from triton.testing import do_bench

    dense = lambda Q, P, k: torch.topk(Q @ P.T, k)  # noqa: E731
    compiled = torch.compile(dense, dynamic=True)
    # the target shape (N=1e6, d=768) first, so a sweep cut short by its budget keeps it
    NDs = (
        [(100_000, 768)]
        if args.quick
        else [(1_000_000, 768), (100_000, 768), (1_000_000, 4096), (100_000, 4096)]
    )
    Bs = [1, 64, 1024] if args.quick else [1, 16, 64, 256, 512, 1024, 4096]
    ks = [10, 100]
    start = time.time()
    rec.result["stopped_early"] = False
    for N, D in NDs:
        P = torch.randn(N, D, device="cuda", dtype=torch.bfloat16)  # (N, D)
        fg = faiss_gpu_search(P) if N * D <= 1_000_000 * 4096 else None
        for B in Bs:
            Q = torch.randn(B, D, device="cuda", dtype=torch.bfloat16)  # (B, D)
            for k in ks:
                if time.time() - start > args.budget_s:
                    print(f"budget of {args.budget_s}s spent: stopping the sweep", flush=True)
                    rec.result["stopped_early"] = True
                    rec.save()
                    return
                fns = {
                    "triton_fused": partial(similarity_topk, Q, P, k, backend="triton"),
                    "triton_binmax": partial(similarity_topk_triton, Q, P, k, algo="binmax"),
                    "torch_dense": partial(dense, Q, P, k),
                    "matmul": partial(torch.mm, Q, P.T),
                }
                if not args.no_compile:
                    fns["torch_compile"] = partial(compiled, Q, P, k)
                if 4 * B * N <= 24 * 2**30:
                    fns["dense_path"] = partial(dispatch.dense_topk, Q, P, k, "dot")
                if NDs[0] == (N, D) and not args.no_merge:  # old algorithm, target shape only
                    fns["triton_fused_merge"] = partial(similarity_topk_triton, Q, P, k, algo="merge")
                if fg is not None:
                    fns["faiss_gpu_flat_ip"] = partial(fg, Q, k)
                row = {"N": N, "B": B, "D": D, "k": k, "dtype": "bfloat16"}
                fns["triton_fused"]()
                # which path similarity_topk took: "dense" (small searches) or "triton" (the kernel)
                row["triton_fused_path"] = dispatch.last_path
                if dispatch.last_path != "triton":  # time the kernel too
                    fns["triton_kernel"] = partial(similarity_topk_triton, Q, P, k)
                fns.get("triton_kernel", fns["triton_fused"])()
                row["triton_fallback_rows"] = triton_launcher.last_fallback_rows  # torch-recomputed queries
                try:
                    got = fns["triton_binmax"]()[1][:64]
                    row["binmax_tied_rows"] = triton_launcher.last_fallback_rows
                    want = dispatch.dense_topk(Q[:64], P, k, "dot")[1]
                    row["binmax_recall_vs_dense"] = round(
                        sum(len(set(a) & set(b)) for a, b in zip(got.tolist(), want.tolist())) / want.numel(),
                        5,
                    )
                except Exception as e:  # reported in the row, the sweep goes on
                    row["binmax_error"] = f"{type(e).__name__}: {str(e)[:200]}"
                row["triton_config"] = str(triton_launcher.choose_config(
                    "dot", B, k, Q.dtype, N=N, num_sms=triton_launcher.device_sms(Q.device)
                ))  # fmt: skip
                bytes_moved = (N * D + B * D) * 2 + B * k * 12
                for name, fn in fns.items():
                    try:
                        ms = do_bench(fn, warmup=10, rep=50, return_mode="median")
                        row[f"{name}_ms"] = round(ms, 4)
                        row[f"{name}_GBps"] = round(bytes_moved / ms / 1e6, 1)
                        row[f"{name}_TFLOPs"] = round(2 * B * N * D / ms / 1e9, 2)
                        row[f"{name}_peak_mib"] = cuda_peak_mib(fn)
                    except torch.OutOfMemoryError:
                        row[f"{name}_ms"] = "OOM"
                        torch.cuda.empty_cache()
                    except Exception as e:  # a failing baseline (e.g. torch.compile) must not end the sweep
                        row[f"{name}_ms"] = f"error: {type(e).__name__}: {str(e)[:200]}"
                if isinstance(row.get("torch_dense_ms"), float) and isinstance(
                    row.get("triton_fused_ms"), float
                ):
                    row["speedup_vs_dense"] = round(row["torch_dense_ms"] / row["triton_fused_ms"], 3)
                for name in ("triton_binmax", "dense_path"):
                    if isinstance(row.get(f"{name}_ms"), float) and isinstance(
                        row.get("torch_dense_ms"), float
                    ):
                        row[f"{name}_speedup_vs_dense"] = round(row["torch_dense_ms"] / row[f"{name}_ms"], 3)
                if isinstance(row.get("triton_binmax_ms"), float) and isinstance(row.get("matmul_ms"), float):
                    row["binmax_over_matmul"] = round(row["triton_binmax_ms"] / row["matmul_ms"], 3)
                if isinstance(row.get("triton_fused_merge_ms"), float) and isinstance(
                    row.get("triton_fused_ms"), float
                ):
                    row["speedup_vs_merge"] = round(row["triton_fused_merge_ms"] / row["triton_fused_ms"], 3)
                rec.add(row)
        del P, fg
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="a few small shapes (smoke run)")
    parser.add_argument("--repeats", type=int, default=5, help="CPU: timed repeats per method")
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="CPU: torch and faiss threads"
    )
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="CUDA: stop the sweep after this many seconds"
    )
    parser.add_argument(
        "--no-merge", action="store_true", help="CUDA: skip the previous Triton algorithm's column"
    )
    parser.add_argument("--no-compile", action="store_true", help="CUDA: skip the torch.compile column")
    parser.add_argument(
        "--out-dir", type=Path, default=RESULTS, help="writes <out-dir>/similarity_topk_<device>.json"
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible")
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    header = {
        "benchmark": "similarity_topk",
        "device": device_name(args.device),
        "device_tag": device_tag(args.device),
        "torch": torch.__version__,
        "triton": triton_version,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "default_chunk_elements": DEFAULT_CHUNK_ELEMENTS,
        # the card's nominal HBM bandwidth (datasheet), for the "80% of bandwidth" target
        "peak_GBps": {"h100": 3350, "h200": 4800}.get(device_tag(args.device)),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_before": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    rec = Recorder(args.out_dir / f"similarity_topk_{device_tag(args.device)}.json", header)
    (cpu_sweep if args.device == "cpu" else cuda_sweep)(args, rec)
    rec.result["loadavg_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    rec.save()
    print(f"wrote {rec.path}")


if __name__ == "__main__":
    main()
