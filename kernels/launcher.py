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
import os
import sys
from types import ModuleType

import torch
from torch import Tensor

from .configs import (  # noqa: F401  (re-exported: tests, compile_check, benchmarks)
    ALGO_ENV,
    ALGOS,
    DEFAULT_SMS,
    FALLBACK_BUDGET,
    LAZY_MS,
    MAX_K,
    NARROW_FROM,
    REG_KEYS,
    TopkConfig,
    _pow2,
    candidate_configs,
    choose_config,
    choose_lazy_m,
    choose_splits,
    default_algo,
    device_sms,
    interpreting,
    keep_width,
    num_splits_for,
)
from .keys import _MIN_KEY, pack_keys, unpack_keys  # noqa: F401  (re-exported: tests, benchmarks)
from .reference import check_inputs, check_similarity, pool, similarity_topk_torch

last_fallback_rows = 0  # queries recomputed by the torch path in the latest lazy call


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
    probe: int = 0,
) -> tuple[Tensor, Tensor | None]:
    """One kernel launch; returns the per-split keys (B, splits * K_PAD) and, lazy, the overflow
    bound per query (B,) fp32 (max over splits), else None. ``probe=1`` (dot kernels only) runs
    the timing probe: tiles scored, no top-k kept (the keys are empty, the bound is each query's
    max score); for benchmarks/similarity_topk_probe.py."""
    B, N = q.shape[0], p.shape[0]
    precision = "ieee" if p.dtype == torch.float32 else None
    splits, n_per_split = choose_splits(N, B, cfg, q.device, num_splits)
    out = torch.empty((B, splits, cfg.k_pad), dtype=torch.long, device=q.device)  # (B, S, K_PAD) keys
    bound = torch.empty((B, splits), dtype=torch.float32, device=q.device)  # (B, S) overflow bounds
    grid = (-(-B // cfg.block_b) * splits,)
    launch = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    if similarity == "maxsim":
        if probe:
            raise ValueError("the timing probe (probe=1) exists for the dot kernel only")
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
            LAZY_M=cfg.lazy_m, BLOCK_B=cfg.block_b, BLOCK_N=cfg.block_n, BLOCK_D=cfg.block_d, GROUP_B=cfg.group_b,
            PROBE=probe, **launch,
        )  # fmt: skip
    return out.view(B, splits * cfg.k_pad), bound.amax(dim=1) if cfg.lazy_m or probe else None


AUTOTUNE_ENV = "JOINT_RAG_TRITON_AUTOTUNE"
_TUNED: dict[tuple, TopkConfig] = {}


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
        queries: (B, R, D), or (B, D) for dot/cosine (mean vectors, ``reference.pool``);
            fp32/fp16/bf16.
        passages: (N, R', D), or (N, D) for dot/cosine, same device.
        k: passages to keep per query (1..MAX_K); k > N returns all N.
        similarity: "dot", "cosine", "flat_cosine" or "maxsim".
        num_splits: passage splits (default: fill the GPU); config: override ``choose_config``.
        autotune: on CUDA, time ``candidate_configs`` once per shape bucket and keep the fastest
            (default: $JOINT_RAG_TRITON_AUTOTUNE=1); otherwise the fixed table.
        algo: ``lazy``, ``merge`` or ``binmax`` (the two-pass binned-max search, ``binmax.py``;
            dot, cosine and flat_cosine); default $JOINT_RAG_TRITON_ALGO, else ``lazy``. Ignored
            when ``config`` is given (its ``bins`` and ``lazy_m`` decide).

    Returns:
        scores (B, min(k, N)) fp32 sorted descending, indices (B, min(k, N)) int64.
    """
    global last_fallback_rows
    check_similarity(similarity)
    queries, passages = pool(queries, passages, similarity)
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
        similarity, B, k, p.dtype, m, mp, N=N, algo=algo, num_splits=num_splits, num_sms=device_sms(q.device),
        D=q.shape[-1],
    )  # fmt: skip
    if cfg.bins:  # the two-pass binned-max algorithm (binmax.py)
        from .binmax import binmax_search

        scores, indices, last_fallback_rows = binmax_search(mod, q, p, scales, k, cfg, num_splits)
        return scores, indices
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
