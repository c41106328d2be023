"""Launcher for the similarity + top-k Triton kernels: config table, grid, second pass, decoding.

``similarity_topk_triton`` prepares the inputs (cosine: unit queries and a per-passage 1/||p||
factor read by the kernel, so the passages are never copied), picks blocks from a fixed table,
splits the passages so that about four programs per SM run, launches one kernel, then merges
the per-split candidates with one ``torch.topk`` over (B, splits*K_PAD) packed keys and
decodes them to (scores, indices).

Algorithms (``algo=`` or $JOINT_RAG_TRITON_ALGO): ``lazy`` (default) keeps LAZY_M candidates per
query per tile and merges them every K_PAD/LAZY_M tiles; queries whose overflow bound reaches
their k-th score are recomputed exactly with ``similarity_topk_torch`` (rare on real data: the
table picks LAZY_M so that the expected number of such queries per call is below
``FALLBACK_BUDGET``). ``merge`` is the previous algorithm (merge whole tiles), kept for timing.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from dataclasses import dataclass, replace
from types import ModuleType

import torch
from torch import Tensor

from .reference import check_inputs, similarity_topk_torch

MAX_K = 256  # K_PAD = 256 keeps the running top-k of a 16-query block in registers
_LOW_MASK = 0xFFFFFFFF
_INT_MAX = 2147483647
_MIN_KEY = -(2**63)
ALGOS = ("lazy", "merge")
ALGO_ENV = "JOINT_RAG_TRITON_ALGO"
LAZY_MS = (1, 2, 4, 8)  # candidates per query per tile the table may choose
FALLBACK_BUDGET = 0.01  # expected queries per call recomputed by the torch path (random data)
# lazy dot: BLOCK_B * K_PAD bound (running top-k + buffer, 2 * BLOCK_B * K_PAD int64, in registers;
# compile_check: no spills up to 128 x 32 on triton 3.6 and 3.9)
REG_KEYS = 4096
NARROW_FROM = 64  # lazy dot: K_PAD >= this may keep fewer than k per program (``keep_width``)
DEFAULT_SMS = 132  # H100 SXM / H200: streaming multiprocessors, for tables computed without a GPU
last_fallback_rows = 0  # queries recomputed by the torch path in the latest lazy call


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


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_mode() -> str | None:
    """How the imported triton decorated its own library (tl.cdiv, tl.sort, ...): "interpreted",
    "compiled", or None when triton is not imported yet. It is fixed at ``import triton``."""
    tl = sys.modules.get("triton.language")
    if tl is None:
        return None
    return "interpreted" if type(tl.cdiv).__name__ == "InterpretedFunction" else "compiled"


def kernels_module() -> ModuleType:
    """The kernel module, decorated for the current TRITON_INTERPRET setting.

    ``@triton.jit`` picks compiled or interpreted at decoration time, for triton's own library at
    ``import triton``. Our kernels are reloaded when TRITON_INTERPRET or JOINT_RAG_TRITON_TOPK
    changed since they were imported; triton itself cannot be, hence the error.
    """
    mode = triton_mode()
    if interpreting() and mode == "compiled":
        raise RuntimeError(
            "TRITON_INTERPRET=1 was set after triton was imported (triton's library is compiled-mode); "
            "set it before anything imports triton, e.g. at the top of the test module, or run in a fresh process"
        )
    from . import similarity_kernels as mod

    if (interpreting(), mod.default_topk_impl()) != (mod.INTERPRET, mod.TOPK_IMPL):
        mod = importlib.reload(mod)
    return mod


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
    still cross tile and split boundaries).
    """
    algo = default_algo(algo)
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


def pack_keys(scores: Tensor, indices: Tensor) -> Tensor:
    """Torch twin of the kernel's ``_pack``: fp32 scores + int64 indices -> sortable int64 keys."""
    bits = scores.float().contiguous().view(torch.int32)
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return (bits.long() << 32) | (_INT_MAX - indices)


def unpack_keys(keys: Tensor) -> tuple[Tensor, Tensor]:
    """int64 keys -> (fp32 scores, int64 indices); inverse of ``pack_keys``."""
    hi = (keys >> 32).to(torch.int32)
    bits = hi ^ ((hi >> 31) & 0x7FFFFFFF)
    return bits.view(torch.float32), _INT_MAX - (keys & _LOW_MASK)


def _inv_norms(p: Tensor) -> Tensor:
    """(N, D) -> (N,) fp32 1 / max(||p||, 1e-12), as F.normalize."""
    return torch.linalg.vector_norm(p, dim=-1, dtype=torch.float32).clamp_min(1e-12).reciprocal()


