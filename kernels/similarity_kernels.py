"""Triton kernels: fused similarity + running top-k, never materialising the (B, N) scores.

Each program owns a block of BLOCK_B queries and one split of the passages. It walks its split
in tiles of BLOCK_N passages and computes the (BLOCK_B, BLOCK_N) fp32 score tile with ``tl.dot``.
Two ways to keep the running (BLOCK_B, K_PAD) top-k, chosen by the constexpr LAZY_M:

- ``LAZY_M = m > 0`` (lazy, the default): per tile, m rounds of row max (fp32 max, then the
  smallest column holding it) pull each query's m best passages out of the tile; they go to fixed
  slots of a (BLOCK_B, K_PAD) buffer, which is merged into the running top-k with one row top-k
  every K_PAD/m tiles (and at the end). A query whose tile maximum is below its current K_PAD-th
  key skips the tile; when no query of the block needs it, the rounds are skipped altogether.
  Per query the kernel also writes an overflow bound: the max over tiles of the tile's (m+1)-th
  score, and the program's K_PAD-th kept score (K_PAD, the width of the running top-k, may be
  below k for large k: each program only needs the best of its own split). A program can have
  lost a top-k passage only if that bound is >= the final k-th score; the launcher recomputes
  such queries exactly (torch path), so results stay exact.
- ``LAZY_M = 0`` (merge, the previous algorithm): every score is packed into a key and the whole
  tile is merged (two row top-k) whenever some query's tile maximum beats its current k-th key.

Each program writes its K_PAD best keys per query; ``launcher.py`` merges the splits (second pass).

Key layout (int64, larger is better): high 32 bits = the fp32 score mapped to a monotone int32
(flip the 31 magnitude bits of negatives), low 32 bits = 2**31 - 1 - index, so equal scores
prefer the smaller index and every key is unique. Padding uses MIN_KEY (below every real key).

Triton API used is in both 3.6 and 3.9: tl.dot(input_precision=), tl.join/reshape, tl.topk
(a sort-based fallback is selected at import when tl.topk is missing), tl.static_range.
``@triton.jit`` picks compiled or interpreted at decoration, for triton's own library at
``import triton``: set TRITON_INTERPRET=1 before anything imports triton
(``launcher.kernels_module`` checks this and reloads this module when the setting changed after
it was imported).
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
MIN_KEY = tl.constexpr(-(2**63))
NO_COL = tl.constexpr(2**31 - 1)  # column id of "no passage" (above every real one)
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
def _pack(scores, ids, valid):
    """fp32 scores, int32 passage ids, bool valid (broadcastable, e.g. (BB, BN), (1, BN),
    (BB, BN) or three (BB,)) -> int64 keys of the broadcast shape."""
    bits = scores.to(tl.int32, bitcast=True)
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # monotone: signed int order == float order
    low = (2147483647 - ids).to(tl.int64)  # smaller index -> larger key
    keys = (bits.to(tl.int64) << 32) | low
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
def _row_best(s, offs_n):
    """(BB, BN) fp32 scores (-inf where invalid), (BN,) int32 ids -> (BB,) row max and (BB,)
    smallest id holding it (NO_COL when the row is all -inf)."""
    mx = tl.max(s, axis=1)  # (BB,)
    at = (s == mx[:, None]) & (mx > float("-inf"))[:, None]  # (BB, BN)
    idx = tl.min(tl.where(at, offs_n[None, :], NO_COL), axis=1)  # (BB,)
    return mx, idx


@triton.jit
def _init_state(BB: tl.constexpr, K_PAD: tl.constexpr):
    """Empty running state of one program's query block.

    Returns:
        top (BB, K_PAD) int64 running top-k keys, buf (BB, K_PAD) int64 lazy candidates,
        theta (BB,) int64 K_PAD-th key of top, bound (BB,) fp32 overflow bound; all empty.
    """
    top = tl.full((BB, K_PAD), MIN_KEY, tl.int64)
    buf = tl.full((BB, K_PAD), MIN_KEY, tl.int64)
    theta = tl.full((BB,), MIN_KEY, tl.int64)
    bound = tl.full((BB,), float("-inf"), tl.float32)
    return top, buf, theta, bound


@triton.jit
def _flush(top, buf, theta):
    """Merge the candidate buffer into the running top-k (one row top-k over 2*K_PAD keys) when
    some buffered key beats its query's current K_PAD-th key; then empty the buffer.

    Args:
        top: (BB, K_PAD) int64 running top-k (any order).
        buf: (BB, K_PAD) int64 candidates, MIN_KEY in unused slots.
        theta: (BB,) int64 current K_PAD-th key of ``top``.

    Returns:
        top (BB, K_PAD), an empty buf (BB, K_PAD), theta (BB,).
    """
    BB: tl.constexpr = top.shape[0]
    K_PAD: tl.constexpr = top.shape[1]
    if tl.max((tl.max(buf, axis=1) > theta).to(tl.int32), axis=0) > 0:
        both = tl.reshape(tl.join(top, buf), (BB, 2 * K_PAD))  # (BB, 2*K_PAD)
        top = _topk(both, K_PAD)  # (BB, K_PAD)
        theta = tl.min(top, axis=1)  # (BB,)
    return top, tl.full((BB, K_PAD), MIN_KEY, tl.int64), theta


@triton.jit
def _lazy_update(s, offs_n, row_ok, top, buf, theta, bound, t, LAZY_M: tl.constexpr):
    """Lazy merging of one score tile: each query's LAZY_M best passages go to slot t % F of the
    buffer (F = K_PAD / LAZY_M tiles per flush); the buffer is flushed into ``top`` every F tiles.

    Exactness bookkeeping: a query whose tile max is below its K_PAD-th key ``theta`` cannot gain
    from the tile in this program (K_PAD real keys beat all of it; if K_PAD < k, the K_PAD-th
    kept score in the bound covers it). Otherwise ``bound`` takes the tile's
    (LAZY_M+1)-th score: a top-k passage left in the tile scores at most that much.

    Args:
        s: (BB, BN) fp32 scores, -inf where the passage is invalid.
        offs_n: (BN,) int32 passage ids; row_ok: (BB,) bool real queries.
        top, buf: (BB, K_PAD) int64; theta: (BB,) int64; bound: (BB,) fp32; t: tile number.

    Returns:
        top, buf, theta, bound (same shapes).
    """
    K_PAD: tl.constexpr = top.shape[1]
    F: tl.constexpr = K_PAD // LAZY_M
    base = (t % F) * LAZY_M  # first buffer column of this tile
    cols = tl.arange(0, K_PAD)[None, :]  # (1, K_PAD)
    mx, idx = _row_best(s, offs_n)  # (BB,), (BB,)
    key = _pack(mx, idx, row_ok & (idx != NO_COL))  # (BB,)
    hit = key > theta  # (BB,) the tile may change this query's top-k
    if tl.max(hit.to(tl.int32), axis=0) > 0:
        buf = tl.where(cols == base, key[:, None], buf)  # (BB, K_PAD)
        for j in tl.static_range(1, LAZY_M + 1):
            s = tl.where(offs_n[None, :] == idx[:, None], float("-inf"), s)  # drop the one taken
            if j < LAZY_M:
                mx, idx = _row_best(s, offs_n)
                key = _pack(mx, idx, row_ok & (idx != NO_COL))
                buf = tl.where(cols == base + j, key[:, None], buf)
        rest = tl.max(s, axis=1)  # (BB,) the tile's (LAZY_M+1)-th score
        bound = tl.maximum(bound, tl.where(hit, rest, float("-inf")))
    if t % F == F - 1:
        top, buf, theta = _flush(top, buf, theta)
    return top, buf, theta, bound


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
def _store(
    out_ptr, bound_ptr, top, buf, theta, bound, offs_b, mask_b, pid_s, num_splits, LAZY_M: tl.constexpr
):
    """Write a program's K_PAD keys per query to out (B, S, K_PAD) and, lazy, flush the buffer
    first and write the overflow bound to bound (B, S): the max of the tiles' (LAZY_M+1)-th
    scores and the program's K_PAD-th kept score."""
    K_PAD: tl.constexpr = top.shape[1]
    if LAZY_M > 0:
        top, buf, theta = _flush(top, buf, theta)
        # the program kept only its K_PAD best (K_PAD may be < k): whatever it dropped scores at
        # most its K_PAD-th score, so that score joins the bound (-inf when fewer were found)
        hi = (theta >> 32).to(tl.int32)
        kept = (hi ^ ((hi >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)  # (BB,)
        bound = tl.maximum(bound, tl.where(theta != MIN_KEY, kept, float("-inf")))
        tl.store(bound_ptr + offs_b.to(tl.int64) * num_splits + pid_s, bound, mask=mask_b)
    offs_k = tl.arange(0, K_PAD)
    out = out_ptr + (offs_b.to(tl.int64)[:, None] * num_splits + pid_s) * K_PAD + offs_k[None, :]
    tl.store(out, top, mask=mask_b[:, None])


@triton.jit
def _dot_program(
    q_ptr, q_scale_ptr, B, N, stride_qb, n_per_split, num_splits,
    HAS_SCALE: tl.constexpr, BLOCK_B: tl.constexpr, GROUP_B: tl.constexpr,
):  # fmt: skip
    """This program's query block and passage range (the dot kernels' common prologue).

    Returns:
        offs_b (BLOCK_B,) query ids, mask_b (BLOCK_B,) real queries, q_rows (BLOCK_B, 1) row
        pointers, q_scale (BLOCK_B,) fp32 1/||q|| (ones unless HAS_SCALE), the split pid_s and
        its passage range [n_start, n_end).
    """
    pid_b, pid_s = _program_ids(B, num_splits, BLOCK_B, GROUP_B)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # (BLOCK_B,)
    mask_b = offs_b < B
    q_rows = q_ptr + offs_b.to(tl.int64)[:, None] * stride_qb  # (BLOCK_B, 1)
    n_start = pid_s * n_per_split
    n_end = tl.minimum(n_start + n_per_split, N)
    q_scale = tl.full((BLOCK_B,), 1.0, tl.float32)  # (BLOCK_B,) read only if HAS_SCALE
    if HAS_SCALE:
        q_scale = tl.load(q_scale_ptr + offs_b, mask=mask_b, other=0.0)
    return offs_b, mask_b, q_rows, q_scale, pid_s, n_start, n_end


@triton.jit
def _score_tile(
    q_rows, p_ptr, p_scale_ptr, q_scale, offs_n, mask_b, mask_n, D, stride_pn,
    HAS_SCALE: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    """One (BLOCK_B, BLOCK_N) fp32 score tile of the dot kernels: ``tl.dot`` over BLOCK_D steps of
    D (masked tails), times the cosine factors when HAS_SCALE (the inputs stay as given).

    Args:
        q_rows: (BLOCK_B, 1) query row pointers; offs_n: (BLOCK_N,) passage ids; mask_b (BLOCK_B,),
        mask_n (BLOCK_N,) valid queries and passages; q_scale: (BLOCK_B,) fp32 1/||q||.
    """
    p_cols = p_ptr + offs_n.to(tl.int64)[None, :] * stride_pn  # (1, BLOCK_N)
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)  # (BLOCK_B, BLOCK_N)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
        mask_d = offs_d < D
        q = tl.load(q_rows + offs_d[None, :], mask=mask_b[:, None] & mask_d[None, :], other=0.0)
        p = tl.load(p_cols + offs_d[:, None], mask=mask_d[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(q, p, acc, input_precision=DOT_PRECISION)  # (BLOCK_B, BLOCK_N)
    if HAS_SCALE:  # cosine: (q . p) / (||q|| ||p||)
        p_scale = tl.load(p_scale_ptr + offs_n, mask=mask_n, other=0.0)  # (BLOCK_N,)
        acc = acc * q_scale[:, None] * p_scale[None, :]
    return acc


# B, N and num_splits are not specialised (==1, %16): one binary serves every batch, corpus size
# and split count (fewer JIT compiles, in the GPU tests and in use); they only feed masks and
# index arithmetic, never a vectorised load
_NO_SPECIALIZE = ["B", "N", "num_splits"]


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def dot_topk_kernel(
    q_ptr,  # (B, D) queries, rows stride_qb apart, unit stride along D
    p_ptr,  # (N, D) passages, rows stride_pn apart, unit stride along D
    q_scale_ptr,  # (B,) fp32 per-query factor (1/||q|| for cosine); read only if HAS_SCALE
    p_scale_ptr,  # (N,) fp32 per-passage factor (1/||p|| for cosine); read only if HAS_SCALE
    out_ptr,  # (B, num_splits, K_PAD) int64 packed keys, contiguous
    bound_ptr,  # (B, num_splits) fp32 overflow bounds, contiguous; written only if LAZY_M > 0
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
    LAZY_M: tl.constexpr,  # > 0: lazy merging, candidates per query per tile; 0: merge every tile
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    GROUP_B: tl.constexpr,
    PROBE: tl.constexpr = 0,  # 1: timing probe only (no top-k kept; see below), 0: the search
):
    offs_b, mask_b, q_rows, q_scale, pid_s, n_start, n_end = _dot_program(
        q_ptr, q_scale_ptr, B, N, stride_qb, n_per_split, num_splits, HAS_SCALE, BLOCK_B, GROUP_B
    )
    top, buf, theta, bound = _init_state(BLOCK_B, K_PAD)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
        mask_n = offs_n < n_end
        acc = _score_tile(
            q_rows, p_ptr, p_scale_ptr, q_scale, offs_n, mask_b, mask_n, D, stride_pn,
            HAS_SCALE, DOT_PRECISION, BLOCK_B, BLOCK_N, BLOCK_D,
        )  # fmt: skip
        if PROBE == 1:
            # timing probe (benchmarks/similarity_topk_probe.py): the tiles are scored as in the
            # search but only their row max is kept (in ``bound``), so probe time against search
            # time splits the kernel into scoring (tl.dot, loads, loop) and top-k bookkeeping
            bound = tl.maximum(bound, tl.max(tl.where(mask_n[None, :], acc, float("-inf")), axis=1))
        elif LAZY_M > 0:
            s = tl.where(mask_n[None, :], acc, float("-inf"))  # (BLOCK_B, BLOCK_N)
            t = (n0 - n_start) // BLOCK_N
            top, buf, theta, bound = _lazy_update(s, offs_n, mask_b, top, buf, theta, bound, t, LAZY_M)
        else:
            keys = _pack(acc, offs_n[None, :], mask_b[:, None] & mask_n[None, :])  # (BLOCK_B, BLOCK_N)
            top = _merge(top, keys, K_PAD, BLOCK_N)
    _store(out_ptr, bound_ptr, top, buf, theta, bound, offs_b, mask_b, pid_s, num_splits, LAZY_M)


@triton.jit(do_not_specialize=_NO_SPECIALIZE)
def maxsim_topk_kernel(
    q_ptr,  # (B, M, D) query vectors, strides (stride_qb, stride_qm, 1)
    p_ptr,  # (N, M', D) passage vectors, strides (stride_pn, stride_pm, 1)
    out_ptr,  # (B, num_splits, K_PAD) int64 packed keys, contiguous
    bound_ptr,  # (B, num_splits) fp32 overflow bounds, contiguous; written only if LAZY_M > 0
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
    LAZY_M: tl.constexpr,  # > 0: lazy merging, candidates per query per tile; 0: merge every tile
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
    top, buf, theta, bound = _init_state(BLOCK_B, K_PAD)
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
        mask_n = offs_n < n_end
        tile2 = tl.reshape(tile, (BLOCK_B, BLOCK_N))  # (BLOCK_B, BLOCK_N)
        if LAZY_M > 0:
            s = tl.where(mask_n[None, :], tile2, float("-inf"))  # (BLOCK_B, BLOCK_N)
            t = (n0 - n_start) // BLOCK_N
            top, buf, theta, bound = _lazy_update(s, offs_n, mask_b, top, buf, theta, bound, t, LAZY_M)
        else:
            keys = _pack(tile2, offs_n[None, :], mask_b[:, None] & mask_n[None, :])  # (BLOCK_B, BLOCK_N)
            top = _merge(top, keys, K_PAD, BLOCK_N)
    _store(out_ptr, bound_ptr, top, buf, theta, bound, offs_b, mask_b, pid_s, num_splits, LAZY_M)


# ---- binned-max two-pass search (algo="binmax"; launcher in binmax.py, proof there) -------------


@triton.jit(do_not_specialize=_NO_SPECIALIZE + ["NB"])
def dot_binmax_kernel(
    q_ptr,  # (B, D) queries, rows stride_qb apart, unit stride along D
    p_ptr,  # (N, D) passages, rows stride_pn apart, unit stride along D
    q_scale_ptr,  # (B,) fp32 per-query factor (1/||q|| for cosine); read only if HAS_SCALE
    p_scale_ptr,  # (N,) fp32 per-passage factor (1/||p|| for cosine); read only if HAS_SCALE
    bmax_ptr,  # (B, NB) fp32 bin maxima, contiguous; NB = ceil(N / SPAN) * BINS
    B,
    N,
    D,
    stride_qb,
    stride_pn,
    n_per_split,  # passages per split, a multiple of SPAN = BLOCK_N * SPAN_TILES
    num_splits,
    NB,
    HAS_SCALE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,  # "ieee" for fp32 inputs (no tf32 rounding), None for 16-bit
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BINS: tl.constexpr,  # bins per span; bin j of span g holds passages g*SPAN + j + BINS*u
    SPAN_TILES: tl.constexpr,  # tiles per span: a bin holds SPAN_TILES * BLOCK_N / BINS passages
    GROUP_B: tl.constexpr,
):
    """Pass 1: score every tile as ``dot_topk_kernel`` does, keep only each bin's maximum.

    A tile's column c goes to bin c % BINS (strided bins: with BINS a multiple of 8 every bin's
    columns of a row sit in one thread of the tensor-core accumulator layout, so the reduction
    needs no shuffle), and a bin runs over SPAN_TILES consecutive tiles (an elementwise max of
    registers). Per score that is one max; there is no top-k, no key and no branch per tile.
    """
    offs_b, mask_b, q_rows, q_scale, pid_s, n_start, n_end = _dot_program(
        q_ptr, q_scale_ptr, B, N, stride_qb, n_per_split, num_splits, HAS_SCALE, BLOCK_B, GROUP_B
    )
    SPAN: tl.constexpr = BLOCK_N * SPAN_TILES
    out_rows = bmax_ptr + offs_b.to(tl.int64)[:, None] * NB  # (BLOCK_B, 1)
    for s0 in range(n_start, n_end, SPAN):
        run = tl.full((BLOCK_B, BINS), float("-inf"), tl.float32)  # (BLOCK_B, BINS)
        for t in range(0, SPAN_TILES):
            offs_n = s0 + t * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
            mask_n = offs_n < n_end
            acc = _score_tile(
                q_rows, p_ptr, p_scale_ptr, q_scale, offs_n, mask_b, mask_n, D, stride_pn,
                HAS_SCALE, DOT_PRECISION, BLOCK_B, BLOCK_N, BLOCK_D,
            )  # fmt: skip
            s = tl.where(mask_n[None, :], acc, float("-inf"))  # (BLOCK_B, BLOCK_N)
            s3 = tl.reshape(s, (BLOCK_B, BLOCK_N // BINS, BINS))  # column c -> (c // BINS, c % BINS)
            run = tl.maximum(run, tl.max(s3, axis=1))  # (BLOCK_B, BINS)
        bins = (s0 // SPAN) * BINS + tl.arange(0, BINS)  # (BINS,) global bin ids
        tl.store(out_rows + bins[None, :], run, mask=mask_b[:, None])


@triton.jit(do_not_specialize=["B", "N", "KB"])
def bin_rescore_kernel(
    q_ptr,  # (B, D) queries, rows stride_qb apart, unit stride along D
    p_ptr,  # (N, D) passages, rows stride_pn apart, unit stride along D
    q_scale_ptr,  # (B,) fp32; read only if HAS_SCALE
    p_scale_ptr,  # (N,) fp32; read only if HAS_SCALE
    bins_ptr,  # (B, KB) int64 selected bin ids per query, contiguous
    out_ptr,  # (B, KB * W) int64 packed keys of the selected bins' passages, contiguous
    B,
    N,
    D,
    stride_qb,
    stride_pn,
    KB,
    HAS_SCALE: tl.constexpr,
    BINS: tl.constexpr,
    SPAN: tl.constexpr,
    W: tl.constexpr,  # passages per bin = SPAN // BINS
    BLOCK_R: tl.constexpr,  # selected bins per program
    BLOCK_D: tl.constexpr,
):
    """Pass 2: exact fp32 scores of the passages of each query's selected bins, as packed keys.
    Grid (B, cdiv(KB, BLOCK_R)); a passage id >= N (the tail span) gets MIN_KEY."""
    b = tl.program_id(0)
    offs_r = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)  # (BLOCK_R,)
    mask_r = offs_r < KB
    row = b.to(tl.int64)
    bins = tl.load(bins_ptr + row * KB + offs_r, mask=mask_r, other=0)  # (BLOCK_R,) int64
    first = (bins // BINS) * SPAN + bins % BINS  # (BLOCK_R,) first passage of each bin
    ids = first[:, None] + BINS * tl.arange(0, W)[None, :]  # (BLOCK_R, W) int64
    ok = mask_r[:, None] & (ids < N)  # (BLOCK_R, W)
    acc = tl.zeros((BLOCK_R, W), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
        mask_d = offs_d < D
        qv = tl.load(q_ptr + row * stride_qb + offs_d, mask=mask_d, other=0.0).to(tl.float32)  # (BLOCK_D,)
        pv = tl.load(
            p_ptr + ids[:, :, None] * stride_pn + offs_d[None, None, :],
            mask=ok[:, :, None] & mask_d[None, None, :],
            other=0.0,
        ).to(tl.float32)  # (BLOCK_R, W, BLOCK_D)
        acc += tl.sum(pv * qv[None, None, :], axis=2)
    if HAS_SCALE:
        acc = acc * tl.load(q_scale_ptr + b) * tl.load(p_scale_ptr + ids, mask=ok, other=0.0)
    keys = _pack(acc, ids.to(tl.int32), ok)  # (BLOCK_R, W)
    out = out_ptr + row * KB * W + offs_r[:, None] * W + tl.arange(0, W)[None, :]
    tl.store(out, keys, mask=mask_r[:, None])
