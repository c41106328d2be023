"""Uniformity: spread the retrieval vectors over the unit sphere.

    L = log mean_{i != j} exp(-t ||x_i - x_j||^2),    x = v / ||v||

over the batch's unique candidate passages (``passage_vectors``), its queries
(``query_vectors``), or each of the two (``sides="both"``: the mean of the two terms; queries and
passages are different populations and are not mixed). A multi-vector representation (R vectors
of D per text: memory tokens) is flattened to one R*D vector first, as flat-cosine similarity
reads it. The term is lowest (about -4t / (1 + 1/(n-1)) for n well-spread points in high
dimension) when the vectors are spread out, and 0 when they have all collapsed onto one point,
so added to a similarity objective it counters collapse (the memory rows of the LIMIT study end
with their documents at mean pairwise cosine 0.99, docs/results/capacity.md). Label-free.
Source: Wang and Isola 2020, "Understanding Contrastive Representation Learning through
Alignment and Uniformity on the Hypersphere" (t = 2 there).

Args:
    t: the kernel's sharpness (> 0).
    sides: "passages", "queries" or "both".
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from joint_rag.losses.base import Objective, ObjectiveInputs

SIDES = ("passages", "queries", "both")


def uniformity(vectors: Tensor, t: float = 2.0) -> Tensor:
    """The uniformity term of (n, ...) vectors (flattened per row, L2-normalised); 0 for n < 2."""
    x = torch.nn.functional.normalize(vectors.flatten(1).float(), dim=-1)
    n = x.shape[0]
    if n < 2:
        return x.sum() * 0.0
    sq = torch.cdist(x, x).pow(2)  # (n, n) squared distances
    off = ~torch.eye(n, dtype=torch.bool, device=x.device)
    return torch.logsumexp(-t * sq[off], dim=0) - math.log(n * (n - 1))


class Uniformity(Objective):
    """Wang and Isola's uniformity term on the retrieval vectors (see the module doc)."""

    needs = frozenset({"retrieval_vectors"})

    def __init__(self, t: float = 2.0, sides: str = "passages") -> None:
        super().__init__()
        if not (isinstance(t, (int, float)) and t > 0 and math.isfinite(t)):
            raise ValueError(f"Uniformity: t must be a positive number, got {t!r}")
        if sides not in SIDES:
            raise ValueError(f"Uniformity: sides must be one of {SIDES}, got {sides!r}")
        self.t = float(t)
        self.sides = sides

    def forward(self, inputs: ObjectiveInputs) -> dict[str, Tensor]:
        if inputs.passage_vectors is None or inputs.query_vectors is None:
            raise ValueError("Uniformity needs the retrieval vectors (ObjectiveInputs.passage_vectors)")
        terms = []
        if self.sides in ("passages", "both"):
            terms.append(uniformity(inputs.passage_vectors, self.t))
        if self.sides in ("queries", "both"):
            terms.append(uniformity(inputs.query_vectors, self.t))
        return {"uniformity": torch.stack(terms).mean()}