def _unit_stride(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _prepare(
    queries: Tensor, passages: Tensor, similarity: str
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """Kernel operands: same dtype, unit stride along D; cosine also gets 1/||q|| and 1/||p||
    (fp32, applied to the fp32 scores in the kernel, so 16-bit inputs are never re-rounded).

    Returns:
        q (B, D') or (B, M, D), p (N, D') or (N, M', D), scales ((B,), (N,)) fp32 or None.
    """
    if interpreting() and torch.bfloat16 in (queries.dtype, passages.dtype):
        # the interpreter (numpy) misreads bf16 tensors: compare bf16 after conversion there
        queries, passages = queries.float(), passages.float()
    q, p, scales = queries.to(passages.dtype), passages, None
    if similarity == "flat_cosine":
        q, p = q.flatten(1), p.reshape(p.shape[0], -1)  # (B, M*D), (N, M*D)
    if similarity in ("cosine", "flat_cosine"):
        scales = (_inv_norms(q), _inv_norms(p))  # (B,), (N,)
    return _unit_stride(q), _unit_stride(p), scales


def _launch(
    mod: ModuleType,
    similarity: str,
    q: Tensor,
    p: Tensor,
    scales: tuple[Tensor, Tensor] | None,
    cfg: TopkConfig,
    num_splits: int | None,
) -> tuple[Tensor, Tensor | None]:
    """One kernel launch; returns the per-split keys (B, splits * K_PAD) and, lazy, the overflow
    bound per query (B,) fp32 (max over splits), else None."""
    B, N = q.shape[0], p.shape[0]
    precision = "ieee" if p.dtype == torch.float32 else None
    splits, n_per_split = choose_splits(N, B, cfg, q.device, num_splits)
    out = torch.empty((B, splits, cfg.k_pad), dtype=torch.long, device=q.device)  # (B, S, K_PAD) keys
    bound = torch.empty((B, splits), dtype=torch.float32, device=q.device)  # (B, S) overflow bounds
    grid = (-(-B // cfg.block_b) * splits,)
    launch = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    if similarity == "maxsim":
        m, mp = q.shape[1], p.shape[1]
        mod.maxsim_topk_kernel[grid](
            q, p, out, bound, B, N, q.shape[2], m, mp, q.stride(0), q.stride(1), p.stride(0), p.stride(1),
            n_per_split, splits, DOT_PRECISION=precision, K_PAD=cfg.k_pad, LAZY_M=cfg.lazy_m, BLOCK_B=cfg.block_b,
            BLOCK_N=cfg.block_n, SUB_N=cfg.sub_n, BLOCK_D=cfg.block_d, M_PAD=_pow2(m), MP_PAD=_pow2(mp),
            GROUP_B=cfg.group_b, **launch,
        )  # fmt: skip
    else:
        mod.dot_topk_kernel[grid](
            q, p, *(scales or (bound, bound)), out, bound, B, N, q.shape[1], q.stride(0), p.stride(0),
            n_per_split, splits, HAS_SCALE=scales is not None, DOT_PRECISION=precision, K_PAD=cfg.k_pad,
            LAZY_M=cfg.lazy_m, BLOCK_B=cfg.block_b, BLOCK_N=cfg.block_n, BLOCK_D=cfg.block_d, GROUP_B=cfg.group_b, **launch,
        )  # fmt: skip
    return out.view(B, splits * cfg.k_pad), bound.amax(dim=1) if cfg.lazy_m else None


AUTOTUNE_ENV = "JOINT_RAG_TRITON_AUTOTUNE"
_TUNED: dict[tuple, TopkConfig] = {}


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


def _autotuned(key: tuple, base: TopkConfig, similarity: str, run) -> TopkConfig:
    """Fastest candidate for ``key`` by ``triton.testing.do_bench`` (CUDA only), cached per process;
    candidates that fail to compile or launch are skipped."""
    if key not in _TUNED:
        from triton.testing import do_bench

        best, best_ms = base, float("inf")
        for cfg in candidate_configs(base, similarity):
            try:
                ms = do_bench(lambda cfg=cfg: run(cfg), warmup=5, rep=20)
            except Exception:  # out of resources for this config: try the next one
                continue
            if ms < best_ms:
                best, best_ms = cfg, ms
        _TUNED[key] = best
    return _TUNED[key]


@torch.no_grad()
def similarity_topk_triton(
    queries: Tensor,
    passages: Tensor,
    k: int,
    similarity: str = "dot",
    *,
    num_splits: int | None = None,
    config: TopkConfig | None = None,
    autotune: bool | None = None,
    algo: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Fused similarity + top-k with the Triton kernels (CUDA tensors, or the interpreter).

    Args:
        queries: (B, D) for dot/cosine, (B, M, D) for flat_cosine/maxsim; fp32/fp16/bf16.
        passages: (N, D) or (N, M', D), same device.
        k: passages to keep per query (1..MAX_K); k > N returns all N.
        similarity: "dot", "cosine", "flat_cosine" or "maxsim".
        num_splits: passage splits (default: fill the GPU); config: override ``choose_config``.
        autotune: on CUDA, time ``candidate_configs`` once per shape bucket and keep the fastest
            (default: $JOINT_RAG_TRITON_AUTOTUNE=1); otherwise the fixed table.
        algo: ``lazy`` or ``merge`` (default $JOINT_RAG_TRITON_ALGO, else ``lazy``); ignored when
            ``config`` is given (its ``lazy_m`` decides).

    Returns:
        scores (B, min(k, N)) fp32 sorted descending, indices (B, min(k, N)) int64.
    """
    check_inputs(queries, passages, k, similarity)
    if queries.dtype == torch.float64 or passages.dtype == torch.float64:
        raise ValueError("the Triton kernel takes float32, float16 or bfloat16 inputs, got float64")
    if k > MAX_K:
        raise ValueError(f"k={k} > {MAX_K} is not supported by the Triton kernel; use backend='torch'")
    if not queries.is_cuda and not interpreting():
        raise RuntimeError(
            f"the Triton backend needs CUDA tensors (got {queries.device}); set TRITON_INTERPRET=1 "
            "before importing triton to run it in the CPU interpreter, or use backend='torch'"
        )
    B, N = queries.shape[0], passages.shape[0]
    k = min(k, N)
    if N == 0:
        return torch.empty((B, 0), device=queries.device), torch.empty(
            (B, 0), dtype=torch.long, device=queries.device
        )
    mod = kernels_module()
    q, p, scales = _prepare(queries, passages, similarity)
    m, mp = (q.shape[1], p.shape[1]) if similarity == "maxsim" else (1, 1)
    cfg = config or choose_config(
        similarity, B, k, p.dtype, m, mp, N=N, algo=algo, num_splits=num_splits, num_sms=device_sms(q.device)
    )
    if autotune is None:
        autotune = os.environ.get(AUTOTUNE_ENV, "0") not in ("", "0")
    if autotune and config is None and q.is_cuda and not interpreting():
        key = (similarity, p.dtype, cfg.k_pad, cfg.lazy_m, _pow2(B), q.shape[-1], m, mp, N.bit_length())
        key += (num_splits,)
        run = lambda c: _launch(mod, similarity, q, p, scales, c, num_splits)  # noqa: E731
        cfg = _autotuned(key, cfg, similarity, run)
    keys, bound = _launch(mod, similarity, q, p, scales, cfg, num_splits)  # (B, S*K_PAD), (B,)
    if keys.shape[1] < k:  # S * K_PAD < k (a narrow width with few splits): pad, the check recomputes
        keys = torch.nn.functional.pad(keys, (0, k - keys.shape[1]), value=_MIN_KEY)
    top = keys.topk(k, dim=1).values  # (B, k) second pass over splits, sorted descending
    scores, indices = unpack_keys(top)
    if bound is not None:
        scores, indices = _recompute_uncertain(queries, passages, k, similarity, scores, indices, top, bound)
    return scores, indices


def _recompute_uncertain(
    queries: Tensor,
    passages: Tensor,
    k: int,
    similarity: str,
    scores: Tensor,
    indices: Tensor,
    top: Tensor,
    bound: Tensor,
) -> tuple[Tensor, Tensor]:
    """Lazy merging's exactness check: a query is uncertain when some tile kept LAZY_M candidates
    and its next score (the overflow bound) is >= the final k-th score, or when fewer than k keys
    were found. Uncertain queries are recomputed with ``similarity_topk_torch`` (exact).

    Args:
        scores, indices: (B, k) from the kernel; top: (B, k) their keys; bound: (B,) fp32.
    """
    global last_fallback_rows
    uncertain = (bound >= scores[:, -1]) | (top[:, -1] == _MIN_KEY)  # (B,)
    rows = uncertain.nonzero().flatten()  # (R,) one host sync
    last_fallback_rows = rows.numel()
    if rows.numel():
        exact_s, exact_i = similarity_topk_torch(queries.index_select(0, rows), passages, k, similarity)
        scores, indices = scores.index_copy(0, rows, exact_s), indices.index_copy(0, rows, exact_i)
    return scores, indices
