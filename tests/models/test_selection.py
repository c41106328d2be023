"""Straight-through top-k: exact forward, sequential masked-softmax backward."""

from __future__ import annotations

import pytest
import torch

from joint_rag.models.selection import TopKSelector, straight_through_topk


def soft_relaxation(scores: torch.Tensor, indices: torch.Tensor, temperature: float) -> torch.Tensor:
    """The sequential masked softmax written step by step (the backward's definition)."""
    B, C = scores.shape
    rows = []
    for k in range(indices.shape[1]):
        mask = torch.zeros(B, C, dtype=torch.bool)
        for j in range(k):
            mask[torch.arange(B), indices[:, j]] = True
        rows.append(torch.softmax((scores / temperature).masked_fill(mask, float("-inf")), dim=-1))
    return torch.stack(rows, dim=1)  # (B, K, C)


@pytest.mark.parametrize("B,C,K", [(1, 5, 1), (3, 7, 3), (4, 8, 8)])
def test_forward_equals_torch_topk(B, C, K):
    torch.manual_seed(B * 10 + C)
    scores = torch.randn(B, C, dtype=torch.float64)
    weights, idx = straight_through_topk(scores, K, temperature=0.7)
    ref = torch.topk(scores, K, dim=-1)
    assert torch.equal(idx, ref.indices)
    assert torch.equal(weights, torch.nn.functional.one_hot(ref.indices, C).to(weights.dtype))
    values = torch.einsum("bkc,bc->bk", weights, scores)
    assert torch.allclose(values, ref.values)


def test_backward_is_gradient_of_sequential_softmax():
    torch.manual_seed(0)
    B, C, K, tau = 2, 6, 3, 0.5
    scores = torch.randn(B, C, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(B, K, C, dtype=torch.float64)
    weights, idx = straight_through_topk(scores, K, temperature=tau)
    (g_st,) = torch.autograd.grad((weights * upstream).sum(), scores)

    def f(s):
        return (soft_relaxation(s, idx, tau) * upstream).sum()

    s2 = scores.detach().clone().requires_grad_(True)
    (g_soft,) = torch.autograd.grad(f(s2), s2)
    assert torch.allclose(g_st, g_soft, atol=1e-12)
    # finite differences of the relaxation (indices held fixed, as the estimator does)
    eps = 1e-6
    fd = torch.zeros_like(g_soft)
    base = scores.detach()
    for b in range(B):
        for c in range(C):
            plus, minus = base.clone(), base.clone()
            plus[b, c] += eps
            minus[b, c] -= eps
            fd[b, c] = (f(plus) - f(minus)) / (2 * eps)
    assert torch.allclose(g_st, fd, atol=1e-6)
    assert g_st.abs().sum() > 0


def test_gradient_raises_score_of_useful_passage():
    """If the loss prefers candidate 2's content, its score gets a negative gradient."""
    scores = torch.tensor([[2.0, 1.0, 0.5]], requires_grad=True)
    weights, _ = straight_through_topk(scores, 1, temperature=1.0)
    values = torch.tensor([1.0, 1.0, 0.0])  # loss of reading each candidate: candidate 2 is best
    loss = torch.einsum("bkc,c->", weights, values)
    loss.backward()
    assert scores.grad[0, 2] < 0 < scores.grad[0, 0]


def test_selector_rejects_k_larger_than_c():
    with pytest.raises(ValueError, match="larger than the number of candidates"):
        TopKSelector(k=5)(torch.randn(2, 3))
    with pytest.raises(ValueError, match="K <= C"):
        straight_through_topk(torch.randn(2, 3), 4)


def test_gumbel_noise_and_temperature_schedule():
    sel = TopKSelector(k=1, temperature=2.0, temperature_end=0.5, anneal_steps=10, gumbel=True)
    sel.set_step(5)
    assert sel.temperature == pytest.approx(1.25)
    sel.set_step(100)
    assert sel.temperature == pytest.approx(0.5)
    torch.manual_seed(0)
    scores = torch.zeros(64, 4)
    sel.train()
    _, idx = sel(scores)
    assert len(set(idx.flatten().tolist())) > 1  # noise breaks ties differently per row
    sel.eval()
    _, idx = sel(scores + torch.arange(4.0))
    assert (idx == 3).all()
