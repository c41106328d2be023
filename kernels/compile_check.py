"""Compile the Triton kernels for a GPU architecture without a GPU, and report their resources.

Triton's CUDA backend and its bundled ptxas run on any machine, so this catches compile errors
and register spills of the launcher's config table before a GPU session:

    python -m joint_rag.kernels.compile_check            # sm_90 (H100/H200), the whole table
    python -m joint_rag.kernels.compile_check --quick    # three configs (a test runs this)
    python -m joint_rag.kernels.compile_check --algo lazy --dtype bf16   # part of the table

Per config it prints registers per thread, local memory (spills) and shared memory. Exit status:
0 all compiled, 1 a config failed, 77 this triton has no CUDA backend/ptxas (nothing checked).
Must run without TRITON_INTERPRET (a fresh process): triton fixes its mode at import.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .launcher import TopkConfig, _pow2, choose_config

TRITON_DTYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
DOT_ARGS = [
    "q_ptr",
    "p_ptr",
    "q_scale_ptr",
    "p_scale_ptr",
    "out_ptr",
    "bound_ptr",
    "B",
    "N",
    "D",
    "stride_qb",
    "stride_pn",
    "n_per_split",
    "num_splits",
]
BINMAX_ARGS = [*DOT_ARGS[:4], "bmax_ptr", *DOT_ARGS[6:], "NB"]
RESCORE_ARGS = [*DOT_ARGS[:4], "bins_ptr", "out_ptr", "B", "N", "D", "stride_qb", "stride_pn", "KB"]
MAXSIM_ARGS = [
    "q_ptr",
    "p_ptr",
    "out_ptr",
    "bound_ptr",
    "B",
    "N",
    "D",
    "M",
    "MP",
    "stride_qb",
    "stride_qm",
    "stride_pn",
    "stride_pm",
    "n_per_split",
    "num_splits",
]


def _signature(names: list[str], dtype: str, constexprs: dict) -> dict[str, str]:
    ptrs = {
        "q_ptr": f"*{dtype}",
        "p_ptr": f"*{dtype}",
        "q_scale_ptr": "*fp32",
        "p_scale_ptr": "*fp32",
        "out_ptr": "*i64",
        "bound_ptr": "*fp32",
        "bmax_ptr": "*fp32",
        "bins_ptr": "*i64",
    }
    sig = {n: ptrs.get(n, "i32") for n in names}
    sig.update({n: "constexpr" for n in constexprs})
    return sig


def compile_kernel(
    similarity: str,
    dtype: torch.dtype,
    cfg: TopkConfig,
    arch: int = 90,
    m: int = 1,
    mp: int = 1,
    probe: int = 0,
    rescore: bool = False,
):
    """triton.compile one kernel specialisation for ``sm_<arch>``; returns the CompiledKernel.
    ``probe=1``: the dot kernel's timing probe (``PROBE``). A binmax config (``cfg.bins``) compiles
    pass 1 (``dot_binmax_kernel``), or pass 2 (``bin_rescore_kernel``) with ``rescore=True``."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import similarity_kernels as mod

    t = TRITON_DTYPES[dtype]
    precision = "ieee" if dtype == torch.float32 else None
    if similarity == "maxsim":
        fn, names = mod.maxsim_topk_kernel, MAXSIM_ARGS
        consts = {
            "DOT_PRECISION": precision, "K_PAD": cfg.k_pad, "LAZY_M": cfg.lazy_m, "BLOCK_B": cfg.block_b,
            "BLOCK_N": cfg.block_n, "SUB_N": cfg.sub_n, "BLOCK_D": cfg.block_d, "M_PAD": _pow2(m), "MP_PAD": _pow2(mp), "GROUP_B": cfg.group_b,
        }  # fmt: skip
    elif cfg.bins and rescore:
        from .binmax import BLOCK_R, binmax_layout, rescore_block_d

        span, w, _ = binmax_layout(1, cfg)  # span and bin width do not depend on N
        fn, names = mod.bin_rescore_kernel, RESCORE_ARGS
        consts = {
            "HAS_SCALE": similarity != "dot", "BINS": cfg.bins, "SPAN": span, "W": w, "BLOCK_R": BLOCK_R,
            "BLOCK_D": rescore_block_d(w),
        }  # fmt: skip
    elif cfg.bins:
        fn, names = mod.dot_binmax_kernel, BINMAX_ARGS
        consts = {
            "HAS_SCALE": similarity != "dot", "DOT_PRECISION": precision, "BLOCK_B": cfg.block_b,
            "BLOCK_N": cfg.block_n, "BLOCK_D": cfg.block_d, "BINS": cfg.bins, "SPAN_TILES": cfg.span_tiles,
            "GROUP_B": cfg.group_b,
        }  # fmt: skip
    else:
        fn, names = mod.dot_topk_kernel, DOT_ARGS
        consts = {
            "HAS_SCALE": similarity != "dot", "DOT_PRECISION": precision, "K_PAD": cfg.k_pad, "LAZY_M": cfg.lazy_m,
            "BLOCK_B": cfg.block_b,
            "BLOCK_N": cfg.block_n, "BLOCK_D": cfg.block_d, "GROUP_B": cfg.group_b, "PROBE": probe,
        }  # fmt: skip
    # what the launcher's JIT specialises at run time for the benchmark shapes: 16-byte aligned
    # pointers, and D and the row strides divisible by 16 (d = 768, 4096); without these hints the
    # loads are not vectorised and not pipelined, and the report would not match the GPU's binary
    aligned = [i for i, n in enumerate(names) if n.endswith("_ptr") or n == "D" or n.startswith("stride")]
    attrs = {(i,): [["tt.divisibility", 16]] for i in aligned}
    src = ASTSource(fn=fn, signature=_signature(names, t, consts), constexprs=consts, attrs=attrs)
    options = (
        {"num_warps": 4, "num_stages": 2}
        if rescore
        else {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    )
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)


