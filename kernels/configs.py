"""Config table of the similarity + top-k Triton kernels: blocks, warps, stages, the lazy
algorithm's candidates per tile (m) and kept width, and the passage splits per launch.

Pure Python (no Triton import): ``launcher.py`` launches with these configs, ``compile_check.py``
compiles the table for a GPU architecture without a GPU, and the GPU autotuner tries
``candidate_configs`` around a table entry.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import torch

MAX_K = 256  # K_PAD = 256 keeps the running top-k of a 16-query block in registers
ALGOS = ("lazy", "merge", "binmax")
ALGO_ENV = "JOINT_RAG_TRITON_ALGO"
LAZY_MS = (1, 2, 4, 8)  # candidates per query per tile the table may choose
FALLBACK_BUDGET = 0.01  # expected queries per call recomputed by the torch path (random data)
# lazy dot: BLOCK_B * K_PAD bound (running top-k + buffer, 2 * BLOCK_B * K_PAD int64, in registers;
# compile_check: no spills up to 128 x 32 on triton 3.6 and 3.9)
REG_KEYS = 4096
NARROW_FROM = 64  # lazy dot: K_PAD >= this may keep fewer than k per program (``keep_width``)
DEFAULT_SMS = 132  # H100 SXM / H200: streaming multiprocessors, for tables computed without a GPU


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@dataclass(frozen=True)
class TopkConfig:
    """Blocks of one launch (all powers of two)."""

    k_pad: int  # running top-k width per program: next power of two >= k, or less (``keep_width``)
    block_b: int  # queries per program
    block_n: int  # passages per merged tile (>= k_pad)
    block_d: int  # features per tl.dot step
    sub_n: int = 0  # maxsim: passages per tl.dot (block_n is a multiple)
    group_b: int = 8  # query blocks per program group (L2 reuse)
    num_warps: int = 4
    num_stages: int = 2
    lazy_m: int = 0  # > 0: lazy merging with this many candidates per query per tile; 0: merge
    bins: int = 0  # binmax: bins per span (> 0 selects the two-pass binned-max algorithm)
    span_tiles: int = 1  # binmax: tiles per span; a bin holds span_tiles * block_n / bins passages


def _pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


def default_algo(algo: str | None = None) -> str:
    """``algo``, else $JOINT_RAG_TRITON_ALGO, else ``lazy``."""
    choice = algo or os.environ.get(ALGO_ENV) or "lazy"
    if choice not in ALGOS:
        raise ValueError(f"algo={choice!r} (argument or ${ALGO_ENV}) is unknown; choose one of {ALGOS}")
    return choice


def _poisson_tail(lam: float, m: int) -> float:
    """P(X >= m) for X ~ Poisson(lam)."""
    if lam <= 0:
        return 0.0
    pmf = lambda j: math.exp(-lam + j * math.log(lam) - math.lgamma(j + 1))  # noqa: E731
    if lam > 1:
        return max(0.0, 1.0 - sum(pmf(j) for j in range(m)))
    return sum(pmf(j) for j in range(m, m + 30))  # small lam: sum the tail (no cancellation)


def choose_lazy_m(B: int, N: int, k: int, block_n: int, k_pad: int) -> int:
    """Smallest LAZY_M in LAZY_MS (<= k_pad) whose expected fallback is within FALLBACK_BUDGET,
    0 (use merge) if none is. A query falls back when one tile holds more than LAZY_M of its
    top-k; with the top-k spread at random over the N passages a tile holds Poisson(k*block_n/N)
    of them, over ceil(N/block_n) tiles and B queries."""
    if block_n >= N:
        return 0  # one tile: merge it whole
    tiles = -(-N // block_n)
    lam = min(k, N) * block_n / N
    for m in LAZY_MS:
        if m <= k_pad and B * tiles * _poisson_tail(lam, m + 1) <= FALLBACK_BUDGET:
            return m
    return 0


def num_splits_for(N: int, B: int, block_b: int, block_n: int, programs: int, num_splits: int | None) -> int:
    """Passage splits: ``num_splits`` if given, else enough for ``programs`` programs (capped by
    the number of tiles; every split holds the same whole number of tiles)."""
    return _split_tiles(N, B, block_b, block_n, programs, num_splits)[0]


def _split_tiles(
    N: int, B: int, block_b: int, block_n: int, programs: int, num_splits: int | None
) -> tuple[int, int]:
    """(splits, tiles per split)."""
    tiles = max(1, -(-N // block_n))
    if num_splits is None:
        num_splits = -(-programs // max(1, -(-B // block_b)))
    tiles_per_split = -(-tiles // max(1, min(num_splits, tiles)))
    return -(-tiles // tiles_per_split), tiles_per_split


def keep_width(B: int, k: int, k_full: int, splits: int) -> int:
    """Running top-k width per program for the lazy dot kernel.

    A program only needs the best of its own split, so it may keep fewer than k: the smallest
    power of two w in [16, k_full] with splits * w >= k and, with the top-k spread at random
    (a split holds Binomial(k, 1/splits) ~ Poisson(k/splits) of a query's top-k), an expected
    number of queries per call whose split holds >= w of them (those go to the torch fallback)
    within FALLBACK_BUDGET. Only for k_full >= NARROW_FROM; smaller k keep k_full.
    """
    if k_full < NARROW_FROM:
        return k_full
    w = 16
    while w < k_full:
        if splits * w >= k and B * splits * _poisson_tail(k / splits, w) <= FALLBACK_BUDGET:
            return w
        w *= 2
    return k_full


def choose_config(
    similarity: str,
    B: int,
    k: int,
    dtype: torch.dtype,
    m: int = 1,
    mp: int = 1,
    *,
    N: int = 1_000_000,
    algo: str | None = None,
    num_splits: int | None = None,
    num_sms: int = DEFAULT_SMS,
    D: int = 768,
) -> TopkConfig:
    """Fixed config table (no autotuning), by similarity, batch, k, dtype, corpus size and algo.

    Lazy dot kernel (Hopper-sized tiles): up to 128 queries x 128 passages per tile, 8 warps,
    3 stages for 16-bit inputs. The running top-k and its buffer (2 * BLOCK_B * K_PAD int64) stay
    in registers: BLOCK_B * K_PAD <= REG_KEYS. For k >= 33 each program keeps only
    ``keep_width`` keys (16 or 32 at the benchmark shapes, against next_pow2(k) = 128 at k = 100),
    so large batches still get 128-query blocks; the largest BLOCK_B (<= the batch rounded up,
    >= 16) that fits is used. LAZY_M from ``choose_lazy_m``; when no LAZY_M is cheap enough
    (k close to N) the merge table is used. ``num_splits`` (default: 4 programs per SM of a
    ``num_sms`` GPU) enters the width choice.
    Merge dot kernel: 64 queries x max(64, K_PAD) passages per tile, fewer queries when the
    running top-k is wide (K_PAD >= 128). MaxSim: about 64 rows x 64 columns of token-level
    products per ``tl.dot``, both algorithms. The interpreter gets small tiles (fast tests that
    still cross tile and split boundaries). ``algo="binmax"``: ``choose_binmax_config`` (D, the
    feature dimension, sizes its bins).
    """
    algo = default_algo(algo)
    if algo == "binmax":
        return choose_binmax_config(similarity, B, k, dtype, N=N, D=D)
    k_pad = max(4, _pow2(k))
    fp32 = dtype == torch.float32
    block_d = 32 if fp32 else 64  # fp32 tiles are twice the bytes: halve BLOCK_D
    if similarity == "maxsim":
        m_pad, mp_pad = _pow2(m), _pow2(mp)
        block_b = max(1, 64 // m_pad, -(-16 // m_pad))
        block_b = min(block_b, max(_pow2(B), -(-16 // m_pad)))
        sub_n = max(1, 64 // mp_pad)
        cfg = TopkConfig(k_pad, block_b, max(k_pad, sub_n), block_d, sub_n, num_warps=4, num_stages=2)
    elif algo == "lazy":
        # queries per block: the tl.dot minimum (16) for small B, else as many as the
        # (BLOCK_B, K_PAD) top-k + buffer allow in registers
        for block_b in (128, 64, 32, 16):
            if block_b > max(16, _pow2(B)):
                continue
            block_n = 128
            splits = num_splits_for(N, B, block_b, block_n, 4 * num_sms, num_splits)
            width = k_pad if interpreting() else keep_width(B, min(k, N), k_pad, splits)
            if block_b * width <= REG_KEYS or block_b == 16:
                break
        block_n = max(128, width)
        warps = 8 if block_b * block_n >= 64 * 128 else 4
        cfg = TopkConfig(width, block_b, block_n, block_d, num_warps=warps, num_stages=2 if fp32 else 3)
    else:
        block_b = 16 if B <= 16 else 32 if B <= 32 or k_pad >= 128 else 64
        if k_pad >= 256:
            block_b = 16
        block_n = max(64, k_pad)
        warps = 8 if block_b * block_n >= 64 * 128 or k_pad >= 128 else 4
        cfg = TopkConfig(k_pad, block_b, block_n, block_d, num_warps=warps, num_stages=2 if fp32 else 3)
    if interpreting():  # small tiles: fast tests that still cross tile and split boundaries
        sub_n = max(1, 16 // _pow2(mp)) if similarity == "maxsim" else 0
        block_b = max(1, 16 // _pow2(m)) if similarity == "maxsim" else 16
        cfg = replace(cfg, block_b=block_b, block_n=max(k_pad, 2 * sub_n, 16), block_d=32, sub_n=sub_n)
    if algo == "lazy":
        lazy_m = choose_lazy_m(B, N, k, cfg.block_n, cfg.k_pad)
        if lazy_m == 0 and similarity != "maxsim":
            return choose_config(similarity, B, k, dtype, m, mp, N=N, algo="merge")
        cfg = replace(cfg, lazy_m=lazy_m)
    return cfg


BINMAX_BINS = 16  # bins per span: a multiple of 8, so each bin's columns of a row sit in one thread
BINMAX_MAX_SPAN_TILES = 64
BINMAX_CAP_BYTES = 256 * 2**20  # bin maxima of one launch at most this: larger batches go in chunks


def binmax_span_tiles(N: int, k: int, D: int, itemsize: int, block_n: int, bins: int = BINMAX_BINS) -> int:
    """Tiles per span (a power of two) for the binned-max algorithm, from a traffic model.

    Per query, pass 1 writes N / W fp32 bin maxima and the selection reads them (8 N / W bytes);
    pass 2 reads k bins of W passages (k W D itemsize bytes). The sum is smallest at
    W* = sqrt(8 N / (k D itemsize)); W = span_tiles * block_n / bins is the nearest power of two
    (at least one tile per span). N = 1e6, D = 768, bf16: W* = 7.2 at k = 100 (W = 8, one tile),
    22.8 at k = 10 (W = 32, four tiles: the cost is symmetric in log W).
    """
    w_star = math.sqrt(8 * max(N, 1) / (max(k, 1) * max(D, 1) * itemsize))
    per_tile = block_n // bins
    tiles = max(1.0, w_star / per_tile)
    return int(min(BINMAX_MAX_SPAN_TILES, 1 << round(math.log2(tiles))))


def choose_binmax_config(
    similarity: str, B: int, k: int, dtype: torch.dtype, *, N: int = 1_000_000, D: int = 768
) -> TopkConfig:
    """Config of the binned-max algorithm (dot, cosine, flat_cosine): no running top-k in
    registers, so up to 128 queries x 128 passages per tile at every k; 16 strided bins per span,
    spans of ``binmax_span_tiles`` tiles. The interpreter gets 16 x 16 tiles, 4 bins and two tiles
    per span (bins of 8 passages that cross tile boundaries)."""
    if similarity == "maxsim":
        raise ValueError("algo='binmax' supports dot, cosine and flat_cosine; use lazy or merge for maxsim")
    fp32 = dtype == torch.float32
    block_d = 32 if fp32 else 64
    if interpreting():
        return TopkConfig(16, 16, 16, 32, bins=4, span_tiles=2)
    block_b = next(b for b in (128, 64, 32, 16) if b <= max(16, _pow2(B)))
    block_n = 128
    itemsize = 4 if fp32 else 2
    span_tiles = binmax_span_tiles(N, k, D, itemsize, block_n)
    warps = 8 if block_b * block_n >= 64 * 128 else 4
    return TopkConfig(  # k_pad is unused by binmax (no running top-k); 16 keeps the field valid
        16, block_b, block_n, block_d, num_warps=warps, num_stages=2 if fp32 else 3,
        bins=BINMAX_BINS, span_tiles=span_tiles,
    )  # fmt: skip


_SMS: dict[int, int] = {}


def device_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (cached: no driver call per search); 1 on CPU
    (the interpreter: 4 programs)."""
    if device.type != "cuda":
        return 1
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SMS:
        _SMS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SMS[index]


def choose_splits(
    N: int, B: int, cfg: TopkConfig, device: torch.device, num_splits: int | None
) -> tuple[int, int]:
    """(num_splits, passages per split): enough programs to fill the GPU (about 4 per SM)."""
    splits, tiles_per_split = _split_tiles(N, B, cfg.block_b, cfg.block_n, 4 * device_sms(device), num_splits)
    return splits, tiles_per_split * cfg.block_n


def candidate_configs(base: TopkConfig, similarity: str) -> list[TopkConfig]:
    """At most 8 variants of a table config for the GPU autotuner (each costs a compile, seconds):
    queries per block (table or half, dot only), warps (4, 8), BLOCK_D (table or half)."""
    out = [base]
    block_bs = (base.block_b,) if similarity == "maxsim" else (base.block_b, max(16, base.block_b // 2))
    for block_b in block_bs:
        for warps in (4, 8):
            for block_d in (base.block_d, max(16, base.block_d // 2)):
                cfg = replace(base, block_b=block_b, num_warps=warps, block_d=block_d)
                if cfg not in out:
                    out.append(cfg)
    return out
