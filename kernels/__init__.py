"""Fused similarity + top-k (joint_rag.kernels): Triton kernel, torch reference/CPU path, dispatch.

Public API:

- ``similarity_topk(queries, passages, k, similarity="dot", *, backend=None, chunk_size=None)``
  -> (scores (B, k) fp32, indices (B, k) int64): Triton on CUDA, chunked torch otherwise.
- ``similarity(queries, passages, similarity="dot")`` -> (B, N) or (B, C): dense, differentiable.
- ``similarity_topk_torch`` / ``similarity_topk_triton``: the two backends, called directly.
- ``rescore(queries, passages, indices, similarity)`` -> (B, k) differentiable fp32 scores.

Similarities: ``dot``, ``cosine`` (queries (B, D), passages (N, D)); ``flat_cosine``, ``maxsim``
(queries (B, M, D), passages (N, M', D)). Triton is imported only when its backend runs.
"""

from .dispatch import BACKENDS, rescore, resolve_backend, similarity_topk
from .launcher import similarity_topk_triton
from .reference import SIMILARITIES, similarity, similarity_topk_torch

__all__ = [
    "BACKENDS",
    "SIMILARITIES",
    "rescore",
    "resolve_backend",
    "similarity",
    "similarity_topk",
    "similarity_topk_torch",
    "similarity_topk_triton",
]
