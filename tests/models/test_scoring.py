"""Scoring goes through the kernel dispatch and agrees with the plain formulas; index vectors
reproduce the scores under an inner product (so the flat index ranks like the scorer)."""

from __future__ import annotations

import pytest
import torch

from joint_rag.models import scoring


@pytest.mark.parametrize("sim", scoring.SIMILARITIES)
def test_scores_match_reference(sim):
    torch.manual_seed(0)
    q, p, pc = torch.randn(3, 2, 8), torch.randn(5, 2, 8), torch.randn(3, 4, 2, 8)
    if sim == "maxsim":
        ref_all = torch.einsum("brd,nsd->bnrs", q, p).max(-1).values.sum(-1)
        ref_cand = torch.einsum("brd,bcsd->bcrs", q, pc).max(-1).values.sum(-1)
    else:
        qv = scoring.query_index_vectors(q, sim)
        ref_all = qv @ scoring.index_vectors(p, sim).T
        ref_cand = torch.einsum("bd,bcd->bc", qv, scoring.index_vectors(pc.flatten(0, 1), sim).view(3, 4, -1))
    assert torch.allclose(scoring.score_all(q, p, sim), ref_all, atol=1e-5)
    assert torch.allclose(scoring.score_candidates(q, pc, sim), ref_cand, atol=1e-5)


def test_flat_cosine_is_cosine_of_flattened_memory():
    torch.manual_seed(1)
    q, p = torch.randn(2, 3, 4), torch.randn(6, 3, 4)
    ref = torch.nn.functional.cosine_similarity(q.flatten(1)[:, None], p.flatten(1)[None], dim=-1)
    assert torch.allclose(scoring.score_all(q, p, "flat_cosine"), ref, atol=1e-6)


def test_unknown_similarity():
    with pytest.raises(ValueError, match="unknown similarity 'dotty'"):
        scoring.score_all(torch.randn(1, 1, 2), torch.randn(1, 1, 2), "dotty")
