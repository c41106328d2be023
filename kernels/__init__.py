"""Fused similarity + top-k (joint_rag.kernels): Triton kernel, torch reference/CPU path, dispatch.

Public API:

- ``similarity_topk(queries, passages, k, similarity="dot", *, backend=None, chunk_size=None)``
  -> (scores (B, k) fp32, indices (B, k) int64): Triton on CUDA, chunked torch otherwise.
- ``similarity(queries, passages, similarity="dot")`` -> (B, N) or (B, C): dense, differentiable.
- ``similarity_topk_torch`` / ``similarity_topk_triton``: the two backends, called directly.
- ``rescore(queries, passages, indices, similarity)`` -> (B, k) differentiable fp32 scores.

Similarities (the project's one vocabulary, defined in ``reference``): ``dot`` and ``cosine`` of
the mean vectors, ``flat_cosine``, ``maxsim``; queries (B, R, D) against passages (N, R', D), or
single vectors (B, D) / (N, D) for dot and cosine. Triton is imported only when its backend runs.
"""

from .dispatch import BACKENDS, rescore, resolve_backend, similarity_topk
from .launcher import similarity_topk_triton
from .reference import SIMILARITIES, check_similarity, pool, similarity, similarity_topk_torch

__all__ = [
    "BACKENDS",
    "SIMILARITIES",
    "check_similarity",
    "pool",
    "rescore",
    "resolve_backend",
    "similarity",
    "similarity_topk",
    "similarity_topk_torch",
    "similarity_topk_triton",
]