def resources(compiled) -> dict[str, int]:
    """Registers per thread, local (spill) bytes and shared bytes, read with the bundled cuobjdump."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin", delete=False) as f:
        f.write(compiled.asm["cubin"])
    try:
        out = subprocess.run(
            [str(tool), "-res-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
    finally:
        os.unlink(f.name)
    fields = dict(
        x.split(":", 1) for x in next(line for line in out.splitlines() if "REG:" in line).split() if ":" in x
    )
    return {
        "regs": int(fields["REG"]),
        "local": int(fields["LOCAL"]),
        "shared": int(compiled.metadata.shared),
    }


def table_cases(quick: bool) -> list[tuple[str, str, torch.dtype, int, int, int, int]]:
    """(algo, similarity, dtype, B, k, M, M') cases whose table configs get compiled (N = 1e6)."""
    if quick:
        return [
            ("lazy", "cosine", torch.bfloat16, 1024, 10, 1, 1),
            ("merge", "cosine", torch.bfloat16, 1024, 10, 1, 1),
            ("lazy", "maxsim", torch.bfloat16, 64, 10, 8, 8),
            ("binmax", "cosine", torch.bfloat16, 512, 100, 1, 1),
        ]
    cases = []
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for B, k in [(1, 10), (64, 10), (1024, 10), (1, 100), (512, 100), (4096, 100)]:
            cases.append(("binmax", "dot" if B == 1 else "cosine", dtype, B, k, 1, 1))
    for algo in ("lazy", "merge"):
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            for B, k in [
                (1, 1), (1, 10), (64, 10), (1024, 10), (4096, 10),
                (1, 100), (64, 100), (512, 100), (1024, 100), (4096, 100), (64, 256),
            ]:  # fmt: skip
                cases.append((algo, "dot" if B == 1 else "cosine", dtype, B, k, 1, 1))
            for B, k, m, mp in [(64, 10, 8, 8), (64, 100, 16, 16), (1, 10, 4, 32), (256, 128, 32, 32)]:
                cases.append((algo, "maxsim", dtype, B, k, m, mp))
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", type=int, default=90, help="compute capability x10 (90: H100/H200)")
    parser.add_argument("--quick", action="store_true", help="three configs only")
    parser.add_argument("--algo", choices=["lazy", "merge", "binmax"], help="only this algorithm's table")
    parser.add_argument("--dtype", choices=sorted(TRITON_DTYPES.values()), help="only this input dtype")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        parser.error("unset TRITON_INTERPRET: compiling needs triton imported in compiled mode")
    try:
        import triton

        if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump").exists():
            raise ImportError("no bundled CUDA tools")
    except ImportError as e:
        print(f"nothing checked: {e}")
        return 77
    failed = 0
    for algo, sim, dtype, B, k, m, mp in table_cases(args.quick):
        if (args.algo and algo != args.algo) or (args.dtype and TRITON_DTYPES[dtype] != args.dtype):
            continue
        cfg = choose_config(sim, B, k, dtype, m, mp, algo=algo)
        label = f"{algo:5s} {sim:7s} {TRITON_DTYPES[dtype]} B={B:<5d} k={k:<4d} M={m:<3d} M'={mp:<3d} {cfg}"
        for rescore in (False, True) if cfg.bins else (False,):
            name = f"{label}{' pass 2' if rescore else ''}"
            t0 = time.time()
            try:
                r = resources(compile_kernel(sim, dtype, cfg, args.arch, m, mp, rescore=rescore))
            except Exception as e:  # report every config, then fail
                failed += 1
                print(f"FAILED {name}: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
                continue
            spill = "  SPILLS" if r["local"] else ""
            print(
                f"ok {name} regs={r['regs']} local={r['local']} shared={r['shared']} "
                f"({time.time() - t0:.1f}s){spill}",
                flush=True,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
