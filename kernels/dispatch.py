"""One entry point for similarity + top-k: picks the Triton kernel or the torch path.

The selection (which passages) is not differentiable; the scores are. When an input requires
grad, the indices come from the fast path under no_grad and the scores of the selected rows are
recomputed in fp32 from the gathered rows::

    scores = similarity(queries, passages[indices], similarity)   # (B, k), per-query candidates

so gradients reach the queries and only the selected passage rows (through index_select's
backward), never a dense (B, N) score matrix.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from .reference import check_inputs, similarity_topk_torch
from .reference import similarity as dense_similarity

BACKENDS = ("auto", "torch", "triton")
BACKEND_ENV = "JOINT_RAG_SIMILARITY_BACKEND"


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(queries: Tensor, k: int, backend: str | None = None) -> str:
    """``backend`` argument, else $JOINT_RAG_SIMILARITY_BACKEND, else ``auto``: Triton for CUDA
    tensors when triton is installed and k is within the kernel's limit, torch otherwise (also
    for CPU tensors under TRITON_INTERPRET=1: the interpreter is for tests, ask for it by name)."""
    from .launcher import MAX_K

    choice = backend or os.environ.get(BACKEND_ENV) or "auto"
    if choice not in BACKENDS:
        raise ValueError(
            f"backend={choice!r} (argument or ${BACKEND_ENV}) is unknown; choose one of {BACKENDS}"
        )
    if choice != "auto":
        return choice
    return "triton" if queries.is_cuda and k <= MAX_K and _triton_available() else "torch"


def similarity_topk(
    queries: Tensor,
    passages: Tensor,
    k: int,
    similarity: str = "dot",
    *,
    backend: str | None = None,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Top-k passages per query by similarity, without materialising the (B, N) scores.

    Args:
        queries: (B, D) for ``dot``/``cosine``; (B, M, D) for ``flat_cosine``/``maxsim``.
        passages: (N, D) or (N, M', D) on the same device; fp32, fp16 or bf16 (fp32 accumulation).
        k: passages per query (>= 1); k > N returns all N.
        similarity: ``dot``, ``cosine``, ``flat_cosine`` (cosine of flattened M*D memory, CLaRa)
            or ``maxsim`` (ColBERT: sum over query vectors of the max dot over passage vectors).
        backend: ``auto`` (Triton on CUDA, torch otherwise), ``torch`` or ``triton``; default
            from $JOINT_RAG_SIMILARITY_BACKEND, else ``auto``.
        chunk_size: passages per chunk on the torch path.

    Returns:
        scores (B, min(k, N)) fp32, sorted descending; indices (B, min(k, N)) int64 into passages.
        Scores are differentiable w.r.t. queries and passages when either requires grad.
    """
    check_inputs(queries, passages, k, similarity)
    chosen = resolve_backend(queries, k, backend)
    with torch.no_grad():
        if chosen == "triton":
            from .launcher import similarity_topk_triton

            scores, indices = similarity_topk_triton(queries, passages, k, similarity)
        else:
            scores, indices = similarity_topk_torch(queries, passages, k, similarity, chunk_size=chunk_size)
    if torch.is_grad_enabled() and (queries.requires_grad or passages.requires_grad):
        scores = rescore(queries, passages, indices, similarity)
    return scores, indices


def rescore(queries: Tensor, passages: Tensor, indices: Tensor, similarity: str = "dot") -> Tensor:
    """Differentiable fp32 scores of selected passages.

    Args:
        queries: (B, D) or (B, M, D).
        passages: (N, D) or (N, M', D).
        indices: (B, k) int64 rows of passages per query.

    Returns:
        (B, k) fp32 scores, ``similarity(queries, passages[indices])`` per query.
    """
    B, k = indices.shape
    picked = passages.index_select(0, indices.reshape(-1))  # (B*k, D) or (B*k, M', D)
    picked = picked.view(B, k, *passages.shape[1:])  # (B, k, D) or (B, k, M', D)
    return dense_similarity(queries.float(), picked.float(), similarity)  # (B, k)
