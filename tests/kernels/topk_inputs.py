"""Shared inputs of the similarity + top-k tests (CPU interpreter and CUDA files)."""

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_inputs(sim: str, B: int, N: int, D: int = 24, m: int = 3, mp: int = 3, dtype=torch.float32, seed=0):
    """Random normal (tie-free) queries (B, D) / (B, M, D) and passages (N, D) / (N, M', D)."""
    g = torch.Generator().manual_seed(seed)
    if sim in ("dot", "cosine"):
        q, p = torch.randn(B, D, generator=g), torch.randn(N, D, generator=g)
    else:
        q = torch.randn(B, m, D, generator=g)
        p = torch.randn(N, m if sim == "flat_cosine" else mp, D, generator=g)
    return q.to(DEVICE, dtype), p.to(DEVICE, dtype)
