"""Triton kernels: fused similarity + running top-k, never materialising the (B, N) scores.

Each program owns a block of BLOCK_B queries and one split of the passages. It walks its split
in tiles of BLOCK_N passages, computes the (BLOCK_B, BLOCK_N) fp32 score tile with ``tl.dot``,
packs every score with its passage index into one int64 key (``_pack``) and merges the tile into
a running (BLOCK_B, K_PAD) top-k only when some query's tile maximum beats its current k-th key.
It writes its K_PAD best keys per query; ``launcher.py`` merges the splits (second pass).

Key layout (int64, larger is better): high 32 bits = the fp32 score mapped to a monotone int32
(flip the 31 magnitude bits of negatives), low 32 bits = 2**31 - 1 - index, so equal scores
prefer the smaller index and every key is unique. Padding uses MIN_KEY (below every real key).

Triton API used is in both 3.6 and 3.9: tl.dot(input_precision=), tl.join/reshape, tl.topk
(a sort-based fallback is selected at import when tl.topk is missing). ``@triton.jit`` picks
compiled or interpreted at decoration, for triton's own library at ``import triton``: set
TRITON_INTERPRET=1 before anything imports triton (``launcher.kernels_module`` checks this and
reloads this module when the setting changed after it was imported).
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
MIN_KEY = tl.constexpr(-(2**63))
HAS_TL_TOPK = hasattr(tl, "topk")
TOPK_IMPLS = ("bitonic", "sort", "extract")


def default_topk_impl() -> str:
    """Row top-k used inside the kernels: JOINT_RAG_TRITON_TOPK, else ``bitonic`` (tl.topk) when
    compiled, ``extract`` (K rounds of max) in the interpreter, whose tl.sort/tl.topk run a
    Python loop per element (seconds per call). ``extract`` does not compile (Triton 3.9)."""
    impl = os.environ.get("JOINT_RAG_TRITON_TOPK") or ("extract" if INTERPRET else "bitonic")
    if impl not in TOPK_IMPLS:
        raise ValueError(f"JOINT_RAG_TRITON_TOPK={impl!r}: choose one of {', '.join(TOPK_IMPLS)}")
    if impl == "extract" and not INTERPRET:
        # Triton 3.9 (sm_90) fails in TritonGPURemoveLayoutConversions on this loop
        raise ValueError("JOINT_RAG_TRITON_TOPK=extract is for the interpreter only; use bitonic or sort")
    return "sort" if impl == "bitonic" and not HAS_TL_TOPK else impl


TOPK_IMPL = default_topk_impl()


@triton.jit
def _pack(scores, offs_n, valid):
    """(BB, BN) fp32 scores, (BN,) int32 passage ids, (BB, BN) bool -> (BB, BN) int64 keys."""
    bits = scores.to(tl.int32, bitcast=True)  # (BB, BN)
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # monotone: signed int order == float order
    low = (2147483647 - offs_n).to(tl.int64)  # (BN,) smaller index -> larger key
    keys = (bits.to(tl.int64) << 32) | low[None, :]  # (BB, BN)
    return tl.where(valid, keys, MIN_KEY)


@triton.jit
def _topk_native(x, K: tl.constexpr):
    """(BB, W) -> (BB, K) largest, sorted descending (bitonic top-k)."""
    return tl.topk(x, K)


@triton.jit
def _topk_sorted(x, K: tl.constexpr):
    """Fallback for Triton without tl.topk: full sort, then keep the first K columns."""
    BB: tl.constexpr = x.shape[0]
    W: tl.constexpr = x.shape[1]
    s = tl.reshape(tl.sort(x, descending=True), (BB, W // K, K))  # (BB, W/K, K)
    first = tl.arange(0, W // K)[None, :, None] == 0  # (1, W/K, 1)
    return tl.max(tl.where(first, s, MIN_KEY), axis=1)  # (BB, K)


@triton.jit
def _topk_extract(x, K: tl.constexpr):
    """K rounds of row max; keys are unique, so each round removes exactly one (padding aside)."""
    BB: tl.constexpr = x.shape[0]
    cols = tl.arange(0, K)[None, :]  # (1, K)
    out = tl.full((BB, K), MIN_KEY, tl.int64)  # (BB, K)
    for j in range(0, K):
        best = tl.max(x, axis=1)[:, None]  # (BB, 1)
        out = tl.where(cols == j, best, out)
        x = tl.where(x == best, MIN_KEY, x)
    return out


_topk = {"bitonic": _topk_native, "sort": _topk_sorted, "extract": _topk_extract}[TOPK_IMPL]


@triton.jit
def _merge(top, keys, K_PAD: tl.constexpr, BLOCK_N: tl.constexpr):
    """Merge a tile of keys into the running top-k, only if the tile can change it.

    Args:
        top: (BB, K_PAD) int64 running top-k keys, sorted descending.
        keys: (BB, BLOCK_N) int64 tile keys, BLOCK_N >= K_PAD.
    """
    BB: tl.constexpr = top.shape[0]
    kth = tl.min(top, axis=1)  # (BB,) current k-th key per query
    best = tl.max(keys, axis=1)  # (BB,) best key of the tile
    if tl.max((best > kth).to(tl.int32), axis=0) > 0:
        if BLOCK_N > K_PAD:
            cand = _topk(keys, K_PAD)  # (BB, K_PAD)
        else:
            cand = keys
        both = tl.reshape(tl.join(top, cand), (BB, 2 * K_PAD))  # (BB, 2*K_PAD)
        top = _topk(both, K_PAD)  # (BB, K_PAD)
    return top


@triton.jit
def _program_ids(B, num_splits, BLOCK_B: tl.constexpr, GROUP_B: tl.constexpr):
    """Grouped order: consecutive programs share a passage split (L2 reuse of the passages),
    GROUP_B query blocks at a time (L2 reuse of the queries across splits)."""
    pid = tl.program_id(0)
    num_b_blocks = tl.cdiv(B, BLOCK_B)
    per_group = GROUP_B * num_splits
    first_b = (pid // per_group) * GROUP_B
    group_size = tl.minimum(num_b_blocks - first_b, GROUP_B)
    pid_b = first_b + (pid % per_group) % group_size
    pid_s = (pid % per_group) // group_size
    return pid_b, pid_s


@triton.jit
def dot_topk_kernel(
    q_ptr,  # (B, D) queries, rows stride_qb apart, unit stride along D
    p_ptr,  # (N, D) passages, rows stride_pn apart, unit stride along D
    q_scale_ptr,  # (B,) fp32 per-query factor (1/||q|| for cosine); read only if HAS_SCALE
    p_scale_ptr,  # (N,) fp32 per-passage factor (1/||p|| for cosine); read only if HAS_SCALE
    out_ptr,  # (B, num_splits, K_PAD) int64 packed keys, contiguous
    B,
    N,
    D,
    stride_qb,
    stride_pn,
    n_per_split,  # passages per split, a multiple of BLOCK_N
    num_splits,
    HAS_SCALE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,  # "ieee" for fp32 inputs (no tf32 rounding), None for 16-bit
    K_PAD: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    GROUP_B: tl.constexpr,
):
    pid_b, pid_s = _program_ids(B, num_splits, BLOCK_B, GROUP_B)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # (BLOCK_B,)
    mask_b = offs_b < B
    q_rows = q_ptr + offs_b.to(tl.int64)[:, None] * stride_qb  # (BLOCK_B, 1)
    n_start = pid_s * n_per_split
    n_end = tl.minimum(n_start + n_per_split, N)
    if HAS_SCALE:
        q_scale = tl.load(q_scale_ptr + offs_b, mask=mask_b, other=0.0)  # (BLOCK_B,)
    top = tl.full((BLOCK_B, K_PAD), MIN_KEY, tl.int64)  # (BLOCK_B, K_PAD)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
        mask_n = offs_n < n_end
        p_cols = p_ptr + offs_n.to(tl.int64)[None, :] * stride_pn  # (1, BLOCK_N)
        acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)  # (BLOCK_B, BLOCK_N)
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
            mask_d = offs_d < D
            q = tl.load(q_rows + offs_d[None, :], mask=mask_b[:, None] & mask_d[None, :], other=0.0)
            p = tl.load(p_cols + offs_d[:, None], mask=mask_d[:, None] & mask_n[None, :], other=0.0)
            acc = tl.dot(q, p, acc, input_precision=DOT_PRECISION)  # (BLOCK_B, BLOCK_N)
        if HAS_SCALE:  # cosine: (q . p) / (||q|| ||p||), the inputs stay as given
            p_scale = tl.load(p_scale_ptr + offs_n, mask=mask_n, other=0.0)  # (BLOCK_N,)
            acc = acc * q_scale[:, None] * p_scale[None, :]
        keys = _pack(acc, offs_n, mask_b[:, None] & mask_n[None, :])  # (BLOCK_B, BLOCK_N)
        top = _merge(top, keys, K_PAD, BLOCK_N)
    offs_k = tl.arange(0, K_PAD)
    out = out_ptr + (offs_b.to(tl.int64)[:, None] * num_splits + pid_s) * K_PAD + offs_k[None, :]
    tl.store(out, top, mask=mask_b[:, None])


@triton.jit
def maxsim_topk_kernel(
    q_ptr,  # (B, M, D) query vectors, strides (stride_qb, stride_qm, 1)
    p_ptr,  # (N, M', D) passage vectors, strides (stride_pn, stride_pm, 1)
    out_ptr,  # (B, num_splits, K_PAD) int64 packed keys, contiguous
    B,
    N,
    D,
    M,
    MP,
    stride_qb,
    stride_qm,
    stride_pn,
    stride_pm,
    n_per_split,  # passages per split, a multiple of BLOCK_N
    num_splits,
    DOT_PRECISION: tl.constexpr,
    K_PAD: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,  # passages per merged tile (>= K_PAD), = SUB_N * (BLOCK_N // SUB_N)
    SUB_N: tl.constexpr,  # passages per tl.dot
    BLOCK_D: tl.constexpr,
    M_PAD: tl.constexpr,  # next power of two >= M
    MP_PAD: tl.constexpr,  # next power of two >= M'
    GROUP_B: tl.constexpr,
):
    pid_b, pid_s = _program_ids(B, num_splits, BLOCK_B, GROUP_B)
    # rows of the token-level product: (query, query vector) pairs
    r = tl.arange(0, BLOCK_B * M_PAD)  # (BLOCK_B*M_PAD,)
    row_b = pid_b * BLOCK_B + r // M_PAD
    row_m = r % M_PAD
    mask_r = (row_b < B) & (row_m < M)
    q_rows = q_ptr + row_b.to(tl.int64)[:, None] * stride_qb + row_m[:, None] * stride_qm  # (R, 1)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # (BLOCK_B,)
    mask_b = offs_b < B
    # columns: (passage, passage vector) pairs of one SUB_N slice
    c = tl.arange(0, SUB_N * MP_PAD)  # (SUB_N*MP_PAD,)
    col_n = c // MP_PAD
    col_m = c % MP_PAD
    G: tl.constexpr = BLOCK_N // SUB_N
    group = tl.arange(0, G)[None, :, None]  # (1, G, 1)
    n_start = pid_s * n_per_split
    n_end = tl.minimum(n_start + n_per_split, N)
    top = tl.full((BLOCK_B, K_PAD), MIN_KEY, tl.int64)  # (BLOCK_B, K_PAD)
    for n0 in range(n_start, n_end, BLOCK_N):
        tile = tl.zeros((BLOCK_B, G, SUB_N), dtype=tl.float32)  # (BLOCK_B, G, SUB_N)
        for g in range(0, G):
            cn = n0 + g * SUB_N + col_n  # (SUB_N*MP_PAD,) passage of each column
            mask_c = (cn < n_end) & (col_m < MP)
            p_cols = p_ptr + cn.to(tl.int64)[None, :] * stride_pn + col_m[None, :] * stride_pm
            acc = tl.zeros((BLOCK_B * M_PAD, SUB_N * MP_PAD), dtype=tl.float32)
            for d0 in range(0, D, BLOCK_D):
                offs_d = d0 + tl.arange(0, BLOCK_D)
                mask_d = offs_d < D
                q = tl.load(q_rows + offs_d[None, :], mask=mask_r[:, None] & mask_d[None, :], other=0.0)
                p = tl.load(p_cols + offs_d[:, None], mask=mask_d[:, None] & mask_c[None, :], other=0.0)
                acc = tl.dot(q, p, acc, input_precision=DOT_PRECISION)  # (R, SUB_N*MP_PAD)
            acc = tl.where((col_m < MP)[None, :], acc, float("-inf"))  # padded passage vectors never win
            tok = tl.reshape(acc, (BLOCK_B, M_PAD, SUB_N, MP_PAD))
            sub = tl.sum(tl.max(tok, axis=3), axis=1)  # (BLOCK_B, SUB_N): padded query vectors add 0
            tile = tl.where(group == g, sub[:, None, :], tile)
        offs_n = n0 + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
        valid = mask_b[:, None] & (offs_n < n_end)[None, :]
        keys = _pack(tl.reshape(tile, (BLOCK_B, BLOCK_N)), offs_n, valid)  # (BLOCK_B, BLOCK_N)
        top = _merge(top, keys, K_PAD, BLOCK_N)
    offs_k = tl.arange(0, K_PAD)
    out = out_ptr + (offs_b.to(tl.int64)[:, None] * num_splits + pid_s) * K_PAD + offs_k[None, :]
    tl.store(out, top, mask=mask_b[:, None])
