"""The project's one similarity vocabulary, its torch reference, and the CPU top-k path.

Every score in joint-rag (training scores, the index's exact search, the Triton kernel) is one
of these functions of the retrieval vectors, by the same name (the YAML ``model.similarity``):

- ``dot``: dot product of the mean vectors, ``<mean_i q_i, mean_j p_j>``.
- ``cosine``: cosine of the mean vectors.
- ``flat_cosine`` (CLaRa): cosine of the flattened R*D vectors (R == R').
- ``maxsim`` (ColBERT): ``sum_i max_j <q_i, p_j>``.

Inputs come in the multi-vector layout, queries (B, R, D) against a corpus (N, R', D) or
per-query candidates (B, C, R', D), or, for ``dot`` and ``cosine`` only, the single-vector
layout (B, D) against (N, D) or (B, C, D) (a single vector is its own mean; ``pool`` maps the
multi-vector layout onto it, a view when R = 1).

``similarity`` is the dense, differentiable scorer (it keeps the input dtype).
``similarity_topk_torch`` never holds more than a (B, chunk) block of scores: it walks the
passages in chunks, keeps a running top-k per query and merges each chunk into it.
It computes in fp32 and returns fp32 scores, like the kernel.

Selecting inside a chunk is exact and cheaper than ``topk`` over the whole chunk. The chunk's
columns are cut into groups of ``GROUP`` scores. Only the k groups with the largest maxima can
hold a top-k score (a group holding the j-th best score has a maximum at least that high, and at
most j - 1 other groups can beat it, each with a distinct higher score), and only groups whose
maximum beats the running k-th score can change the running top-k. So a chunk costs one
elementwise-max pass, a top-k over C / GROUP group maxima and a top-k over the gathered groups
plus the running k; deep into a corpus few groups pass (faiss's flat search rejects scores
below the current k-th in its heap for the same reason).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SIMILARITIES = ("dot", "cosine", "flat_cosine", "maxsim")
SINGLE_VECTOR = ("dot", "cosine")
MULTI_VECTOR = ("flat_cosine", "maxsim")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)  # float64: references

# Scores held per chunk (B * chunk * M * M' fp32 values). 2**21 floats = 8 MiB: fits the L2/L3
# of a CPU core pair; measured in benchmarks/similarity_topk.py (docs/kernels.md).
DEFAULT_CHUNK_ELEMENTS = 2**21
MIN_CHUNK = 256
# Columns per group in the group-max selection (see the module docstring).
GROUP = 16
# Passages per matmul inside a chunk: (B, 1024) outputs stay cache-resident and MKL runs at its
# best rate there (measured ~99 vs ~84 GFLOP/s for 8192 at B=256, docs/kernels.md).
SUB_BLOCK = 1024
# Up to this many queries the chunk is scored as P @ q.T (MKL's few-column gemm), a single query
# padded to two rows: MKL's sgemv (B = 1) and q @ P.T both ran 1.3-2x slower there (docs/kernels.md).
SMALL_B = 4


RENAMED = {"mean_dot": "dot"}  # names of earlier releases


def check_similarity(name: str) -> str:
    """``name`` if it is one of SIMILARITIES, else a ValueError listing them."""
    if name not in SIMILARITIES:
        hint = f" ({name!r} is now {RENAMED[name]!r})" if name in RENAMED else ""
        raise ValueError(f"similarity={name!r} is unknown{hint}; choose one of {', '.join(SIMILARITIES)}")
    return name


def _mean_vector(x: Tensor) -> Tensor:
    """(..., R, D) -> (..., D) mean over R (a view when R = 1)."""
    return x.squeeze(-2) if x.shape[-2] == 1 else x.mean(dim=-2)


def pool(queries: Tensor, passages: Tensor, similarity: str) -> tuple[Tensor, Tensor]:
    """Map ``dot``/``cosine`` on the multi-vector layout onto the single-vector one.

    Args:
        queries: (B, R, D) or, single-vector, (B, D).
        passages: (N, R', D) / (B, C, R', D), or single-vector (N, D) / (B, C, D).

    Returns:
        (B, D) and (N, D) / (B, C, D) mean vectors for ``dot``/``cosine`` with 3-D queries;
        the inputs unchanged otherwise.
    """
    if similarity in SINGLE_VECTOR and queries.dim() == 3:
        if passages.dim() not in (3, 4):
            raise ValueError(
                f"similarity={similarity!r} with multi-vector queries {tuple(queries.shape)} takes passages "
                f"(N, R', D) or (B, C, R', D), got {tuple(passages.shape)}"
            )
        return _mean_vector(queries), _mean_vector(passages)
    return queries, passages


def check_inputs(
    queries: Tensor, passages: Tensor, k: int | None, similarity: str, *, per_query: bool = False
) -> None:
    """Raise ValueError naming the argument that is wrong and what shape or value is expected.

    Takes the single-vector layout for dot/cosine (after ``pool``) and the multi-vector one for
    flat_cosine/maxsim.

    Args:
        queries: (B, D) for dot/cosine, (B, M, D) for flat_cosine/maxsim.
        passages: (N, D) / (N, M', D); with ``per_query`` (B, C, D) / (B, C, M', D).
        k: number of passages to keep per query (None: not a top-k call).
        similarity: one of SIMILARITIES.
        per_query: passages carry a leading batch dimension (each query has its own candidates).
    """
    check_similarity(similarity)
    q_dims = 2 if similarity in SINGLE_VECTOR else 3
    p_dims = q_dims + int(per_query)
    kind = "single-vector (B, D)" if q_dims == 2 else "multi-vector (B, M, D)"
    if queries.dim() != q_dims:
        raise ValueError(
            f"similarity={similarity!r} takes {kind} queries, got queries of shape {tuple(queries.shape)}; "
            f"use {'flat_cosine/maxsim' if q_dims == 2 else 'dot/cosine'} for the other layout"
        )
    if passages.dim() != p_dims:
        raise ValueError(
            f"similarity={similarity!r} with queries {tuple(queries.shape)} takes passages with {p_dims} dims, "
            f"got {tuple(passages.shape)}"
        )
    if queries.shape[-1] != passages.shape[-1]:
        raise ValueError(f"queries dim D={queries.shape[-1]} != passages dim D={passages.shape[-1]}")
    if similarity == "flat_cosine" and queries.shape[-2] != passages.shape[-2]:
        raise ValueError(
            f"flat_cosine needs the same number of memory vectors M on both sides, "
            f"got queries M={queries.shape[-2]} and passages M={passages.shape[-2]}"
        )
    if per_query and passages.shape[0] != queries.shape[0]:
        raise ValueError(f"per-query passages need batch {queries.shape[0]}, got {passages.shape[0]}")
    for name, t in (("queries", queries), ("passages", passages)):
        if t.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{name} dtype {t.dtype} is not supported; use float32, float16 or bfloat16")
    if queries.device != passages.device:
        raise ValueError(f"queries on {queries.device} and passages on {passages.device}: move them together")
    if k is not None and k < 1:
        raise ValueError(f"k={k} must be >= 1")


def similarity(queries: Tensor, passages: Tensor, similarity: str = "dot") -> Tensor:
    """Dense, differentiable scores (keeps the input dtype).

    Args:
        queries: (B, R, D), or (B, D) for dot/cosine.
        passages: a shared corpus, (N, R', D) / (N, D), or per-query candidates,
            (B, C, R', D) / (B, C, D) (one more dim than queries).
        similarity: one of SIMILARITIES.

    Returns:
        (B, N) scores for a shared corpus, (B, C) for per-query candidates.
    """
    check_similarity(similarity)
    queries, passages = pool(queries, passages, similarity)
    per_query = passages.dim() == queries.dim() + 1
    check_inputs(queries, passages, None, similarity, per_query=per_query)
    if similarity == "maxsim":
        if per_query:
            tok = torch.einsum("bid,bcjd->bcij", queries, passages)  # (B, C, M, M')
        else:
            tok = torch.einsum("bid,njd->bnij", queries, passages)  # (B, N, M, M')
        return tok.amax(dim=-1).sum(dim=-1)  # (B, N) or (B, C)
    if similarity == "flat_cosine":
        queries = queries.flatten(-2)  # (B, M*D)
        passages = passages.flatten(-2)  # (N, M*D) or (B, C, M*D)
    if similarity in ("cosine", "flat_cosine"):
        queries = F.normalize(queries, dim=-1)
        passages = F.normalize(passages, dim=-1)
    if per_query:
        return torch.einsum("bd,bcd->bc", queries, passages)  # (B, C)
    return queries @ passages.T  # (B, N)


def default_chunk(B: int, tokens_per_pair: int = 1, elements: int = DEFAULT_CHUNK_ELEMENTS) -> int:
    """Passages per chunk so that one chunk of scores holds about ``elements`` fp32 values."""
    return max(MIN_CHUNK, elements // max(1, B * tokens_per_pair))


def topk_chunk(B: int, k: int, tokens_per_pair: int = 1) -> int:
    """Default passages per chunk of ``similarity_topk_torch``: ``default_chunk``, but at least
    4 * k * GROUP so that the group-max filter applies (memory stays O(B * k) there: 6400
    passages, a 105 MB buffer, at B = 4096, k = 100)."""
    return max(default_chunk(B, tokens_per_pair), 4 * k * GROUP)


def _chunk_scores(q: Tensor, p: Tensor, similarity: str, out: Tensor) -> Tensor:
    """fp32 scores of prepared fp32 queries against one chunk of raw passages, written into ``out``.

    Args:
        q: (B, D) (dot), (B, D') unit rows (cosine, flat_cosine with D' = M*D) or (B, M, D) (maxsim).
        p: (C, D) or (C, M', D) passages in their own dtype.
        out: (B, >= C) fp32 buffer, row-contiguous; columns [0, C) are written.

    Returns:
        (B, C) fp32 scores, a view of ``out``.
    """
    C = p.shape[0]
    s = out[:, :C]  # (B, C)
    if similarity == "maxsim":
        B, M, D = q.shape
        Mp = p.shape[1]
        tok = p.float().reshape(C * Mp, D) @ q.reshape(B * M, D).T  # (C*M', B*M)
        s.copy_(tok.view(C, Mp, B, M).amax(dim=1).sum(dim=-1).T)
        return s
    p = p.reshape(C, -1)  # (C, D')
    B = q.shape[0]
    # B <= SMALL_B: (SUB_BLOCK, B') = P @ q.T, transposed into the buffer, a single query padded
    # to B' = 2 rows; otherwise (B, SUB_BLOCK) blocks go straight into the strided buffer
    qq = torch.cat([q, torch.zeros_like(q)]) if B == 1 else q  # (B', D')
    for s0 in range(0, C, SUB_BLOCK):
        block = p[s0 : s0 + SUB_BLOCK].float()  # (<= SUB_BLOCK, D')
        out_block = s[:, s0 : s0 + block.shape[0]]  # (B, <= SUB_BLOCK)
        if B <= SMALL_B:
            out_block.copy_((block @ qq.T)[:, :B].T)
        else:
            torch.mm(q, block.T, out=out_block)
    if similarity != "dot":
        inv_norm = torch.linalg.vector_norm(p.float(), dim=-1).clamp_min(1e-12).reciprocal()  # (C,)
        s.mul_(inv_norm[None, :])
    return s


def _chunk_candidates(s: Tensor, k: int, theta: Tensor | None) -> tuple[Tensor, Tensor]:
    """Scores and column ids that contain every chunk score that can enter the running top-k.

    Group-max filter (exact, see the module docstring). Group g holds the columns g, g + G,
    g + 2G, ... (G groups of ``GROUP``), so the group maxima are an elementwise max over GROUP
    contiguous slabs. With ``theta`` only groups whose maximum beats it can contribute, so
    fewer than k groups are gathered once the running top-k is good (most chunks of a large
    corpus).

    Args:
        s: (B, C) chunk scores, row-contiguous view of a buffer with at least ``ceil(C/GROUP)*GROUP``
            columns (the padding columns are overwritten with -inf).
        k: scores to keep per row.
        theta: (B,) the running k-th score per row, or None while fewer than k are held.

    Returns:
        candidate scores (B, k'') and their column ids (B, k''); k'' may be 0 when no score of the
        chunk beats ``theta``.
    """
    B, C = s.shape
    G = -(-C // GROUP)
    if k * GROUP * 2 > C:  # too few groups to save work: the whole chunk is the candidate set
        return s, torch.arange(C, device=s.device).expand(B, C)
    padded = s.as_strided((B, G * GROUP), s.stride())  # (B, GROUP*G) view into the buffer
    padded[:, C:] = float("-inf")
    group_max = padded.view(B, GROUP, G).amax(dim=1)  # (B, G)
    kk = k
    if theta is not None:
        kk = min(k, int((group_max > theta[:, None]).sum(dim=1).max()))
    _, groups = group_max.topk(kk, dim=1)  # (B, kk)
    cols = (groups[:, :, None] + G * torch.arange(GROUP, device=s.device)).flatten(1)  # (B, kk*GROUP)
    return padded.gather(1, cols), cols


def prepare_queries(queries: Tensor, similarity: str) -> Tensor:
    """fp32 queries ready for ``_chunk_scores``: unit rows for cosine and flat_cosine.

    Args:
        queries: (B, D) or (B, M, D).

    Returns:
        (B, D), (B, M*D) for flat_cosine, or (B, M, D) for maxsim; fp32.
    """
    q = queries.float()
    if similarity == "flat_cosine":
        q = q.flatten(1)  # (B, M*D)
    if similarity in ("cosine", "flat_cosine"):
        q = F.normalize(q, dim=-1)
    return q


@torch.no_grad()
def similarity_topk_torch(
    queries: Tensor,
    passages: Tensor,
    k: int,
    similarity: str = "dot",
    *,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Top-k passages per query without the (B, N) score matrix.

    Walks passages in chunks of ``chunk_size`` rows: scores (B, chunk) in fp32, takes the chunk's
    top-k and merges it into the running top-k, so memory is O(B*k + B*chunk).

    Args:
        queries: (B, R, D), or (B, D) for dot/cosine.
        passages: (N, R', D), or (N, D) for dot/cosine.
        k: passages to keep per query; k > N returns all N.
        similarity: one of SIMILARITIES.
        chunk_size: passages per chunk (default: ``topk_chunk``).

    Returns:
        scores (B, min(k, N)) fp32 sorted descending, indices (B, min(k, N)) int64 into passages.
    """
    check_similarity(similarity)
    queries, passages = pool(queries, passages, similarity)
    check_inputs(queries, passages, k, similarity)
    B, N = queries.shape[0], passages.shape[0]
    k = min(k, N)
    tokens = queries.shape[1] * passages.shape[1] if similarity == "maxsim" else 1
    chunk = min(chunk_size or topk_chunk(B, k, tokens), N)
    q = prepare_queries(queries, similarity)
    buf = torch.empty(B, -(-chunk // GROUP) * GROUP, device=queries.device)  # (B, chunk) scores
    top_s = torch.empty((B, 0), device=queries.device)  # (B, k) running scores
    top_i = torch.empty((B, 0), dtype=torch.long, device=queries.device)  # (B, k) running indices
    for start in range(0, N, chunk):
        s = _chunk_scores(q, passages[start : start + chunk], similarity, buf)  # (B, C)
        cand_s, cand_i = _chunk_candidates(s, k, top_s[:, -1] if top_s.shape[1] == k else None)  # (B, k'')
        if cand_s.shape[1] == 0:
            continue
        both_s = torch.cat([top_s, cand_s], dim=1)  # (B, k + k'')
        both_i = torch.cat([top_i, cand_i + start], dim=1)  # (B, k + k'')
        top_s, pos = both_s.topk(min(k, both_s.shape[1]), dim=1)  # (B, k)
        top_i = both_i.gather(1, pos)  # (B, k)
    return top_s, top_i
