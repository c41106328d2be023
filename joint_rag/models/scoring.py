"""Similarity between query and passage retrieval vectors.

Retrieval vectors have shape (..., R, D): R vectors of dimension D per text (R = M memory
tokens, or R = 1 for mean pooling). Functions:

- ``flat_cosine`` (CLaRa): cosine of the flattened R*D vectors.
- ``maxsim`` (ColBERT): sum over query vectors of the max dot product over passage vectors.
- ``mean_dot``: dot product of the mean vectors.
- ``cosine``: cosine of the mean vectors.

``score_candidates`` scores each query against its own C candidates (the differentiable path
in training); ``score_all`` scores queries against a flat set (in-batch negatives).
``index_vectors`` turns retrieval vectors into the single vectors a flat inner-product index
stores, such that index inner product == score (not possible for maxsim: there the index
uses the mean-dot approximation for candidate generation and candidates are re-scored
exactly). Exact large-scale search is the seam for the fused kernel (joint_rag.kernels).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from joint_rag.kernels import similarity as kernel_similarity

SIMILARITIES = ("flat_cosine", "maxsim", "mean_dot", "cosine")


def check_similarity(name: str) -> str:
    if name not in SIMILARITIES:
        raise ValueError(f"unknown similarity {name!r}; choose one of {', '.join(SIMILARITIES)}")
    return name


def index_vectors(x: Tensor, similarity: str) -> Tensor:
    """(N, R, D) retrieval vectors -> (N, D') vectors whose inner product gives the score."""
    check_similarity(similarity)
    if similarity == "flat_cosine":
        return F.normalize(x.flatten(1), dim=-1)  # (N, R*D)
    if similarity == "cosine":
        return F.normalize(x.mean(1), dim=-1)  # (N, D)
    if similarity == "maxsim":
        return x.sum(1)  # (N, D): sum_q <q, mean-ish p> approximates maxsim for candidates
    return x.mean(1)  # (N, D) mean_dot


def query_index_vectors(q: Tensor, similarity: str) -> Tensor:
    """(B, R, D) query vectors -> (B, D') vectors for searching an index built by index_vectors."""
    if similarity == "maxsim":
        return q.sum(1)  # paired with passage sum: a candidate-generation proxy
    return index_vectors(q, similarity)


def _pooled(x: Tensor, similarity: str) -> tuple[Tensor, str]:
    """Map our similarity names onto the kernel's: mean-pool for cosine / mean_dot."""
    if similarity == "cosine":
        return x.mean(-2), "cosine"
    if similarity == "mean_dot":
        return x.mean(-2), "dot"
    return x, similarity


def score_all(q: Tensor, p: Tensor, similarity: str) -> Tensor:
    """Score every query against every passage (dense, differentiable; the kernel's torch path).

    Args:
        q: (B, R, D) query vectors.
        p: (N, R', D) passage vectors.

    Returns:
        (B, N) scores.
    """
    check_similarity(similarity)
    qv, name = _pooled(q, similarity)  # (B, R, D) or (B, D)
    pv, _ = _pooled(p, similarity)  # (N, R', D) or (N, D)
    return kernel_similarity(qv, pv, name)  # (B, N)


def score_candidates(q: Tensor, p: Tensor, similarity: str) -> Tensor:
    """Score each query against its own candidates.

    Args:
        q: (B, R, D) query vectors.
        p: (B, C, R', D) candidate passage vectors.

    Returns:
        (B, C) scores.
    """
    check_similarity(similarity)
    qv, name = _pooled(q, similarity)  # (B, R, D) or (B, D)
    pv, _ = _pooled(p, similarity)  # (B, C, R', D) or (B, C, D)
    return kernel_similarity(qv, pv, name)  # (B, C)
