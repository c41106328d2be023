"""Static SASS count per tile of the search kernels (sm_90, no GPU needed): lazy against binmax.

    python benchmarks/sass_tile_count.py [--B 512] [--k 100] [--sim cosine] [--dtype bf16]
    PYTHONPATH=/tmp/t36 python benchmarks/sass_tile_count.py    # another triton (3.6 here)

Compiles the table config of each algorithm with ``joint_rag.kernels.compile_check`` (the run-time
specialisation), disassembles it with the bundled ``cuobjdump -sass`` and finds, from the branch
targets, the ``tl.dot`` loop (the innermost backward branch around the ``HGMMA``s) and the tile
loop (the innermost backward branch around that). Reported per config:

- ``dot_loop``: instructions of one d-step (runs D / BLOCK_D times per tile);
- ``per_tile``: instructions of the tile loop outside the dot loop (run once per tile): the tile's
  load prologue, the epilogue (scaling, masks, bin maxima or top-k bookkeeping) and loop control;
- ``per_tile_unconditional``: the part of ``per_tile`` not skipped by any forward conditional
  branch (the lazy kernel's rounds and buffer flush are conditional; binmax has no such blocks);
- opcode counts of ``per_tile`` (SEL, ISETP, FMNMX, SHFL, STS, LDS, BAR, HGMMA, ...).

A static count, not a timing: every instruction of the tile loop is counted once, whichever
branch runs. Appends one record per (triton version, algorithm) to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "sass_tile_count_sm90.json"
LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse(sass: str) -> list[tuple[int, bool, str, int | None]]:
    """(address, predicated, opcode, branch target) per instruction."""
    out = []
    for m in LINE.finditer(sass):
        addr, pred, op, rest = int(m.group(1), 16), bool(m.group(2)), m.group(3), m.group(4)
        target = None
        if op.startswith("BRA"):
            t = re.search(r"0x([0-9a-f]+)", rest)
            target = int(t.group(1), 16) if t else None
        out.append((addr, pred, op, target))
    return out


def loops(instrs) -> list[tuple[int, int]]:
    """Backward branches as (start, end) address ranges."""
    return sorted((t, a) for a, _, op, t in instrs if op.startswith("BRA") and t is not None and t < a)


def count(sass: str) -> dict:
    instrs = parse(sass)
    ranges = loops(instrs)
    mma = [a for a, _, op, _ in instrs if op.startswith("HGMMA")]
    if not mma:
        raise ValueError("no HGMMA in the kernel (not an sm_90 tensor-core build?)")
    inside = lambda r, a: r[0] <= a <= r[1]  # noqa: E731
    dot = min((r for r in ranges if all(inside(r, a) for a in mma)), key=lambda r: r[1] - r[0])
    tile = min(
        (r for r in ranges if r != dot and r[0] <= dot[0] and dot[1] <= r[1]), key=lambda r: r[1] - r[0]
    )
    # forward conditional branches inside the tile loop skip [branch, target): conditional code
    skipped = [(a, t) for a, pred, op, t in instrs if op.startswith("BRA") and pred and t and t > a]
    in_tile = [x for x in instrs if inside(tile, x[0]) and not inside(dot, x[0])]
    cond = lambda a: any(s < a < t for s, t in skipped if inside(tile, s) and not inside(dot, s))  # noqa: E731
    ops = collections.Counter(op.split(".")[0] for _, _, op, _ in in_tile)
    keep = ("SEL", "ISETP", "FSETP", "FMNMX", "IMNMX", "FMUL", "SHFL", "STS", "LDS", "BAR", "LDGSTS", "STG")
    return {
        "instructions_total": len(instrs),
        "dot_loop": sum(1 for a, *_ in instrs if inside(dot, a)),
        "hgmma_per_dot_step": len(mma),
        "per_tile": len(in_tile),
        "per_tile_unconditional": sum(1 for a, *_ in in_tile if not cond(a)),
        "per_tile_ops": {op: ops.get(op, 0) for op in keep},
    }


def sass_of(compiled) -> str:
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin", delete=False) as f:
        f.write(compiled.asm["cubin"])
    try:
        return subprocess.run([str(tool), "-sass", f.name], capture_output=True, text=True, check=True).stdout
    finally:
        Path(f.name).unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--B", type=int, default=512)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--N", type=int, default=1_000_000)
    parser.add_argument("--D", type=int, default=768)
    parser.add_argument("--sim", default="cosine", choices=["dot", "cosine"])
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--algos", nargs="+", default=["lazy", "binmax"], choices=["lazy", "merge", "binmax"])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    import triton

    from joint_rag.atomic import write_json
    from joint_rag.kernels.compile_check import compile_kernel
    from joint_rag.kernels.configs import choose_config

    data = (
        json.loads(args.out.read_text())
        if args.out.is_file()
        else {"benchmark": "sass_tile_count", "runs": []}
    )
    for algo in args.algos:
        cfg = choose_config(args.sim, args.B, args.k, DTYPES[args.dtype], N=args.N, D=args.D, algo=algo)
        record = {
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "triton": triton.__version__,
            "arch": "sm_90",
            "algo": algo,
            "case": {
                "similarity": args.sim,
                "dtype": args.dtype,
                "B": args.B,
                "k": args.k,
                "N": args.N,
                "D": args.D,
            },
            "config": cfg.__dict__,
            **count(sass_of(compile_kernel(args.sim, DTYPES[args.dtype], cfg, 90))),
        }
        key = lambda r: (r["triton"], r["algo"], json.dumps(r["case"], sort_keys=True))  # noqa: E731
        data["runs"] = [r for r in data["runs"] if key(r) != key(record)] + [record]
        print(
            json.dumps(
                {k: record[k] for k in ("triton", "algo", "dot_loop", "per_tile", "per_tile_unconditional")}
            )
        )
        print("   ", record["per_tile_ops"], flush=True)
    data["machine"] = "no GPU: static compile for sm_90 with the triton wheel's ptxas and cuobjdump"
    write_json(args.out, data)


if __name__ == "__main__":
    sys.exit(main())
