"""Measured dispatch table: which CUDA path was faster at the benchmarked shapes (run 3, H200).

``similarity_topk`` on CUDA asks ``measured_path`` which of its two paths to take:

- ``dense``: ``dispatch.dense_topk`` (one matmul with fp32 output, then ``torch.topk``); extra
  memory B * N * 4 bytes;
- ``triton``: the fused kernel (``launcher.similarity_topk_triton``, the lazy algorithm); extra
  memory O(B * k).

The table holds, per benchmarked (N, D, B, k) of ``benchmarks/similarity_topk.py --device cuda``,
the kernel's time and the dense path's time. Where the sweep took the dense path both were
timed. Where it took the kernel, the dense path was not timed, only plain ``torch.topk(q @ P.T)``
(bf16 scores); its time there is *estimated* as plain dense / ``ratio``, where ratio is the
lowest plain-dense / dense-path ratio seen where both were timed (0.804 in run 3), i.e. the dense
path's worst measured overhead, and the row is marked ``dense_measured=False``. A query shape uses
the nearest benchmarked one (log scale in each of N, D, B, k) when it lies within a factor of two
of the benchmarked range in every dimension and the dtype is 16-bit (the sweep ran bf16; fp16
runs the same tensor-core paths); otherwise ``None`` (dispatch keeps its 64 MiB rule).

Regenerate after a GPU sweep (prints the ``TABLES`` entry to paste here):

    python -m joint_rag.kernels.measured benchmarks/results/similarity_topk_h200.json

A test checks that the entry below equals what this builds from the committed JSON.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import NamedTuple

import torch


class Row(NamedTuple):
    N: int
    D: int
    B: int
    k: int
    kernel_ms: float
    dense_ms: float
    dense_measured: bool


def build(bench: dict) -> dict:
    """A ``TABLES`` entry from a CUDA benchmark JSON (benchmarks/similarity_topk.py)."""
    rows = [r for r in bench["rows"] if isinstance(r.get("triton_fused_ms"), float)]
    dense_rows = [
        r for r in rows if r["triton_fused_path"] == "dense" and isinstance(r.get("torch_dense_ms"), float)
    ]
    ratio = round(min(r["torch_dense_ms"] / r["triton_fused_ms"] for r in dense_rows), 4)
    out = []
    for r in rows:
        if r["triton_fused_path"] == "dense":
            kernel, dense, measured = r.get("triton_kernel_ms"), r["triton_fused_ms"], True
        else:
            kernel, dense, measured = r["triton_fused_ms"], r["torch_dense_ms"] / ratio, False
        if isinstance(kernel, float) and isinstance(dense, float):
            out.append(Row(r["N"], r["D"], r["B"], r["k"], kernel, round(dense, 4), measured))
    return {"device": bench["device"], "date": bench["date"], "ratio": ratio, "rows": out}


TABLES: dict[str, dict] = {
    "NVIDIA H200": {
        "device": "NVIDIA H200",
        "date": "2026-11-26T04:49:55+00:00",
        "ratio": 0.804,
        "rows": [
            Row(N=1000000, D=768, B=1, k=10, kernel_ms=0.6486, dense_ms=0.5013, dense_measured=True),
            Row(N=1000000, D=768, B=1, k=100, kernel_ms=0.6357, dense_ms=0.5053, dense_measured=True),
            Row(N=1000000, D=768, B=16, k=10, kernel_ms=0.8121, dense_ms=0.675, dense_measured=True),
            Row(N=1000000, D=768, B=16, k=100, kernel_ms=0.7697, dense_ms=0.6758, dense_measured=True),
            Row(N=1000000, D=768, B=64, k=10, kernel_ms=0.9252, dense_ms=1.2243, dense_measured=False),
            Row(N=1000000, D=768, B=64, k=100, kernel_ms=1.0451, dense_ms=1.2282, dense_measured=False),
            Row(N=1000000, D=768, B=256, k=10, kernel_ms=1.8193, dense_ms=3.1507, dense_measured=False),
            Row(N=1000000, D=768, B=256, k=100, kernel_ms=2.0464, dense_ms=3.1704, dense_measured=False),
            Row(N=1000000, D=768, B=512, k=10, kernel_ms=2.863, dense_ms=6.0493, dense_measured=False),
            Row(N=1000000, D=768, B=512, k=100, kernel_ms=3.6583, dense_ms=6.0384, dense_measured=False),
            Row(N=1000000, D=768, B=1024, k=10, kernel_ms=5.313, dense_ms=11.7988, dense_measured=False),
            Row(N=1000000, D=768, B=1024, k=100, kernel_ms=6.7574, dense_ms=11.796, dense_measured=False),
            Row(N=1000000, D=768, B=4096, k=10, kernel_ms=30.2461, dense_ms=52.0784, dense_measured=False),
            Row(N=1000000, D=768, B=4096, k=100, kernel_ms=32.1787, dense_ms=52.3124, dense_measured=False),
            Row(N=100000, D=768, B=1, k=10, kernel_ms=0.3172, dense_ms=0.1247, dense_measured=True),
            Row(N=100000, D=768, B=1, k=100, kernel_ms=0.3437, dense_ms=0.1245, dense_measured=True),
            Row(N=100000, D=768, B=16, k=10, kernel_ms=0.3007, dense_ms=0.1415, dense_measured=True),
            Row(N=100000, D=768, B=16, k=100, kernel_ms=0.3264, dense_ms=0.1425, dense_measured=True),
            Row(N=100000, D=768, B=64, k=10, kernel_ms=0.3409, dense_ms=0.2016, dense_measured=True),
            Row(N=100000, D=768, B=64, k=100, kernel_ms=0.3917, dense_ms=0.2031, dense_measured=True),
            Row(N=100000, D=768, B=256, k=10, kernel_ms=0.6964, dense_ms=0.4621, dense_measured=False),
            Row(N=100000, D=768, B=256, k=100, kernel_ms=0.6366, dense_ms=0.4607, dense_measured=False),
            Row(N=100000, D=768, B=512, k=10, kernel_ms=0.7661, dense_ms=0.7373, dense_measured=False),
            Row(N=100000, D=768, B=512, k=100, kernel_ms=0.7709, dense_ms=0.7397, dense_measured=False),
            Row(N=100000, D=768, B=1024, k=10, kernel_ms=1.0148, dense_ms=1.3234, dense_measured=False),
            Row(N=100000, D=768, B=1024, k=100, kernel_ms=1.2503, dense_ms=1.3281, dense_measured=False),
            Row(N=100000, D=768, B=4096, k=10, kernel_ms=3.3659, dense_ms=4.8303, dense_measured=False),
            Row(N=100000, D=768, B=4096, k=100, kernel_ms=5.1673, dense_ms=4.8468, dense_measured=False),
            Row(N=1000000, D=4096, B=1, k=10, kernel_ms=2.3824, dense_ms=2.063, dense_measured=True),
            Row(N=1000000, D=4096, B=1, k=100, kernel_ms=2.2071, dense_ms=2.0612, dense_measured=True),
            Row(N=1000000, D=4096, B=16, k=10, kernel_ms=2.1535, dense_ms=2.3019, dense_measured=True),
            Row(N=1000000, D=4096, B=16, k=100, kernel_ms=2.2089, dense_ms=2.3057, dense_measured=True),
            Row(N=1000000, D=4096, B=64, k=10, kernel_ms=2.804, dense_ms=3.3624, dense_measured=False),
            Row(N=1000000, D=4096, B=64, k=100, kernel_ms=2.9512, dense_ms=3.3555, dense_measured=False),
            Row(N=1000000, D=4096, B=256, k=10, kernel_ms=5.2624, dense_ms=6.3994, dense_measured=False),
            Row(N=1000000, D=4096, B=256, k=100, kernel_ms=5.9635, dense_ms=6.4801, dense_measured=False),
            Row(N=1000000, D=4096, B=512, k=10, kernel_ms=10.0313, dense_ms=12.4348, dense_measured=False),
            Row(N=1000000, D=4096, B=512, k=100, kernel_ms=10.7649, dense_ms=11.8811, dense_measured=False),
            Row(N=1000000, D=4096, B=1024, k=10, kernel_ms=19.3704, dense_ms=24.4904, dense_measured=False),
            Row(N=1000000, D=4096, B=1024, k=100, kernel_ms=20.7957, dense_ms=25.7204, dense_measured=False),
            Row(N=1000000, D=4096, B=4096, k=10, kernel_ms=93.7207, dense_ms=101.2478, dense_measured=False),
            Row(N=1000000, D=4096, B=4096, k=100, kernel_ms=96.31, dense_ms=101.924, dense_measured=False),
            Row(N=100000, D=4096, B=1, k=10, kernel_ms=0.4097, dense_ms=0.2864, dense_measured=True),
            Row(N=100000, D=4096, B=1, k=100, kernel_ms=0.4375, dense_ms=0.2845, dense_measured=True),
            Row(N=100000, D=4096, B=16, k=10, kernel_ms=0.4342, dense_ms=0.3028, dense_measured=True),
            Row(N=100000, D=4096, B=16, k=100, kernel_ms=0.4634, dense_ms=0.3032, dense_measured=True),
            Row(N=100000, D=4096, B=64, k=10, kernel_ms=0.5307, dense_ms=0.361, dense_measured=True),
            Row(N=100000, D=4096, B=64, k=100, kernel_ms=0.5452, dense_ms=0.362, dense_measured=True),
            Row(N=100000, D=4096, B=256, k=10, kernel_ms=0.8746, dense_ms=0.7333, dense_measured=False),
            Row(N=100000, D=4096, B=256, k=100, kernel_ms=0.9604, dense_ms=0.7353, dense_measured=False),
            Row(N=100000, D=4096, B=512, k=10, kernel_ms=1.4205, dense_ms=1.2756, dense_measured=False),
            Row(N=100000, D=4096, B=512, k=100, kernel_ms=1.5574, dense_ms=1.2766, dense_measured=False),
            Row(N=100000, D=4096, B=1024, k=10, kernel_ms=2.4508, dense_ms=2.3659, dense_measured=False),
            Row(N=100000, D=4096, B=1024, k=100, kernel_ms=2.7912, dense_ms=2.3532, dense_measured=False),
            Row(N=100000, D=4096, B=4096, k=10, kernel_ms=9.6769, dense_ms=9.0439, dense_measured=False),
            Row(N=100000, D=4096, B=4096, k=100, kernel_ms=11.9433, dense_ms=9.0378, dense_measured=False),
        ],
    },
}


def nearest(table: dict, B: int, N: int, D: int, k: int) -> Row | None:
    """The benchmarked row nearest to (B, N, D, k) in log scale, or None outside the range (a factor
    of two beyond the benchmarked extremes in any dimension)."""
    rows = table["rows"]
    for name, x in (("B", B), ("N", N), ("D", D), ("k", k)):
        lo, hi = min(getattr(r, name) for r in rows), max(getattr(r, name) for r in rows)
        if not lo / 2 <= x <= hi * 2:
            return None
    dist = lambda r: sum(  # noqa: E731
        abs(math.log2(x / getattr(r, n))) for n, x in (("B", B), ("N", N), ("D", D), ("k", k))
    )
    return min(rows, key=dist)


def measured_path(device_name: str, B: int, N: int, D: int, k: int, dtype: torch.dtype) -> str | None:
    """``dense`` or ``triton``, whichever the table says is faster at the nearest benchmarked shape;
    None when the device or dtype has no table or the shape is outside its range."""
    table = TABLES.get(device_name)
    if table is None or dtype not in (torch.bfloat16, torch.float16):
        return None
    row = nearest(table, B, N, D, k)
    if row is None:
        return None
    return "dense" if row.dense_ms < row.kernel_ms else "triton"


if __name__ == "__main__":
    entry = build(json.loads(Path(sys.argv[1]).read_text()))
    print(f"    {entry['device']!r}: {{")
    for key in ("device", "date", "ratio"):
        print(f"        {key!r}: {entry[key]!r},")
    print('        "rows": [')
    for r in entry["rows"]:
        print(f"            {r!r},")
    print("        ],\n    },")
