"""Exact two-pass search with a binned-max epilogue (``algo="binmax"``; dot, cosine, flat_cosine).

Pass 1 (``dot_binmax_kernel``) scores every (query block, tile) with ``tl.dot`` as the lazy kernel
does, but keeps no top-k: the passages are cut into *spans* of ``SPAN = span_tiles * BLOCK_N``,
each span into ``BINS`` strided bins (bin j of span g holds passages ``g*SPAN + j + BINS*u``,
``u < W = SPAN / BINS``), and only each bin's maximum score is written, (B, NB) fp32 with
NB = ceil(N / SPAN) * BINS. Then ``torch.topk`` over the bin maxima picks, per query, the
``kb = min(k, NB)`` bins with the largest maxima; pass 2 (``bin_rescore_kernel``) rescores their
kb * W passages exactly (fp32) and one ``torch.topk`` over those keys gives the result.

**Why it is exact.** Let tau be a query's kb-th largest bin maximum (kb = k when NB >= k).

1. The bins are disjoint and a bin maximum is the score of a passage in that bin, so the kb
   largest bin maxima are the scores of kb *distinct* passages, all >= tau: the true k-th score
   s_k is >= tau.
2. A passage scoring > tau lies in a bin whose maximum is > tau; fewer than kb bins have a
   maximum > tau, and ``topk`` keeps all of them. So every passage scoring > tau is rescored.
3. The true top-k are passages scoring >= s_k >= tau. Those scoring > tau are rescored (2); one
   scoring exactly tau can be missed only if it sits in an unselected bin whose maximum equals
   tau, i.e. only when the (kb+1)-th bin maximum equals the kb-th (a tie at tau). Such queries are
   found by taking kb + 1 bin maxima; pass 2 is rerun for them over *every* bin whose maximum is
   >= tau (``launcher.last_fallback_rows`` counts them), so the result is exact, ties included,
   and equal scores go to the smaller index (the packed keys' order) on every row.
4. When kb = NB < k every bin is selected (all N passages are rescored). A selected bin whose
   maximum is -inf is empty (beyond N); it is selected only when every non-empty bin is.

"Exact" is in pass 1's arithmetic; pass 2 sums the same fp32 products in another order, so scores
can differ from pass 1's in the last bits (as the dense path's do), and a passage whose score is
within that rounding of the k-th may swap with it.

Memory: the bin maxima, B * NB * 4 bytes (N / W floats per query), and pass 2's keys, B * kb * W * 8
bytes: O(B*N/W + B*k*W). Batches whose bin maxima exceed ``BINMAX_CAP_BYTES`` (256 MiB) are
searched in chunks of queries, so the extra memory is at most that plus the keys. W comes from
``configs.binmax_span_tiles`` (a traffic model): 8 at N = 1e6, D = 768, k = 100, bf16.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .configs import BINMAX_CAP_BYTES, TopkConfig, _split_tiles, device_sms
from .keys import unpack_keys

BLOCK_R = 4  # pass 2: selected bins per program
last_chunks = 1  # query chunks of the latest binmax call (>1 when the bin maxima hit the cap)


def binmax_layout(N: int, cfg: TopkConfig) -> tuple[int, int, int]:
    """(span, passages per bin W, number of bins NB) of a binmax config for N passages."""
    span = cfg.block_n * cfg.span_tiles
    return span, span // cfg.bins, -(-N // span) * cfg.bins


def bin_members(bins: Tensor, N: int, cfg: TopkConfig) -> Tensor:
    """Torch twin of pass 2's indexing: (..., ) bin ids -> (..., W) passage ids (>= N past the end)."""
    span, w, _ = binmax_layout(N, cfg)
    first = (bins // cfg.bins) * span + bins % cfg.bins
    return first[..., None] + cfg.bins * torch.arange(w, device=bins.device)


def bin_maxima(mod, q: Tensor, p: Tensor, scales, cfg: TopkConfig, num_splits: int | None) -> Tensor:
    """Pass 1: (B, NB) fp32 bin maxima (-inf for empty bins)."""
    B, N = q.shape[0], p.shape[0]
    span, _, nb = binmax_layout(N, cfg)
    programs = 4 * device_sms(q.device)
    splits, spans_per_split = _split_tiles(N, B, cfg.block_b, span, programs, num_splits)
    bmax = torch.empty((B, nb), dtype=torch.float32, device=q.device)
    grid = (-(-B // cfg.block_b) * splits,)
    precision = "ieee" if p.dtype == torch.float32 else None
    mod.dot_binmax_kernel[grid](
        q, p, *(scales or (bmax, bmax)), bmax, B, N, q.shape[1], q.stride(0), p.stride(0),
        spans_per_split * span, splits, nb, HAS_SCALE=scales is not None, DOT_PRECISION=precision,
        BLOCK_B=cfg.block_b, BLOCK_N=cfg.block_n, BLOCK_D=cfg.block_d, BINS=cfg.bins,
        SPAN_TILES=cfg.span_tiles, GROUP_B=cfg.group_b, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return bmax


def rescore_block_d(w: int) -> int:
    """Pass 2's features per step for bins of ``w`` passages (BLOCK_R * w * BLOCK_D gathered values
    per step stay around 2,048)."""
    return 16 if w * BLOCK_R >= 256 else 64 if w * BLOCK_R <= 32 else 32


def rescore_bins(mod, q: Tensor, p: Tensor, scales, bins: Tensor, cfg: TopkConfig) -> Tensor:
    """Pass 2: (B, kb) int64 bin ids -> (B, kb * W) int64 packed keys of their passages."""
    B, N = q.shape[0], p.shape[0]
    span, w, _ = binmax_layout(N, cfg)
    kb = bins.shape[1]
    out = torch.empty((B, kb * w), dtype=torch.long, device=q.device)
    grid = (B, -(-kb // BLOCK_R))
    block_d = rescore_block_d(w)
    mod.bin_rescore_kernel[grid](
        q, p, *(scales or (q, q)), bins.contiguous(), out, B, N, q.shape[1], q.stride(0), p.stride(0), kb,
        HAS_SCALE=scales is not None, BINS=cfg.bins, SPAN=span, W=w, BLOCK_R=BLOCK_R, BLOCK_D=block_d,
        num_warps=4,
    )  # fmt: skip
    return out


def scales_rows(scales: tuple[Tensor, Tensor] | None, b0: int, n: int) -> tuple[Tensor, Tensor] | None:
    """The cosine factors of queries b0 .. b0 + n - 1 (all passages' factors), or None."""
    return None if scales is None else (scales[0][b0 : b0 + n], scales[1])


def query_chunk(B: int, N: int, cfg: TopkConfig, cap_bytes: int | None = None) -> int:
    """Queries per launch: all of them, or a multiple of BLOCK_B whose bin maxima fit ``cap_bytes``
    (default: this module's ``BINMAX_CAP_BYTES``, read at call time)."""
    cap_bytes = BINMAX_CAP_BYTES if cap_bytes is None else cap_bytes
    nb = binmax_layout(N, cfg)[2]
    if B * nb * 4 <= cap_bytes:
        return B
    return max(cfg.block_b, (cap_bytes // (nb * 4)) // cfg.block_b * cfg.block_b)


def binmax_search(
    mod, q: Tensor, p: Tensor, scales, k: int, cfg: TopkConfig, num_splits: int | None
) -> tuple[Tensor, Tensor, int]:
    """Both passes over (prepared) operands, in query chunks of ``query_chunk``.

    Returns:
        scores (B, k) fp32 sorted descending, indices (B, k) int64, and the number of queries
        whose bin maxima tied at tau (rescored over every bin >= tau).
    """
    global last_chunks
    B, N = q.shape[0], p.shape[0]
    if B == 0:
        return (
            q.new_empty((0, k), dtype=torch.float32),
            torch.empty((0, k), dtype=torch.long, device=q.device),
            0,
        )
    nb = binmax_layout(N, cfg)[2]
    chunk = query_chunk(B, N, cfg)
    last_chunks = -(-B // chunk)
    kb = min(k, nb)
    tops, tied_total = [], 0
    for b0 in range(0, B, chunk):
        qc, sc = q[b0 : b0 + chunk], scales_rows(scales, b0, chunk)
        bmax = bin_maxima(mod, qc, p, sc, cfg, num_splits)  # (b, NB)
        vals, bins = bmax.topk(min(kb + 1, nb), dim=1)  # (b, kb + 1): the extra one detects ties
        top = rescore_bins(mod, qc, p, sc, bins[:, :kb], cfg).topk(k, dim=1).values  # (b, k) keys
        if vals.shape[1] > kb:
            tau = vals[:, kb - 1]  # (b,)
            rows = ((vals[:, kb] == tau) & (tau > float("-inf"))).nonzero().flatten()  # one host sync
            if rows.numel():  # rescore every bin whose maximum is >= tau
                width = int((bmax[rows] >= tau[rows, None]).sum(dim=1).max())
                wide = bmax[rows].topk(width, dim=1).indices  # (r, width)
                sub = None if sc is None else (sc[0][rows], sc[1])
                keys = rescore_bins(mod, qc[rows], p, sub, wide, cfg)
                top = top.index_copy(0, rows, keys.topk(k, dim=1).values)
                tied_total += rows.numel()
        tops.append(top)
    scores, indices = unpack_keys(torch.cat(tops))
    return scores, indices, tied_total
