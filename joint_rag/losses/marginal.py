"""Usefulness objectives, marginal: RAG-Sequence and RAG-Token (Lewis et al. 2020).

The selected passages are treated as a latent variable z with prior
p_ret(z_k | x) = softmax(s_k / tau) over the K selected candidates, and the answer likelihood is
marginalised over them:

    RAG-Sequence:  L = - log sum_k p_ret(z_k | x) p(y | x, z_k)
    RAG-Token:     L = - sum_t log sum_k p_ret(z_k | x) p(y_t | x, z_k, y_<t)

Both train the retriever AND the generator: the gradient into the generator signal
(`passage_loglik` / `token_logprobs`) is kept. Everything is computed in log space
(logsumexp), so tiny likelihoods never underflow. Losses are averaged over the batch.
Source: Lewis et al. 2020, "Retrieval-Augmented Generation for Knowledge-Intensive NLP Tasks".
"""

from __future__ import annotations

import torch
from torch import Tensor

from joint_rag.losses.base import Objective, ObjectiveInputs


def rag_sequence_nll(scores: Tensor, passage_loglik: Tensor, temperature: float = 1.0) -> Tensor:
    """RAG-Sequence negative marginal log-likelihood, per query.

    Args:
        scores: (B, K) retriever scores of the selected passages.
        passage_loglik: (B, K) log p(y | x, z_k), summed over answer tokens.
        temperature: retriever softmax temperature tau.

    Returns:
        (B,) -log sum_k softmax(scores / tau)_k * exp(passage_loglik_k).
    """
    log_prior = torch.log_softmax(scores / temperature, dim=-1)  # (B, K)
    return -torch.logsumexp(log_prior + passage_loglik, dim=-1)  # (B,)


def rag_token_nll(
    scores: Tensor, token_logprobs: Tensor, token_mask: Tensor | None = None, temperature: float = 1.0
) -> Tensor:
    """RAG-Token negative marginal log-likelihood, per query (summed over answer tokens).

    Args:
        scores: (B, K) retriever scores of the selected passages.
        token_logprobs: (B, K, T) log p(y_t | x, z_k, y_<t).
        token_mask: (B, T) bool, True on answer tokens; None means every token counts.
            Masked positions may hold anything (even -inf or NaN): they get no value and no
            gradient.
        temperature: retriever softmax temperature tau.

    Returns:
        (B,) -sum_t log sum_k softmax(scores / tau)_k * exp(token_logprobs[:, k, t]).
    """
    log_prior = torch.log_softmax(scores / temperature, dim=-1)  # (B, K)
    if token_mask is not None:
        token_mask = token_mask.bool()  # (B, T)
        # fill padding with a finite value so logsumexp (and its backward) stays finite there
        token_logprobs = token_logprobs.masked_fill(~token_mask[:, None, :], 0.0)  # (B, K, T)
    per_token = torch.logsumexp(log_prior[:, :, None] + token_logprobs, dim=1)  # (B, T)
    if token_mask is not None:
        per_token = torch.where(token_mask, per_token, torch.zeros_like(per_token))  # (B, T)
    return -per_token.sum(dim=-1)  # (B,)


def selected_scores_and_loglik(inputs: ObjectiveInputs, owner: str) -> tuple[Tensor, Tensor]:
    """The (B, K) retriever scores of the selected passages and the aligned `passage_loglik`.

    Args:
        inputs: objective inputs with `selected` and `passage_loglik` set.
        owner: class name for error messages.

    Returns:
        scores (B, K) (differentiable) and passage_loglik (B, K) (as given, not detached).
    """
    if inputs.passage_loglik is None:
        raise ValueError(
            f"{owner} needs inputs.passage_loglik (B, K); the training module computes it when an "
            "objective lists 'passage_loglik' in `needs`"
        )
    if inputs.selected is None:
        raise ValueError(
            f"{owner} needs inputs.selected (B, K): passage_loglik is aligned to the top-k selection"
        )
    scores = inputs.selected_scores()  # (B, K)
    if scores.shape != inputs.passage_loglik.shape:
        raise ValueError(
            f"{owner}: passage_loglik has shape {tuple(inputs.passage_loglik.shape)} but the selected "
            f"scores have shape {tuple(scores.shape)}; passage_loglik must be (B, K), aligned to `selected`"
        )
    return scores, inputs.passage_loglik


def _check_temperature(owner: str, name: str, value: float) -> float:
    if value <= 0:
        raise ValueError(f"{owner}.{name} must be > 0, got {value}")
    return float(value)


class RAGSequence(Objective):
    """RAG-Sequence marginal likelihood over the K selected passages.

        L = - mean_b log sum_k softmax(s_b / tau)_k exp(passage_loglik_bk)

    Trains the retriever and the generator (the gradient into `passage_loglik` is kept).
    Source: Lewis et al. 2020 (RAG), eq. for p_RAG-Sequence.

    Args:
        temperature: retriever softmax temperature tau (RAG uses 1).
    """

    needs = frozenset({"passage_loglik"})

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = _check_temperature("RAGSequence", "temperature", temperature)

    def forward(self, inputs: ObjectiveInputs) -> dict[str, Tensor]:
        scores, loglik = selected_scores_and_loglik(inputs, "RAGSequence")  # (B, K), (B, K)
        return {"marginal_nll": rag_sequence_nll(scores, loglik, self.temperature).mean()}


class RAGToken(Objective):
    """RAG-Token marginal likelihood: passages are marginalised per answer token.

        L = - mean_b sum_t log sum_k softmax(s_b / tau)_k p(y_t | x, z_k, y_<t)

    Only tokens where `token_mask` is True count. Trains the retriever and the generator (the
    gradient into `token_logprobs` is kept). Source: Lewis et al. 2020 (RAG), p_RAG-Token.

    Args:
        temperature: retriever softmax temperature tau (RAG uses 1).
    """

    needs = frozenset({"token_logprobs"})

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = _check_temperature("RAGToken", "temperature", temperature)

    def forward(self, inputs: ObjectiveInputs) -> dict[str, Tensor]:
        if inputs.token_logprobs is None:
            raise ValueError(
                "RAGToken needs inputs.token_logprobs (B, K, T); the training module computes it when "
                "an objective lists 'token_logprobs' in `needs`"
            )
        if inputs.selected is None:
            raise ValueError(
                "RAGToken needs inputs.selected (B, K): token_logprobs is aligned to the selection"
            )
        scores = inputs.selected_scores()  # (B, K)
        if inputs.token_logprobs.shape[:2] != scores.shape:
            raise ValueError(
                f"RAGToken: token_logprobs has shape {tuple(inputs.token_logprobs.shape)} but the selected "
                f"scores have shape {tuple(scores.shape)}; token_logprobs must be (B, K, T)"
            )
        nll = rag_token_nll(scores, inputs.token_logprobs, inputs.token_mask, self.temperature)  # (B,)
        return {"marginal_nll": nll.mean()}
