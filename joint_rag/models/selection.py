"""Differentiable top-k selection (straight-through, as in CLaRa).

Forward: the exact hard top-K of the scores, as K one-hot rows over the C candidates.
Backward: the gradient of the *sequential masked softmax* relaxation

    p_1 = softmax(s / tau),  p_k = softmax(mask_{k}(s) / tau)   (mask_k sets the k-1
    previously selected hard indices to -inf)

via the straight-through estimator  w_k = onehot_k + p_k - stopgrad(p_k).  Optional Gumbel
noise is added to the scores before both (training only).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from joint_rag.models.saving import init_args


def sample_gumbel(shape: torch.Size, like: Tensor, eps: float = 1e-10) -> Tensor:
    u = torch.rand(shape, device=like.device, dtype=like.dtype)
    return -torch.log(-torch.log(u + eps) + eps)


class _StraightThroughTopK(torch.autograd.Function):
    """Forward: exact one-hot rows of the hard top-k. Backward: vector-Jacobian product of the
    sequential masked softmax  p_k = softmax(mask_k(s) / tau),  i.e.

        dL/ds = sum_k  p_k * (u_k - <u_k, p_k>) / tau      (u_k = dL/dw_k, masked p = 0)
    """

    @staticmethod
    def forward(ctx, scores: Tensor, k: int, temperature: float):
        B, C = scores.shape
        indices = torch.topk(scores, k, dim=-1).indices  # (B, K)
        hard = torch.nn.functional.one_hot(indices, C).to(scores.dtype)  # (B, K, C)
        taken_before = (torch.cumsum(hard, dim=1) - hard).bool()  # (B, K, C) chosen at an earlier step
        masked = (scores / temperature).unsqueeze(1).masked_fill(taken_before, float("-inf"))  # (B, K, C)
        soft = torch.softmax(masked, dim=-1)  # (B, K, C)
        ctx.save_for_backward(soft)
        ctx.temperature = temperature
        ctx.mark_non_differentiable(indices)
        return hard, indices

    @staticmethod
    def backward(ctx, grad_weights: Tensor, grad_indices: Tensor | None):
        (soft,) = ctx.saved_tensors  # (B, K, C)
        inner = (grad_weights * soft).sum(-1, keepdim=True)  # (B, K, 1)
        grad_scores = (soft * (grad_weights - inner)).sum(1) / ctx.temperature  # (B, C)
        return grad_scores, None, None


def straight_through_topk(scores: Tensor, k: int, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Hard top-k forward, sequential masked-softmax backward.

    Args:
        scores: (B, C) scores (noise, if any, already added).
        k: number to select (K <= C).
        temperature: softmax temperature of the backward relaxation.

    Returns:
        weights: (B, K, C) selection weights; forward values are exactly the one-hot rows of
            the hard top-k (in descending score order); their gradient is the relaxation's.
        indices: (B, K) selected candidate indices, equal to ``torch.topk(scores, k).indices``.
    """
    C = scores.shape[-1]
    if not 1 <= k <= C:
        raise ValueError(f"top-k needs 1 <= K <= C, got K={k}, C={C}")
    return _StraightThroughTopK.apply(scores, k, temperature)


class TopKSelector(nn.Module):
    """Configurable straight-through top-k.

    Args:
        k: passages selected per query (K).
        temperature: temperature of the backward softmax relaxation.
        gumbel: add Gumbel(0, 1) * gumbel_scale noise to the scores during training.
        gumbel_scale: noise scale.
        temperature_end: if set, the temperature anneals linearly from ``temperature`` to this
            over ``anneal_steps`` (call ``set_step``).
        anneal_steps: length of the schedule.
    """

    def __init__(
        self,
        k: int = 2,
        temperature: float = 1.0,
        gumbel: bool = False,
        gumbel_scale: float = 1.0,
        temperature_end: float | None = None,
        anneal_steps: int = 1000,
    ) -> None:
        super().__init__()
        self.init_args = init_args(TopKSelector, locals())
        if k < 1:
            raise ValueError(f"TopKSelector: k (model.selector.init_args.k) must be >= 1, got {k}")
        if temperature <= 0 or (temperature_end is not None and temperature_end <= 0):
            raise ValueError("selection temperatures must be > 0")
        self.k = k
        self.temperature_start = temperature
        self.temperature_end = temperature_end
        self.anneal_steps = max(1, anneal_steps)
        self.gumbel = gumbel
        self.gumbel_scale = gumbel_scale
        self.step = 0

    def set_step(self, step: int) -> None:
        self.step = step

    @property
    def temperature(self) -> float:
        if self.temperature_end is None:
            return self.temperature_start
        frac = min(1.0, self.step / self.anneal_steps)
        return self.temperature_start + frac * (self.temperature_end - self.temperature_start)

    def forward(self, scores: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C) scores -> (weights (B, K, C), indices (B, K))."""
        if self.k > scores.shape[-1]:
            raise ValueError(
                f"selection.k={self.k} is larger than the number of candidates C={scores.shape[-1]}: "
                "set model.num_candidates >= selection k"
            )
        if self.training and self.gumbel:
            scores = scores + self.gumbel_scale * sample_gumbel(scores.shape, scores)
        return straight_through_topk(scores, self.k, self.temperature)
