"""Similarity objective: InfoNCE over gold passages against in-batch and hard negatives.

    L = - mean_b log( sum_{p in gold_b} exp(s_bp / tau) / sum_{p in all_b} exp(s_bp / tau) )

`all_b` is every candidate of every query in the batch (in-batch negatives; the query's own
non-gold candidates are its hard negatives) when `inbatch_scores` is given, else the query's
own candidates. Queries without any gold passage among their candidates are skipped.
Source: van den Oord et al. 2018 (CPC); DPR (Karpukhin et al. 2020) for in-batch negatives.

The positives need not be the gold labels. The label-free baselines a researcher would try
first (``positives``):

* ``"gold"``: the relevance labels (supervised; the upper bound).
* ``"reference_top1"``: self-training: the candidate the off-the-shelf retriever ranks first
  (``reference_scores``, the module's frozen snapshot of the retriever as training starts).
* ``"answer_match"``: distant supervision (DPR): the candidate the off-the-shelf retriever
  ranks highest among those that contain an answer string; a query with none is skipped.
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


POSITIVES = ("gold", "reference_top1", "answer_match")


def first_by(reference: Tensor, allowed: Tensor) -> Tensor:
    """(B, C) bool one-hot of the best-``reference`` candidate among ``allowed`` ((B, C) bool);
    all False in a row where nothing is allowed."""
    masked = reference.masked_fill(~allowed, float("-inf"))
    best = masked.argmax(dim=-1, keepdim=True)  # (B, 1)
    onehot = torch.zeros_like(allowed).scatter(1, best, True)
    return onehot & allowed.any(dim=-1, keepdim=True)


def to_inbatch(mask: Tensor, cand_cols: Tensor, num_cols: int) -> Tensor:
    """A (B, C) candidate mask as a (B, U) mask over the in-batch columns."""
    out = torch.zeros(mask.shape[0], num_cols, dtype=torch.long, device=mask.device)
    return out.scatter_add(1, cand_cols, mask.long()) > 0  # a column listed twice stays True


class Similarity(Objective):
    """InfoNCE on positive passages: the gold ones (relevance labels), or a label-free pseudo
    label (``positives``, see the module docstring)."""

    def __init__(self, temperature: float = 0.05, in_batch: bool = True, positives: str = "gold") -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"Similarity.temperature must be > 0, got {temperature}")
        if positives not in POSITIVES:
            raise ValueError(f"Similarity.positives must be one of {list(POSITIVES)}, got {positives!r}")
        self.temperature = temperature
        self.in_batch = in_batch
        self.positives = positives
        self.reads_labels = positives == "gold"
        self.needs = frozenset(
            {
                "gold": set(),
                "reference_top1": {"reference_scores"},
                "answer_match": {"reference_scores", "answer_match"},
            }[positives]
        )

    def positive_mask(self, inputs: ObjectiveInputs) -> Tensor:
        """(B, C) bool positives among each query's candidates."""
        if self.positives == "gold":
            return inputs.gold.bool()
        if inputs.reference_scores is None:
            raise ValueError(f"Similarity(positives={self.positives!r}) needs inputs.reference_scores")
        if self.positives == "reference_top1":
            return first_by(inputs.reference_scores, torch.ones_like(inputs.gold, dtype=torch.bool))
        if inputs.answer_match is None:
            raise ValueError("Similarity(positives='answer_match') needs inputs.answer_match")
        return first_by(inputs.reference_scores, inputs.answer_match.bool())

    def forward(self, inputs: ObjectiveInputs) -> dict[str, Tensor]:
        in_batch = self.in_batch and inputs.inbatch_scores is not None
        if self.positives == "gold":
            if in_batch:
                return {"info_nce": info_nce(inputs.inbatch_scores, inputs.inbatch_gold, self.temperature)}
            return {"info_nce": info_nce(inputs.scores, inputs.gold, self.temperature)}
        positive = self.positive_mask(inputs)
        if in_batch:
            if inputs.cand_cols is None:
                raise ValueError("Similarity with in-batch pseudo positives needs inputs.cand_cols")
            cols = to_inbatch(positive, inputs.cand_cols, inputs.inbatch_scores.shape[-1])
            return {"info_nce": info_nce(inputs.inbatch_scores, cols, self.temperature)}
        return {"info_nce": info_nce(inputs.scores, positive, self.temperature)}
