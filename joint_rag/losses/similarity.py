"""Similarity objective: InfoNCE over gold passages against in-batch and hard negatives.

    L = - mean_b log( sum_{p in gold_b} exp(s_bp / tau) / sum_{p in all_b} exp(s_bp / tau) )

`all_b` is every candidate of every query in the batch (in-batch negatives; the query's own
non-gold candidates are its hard negatives) when `inbatch_scores` is given, else the query's
own candidates. Queries without any gold passage among their candidates are skipped.
Source: van den Oord et al. 2018 (CPC); DPR (Karpukhin et al. 2020) for in-batch negatives.
"""

from __future__ import annotations

import torch
from torch import Tensor

from joint_rag.losses.base import Objective, ObjectiveInputs


def info_nce(scores: Tensor, gold: Tensor, temperature: float) -> Tensor:
    """InfoNCE with possibly several positives per row.

    Args:
        scores: (B, P) scores.
        gold: (B, P) bool positives.
        temperature: softmax temperature tau.

    Returns:
        scalar mean loss over rows that have at least one positive (0 if none has).
    """
    logits = scores / temperature  # (B, P)
    log_denominator = torch.logsumexp(logits, dim=-1)  # (B,)
    log_numerator = torch.logsumexp(logits.masked_fill(~gold, float("-inf")), dim=-1)  # (B,)
    has_pos = gold.any(dim=-1)
    if not has_pos.any():
        return scores.sum() * 0.0
    return (log_denominator - log_numerator)[has_pos].mean()


class Similarity(Objective):
    """InfoNCE on gold passages (needs relevance labels)."""

    def __init__(self, temperature: float = 0.05, in_batch: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"Similarity.temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.in_batch = in_batch

    def forward(self, inputs: ObjectiveInputs) -> dict[str, Tensor]:
        if self.in_batch and inputs.inbatch_scores is not None:
            return {"info_nce": info_nce(inputs.inbatch_scores, inputs.inbatch_gold, self.temperature)}
        return {"info_nce": info_nce(inputs.scores, inputs.gold, self.temperature)}
